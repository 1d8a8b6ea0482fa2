"""CLUENER2020 submissions: the official format, its scoring rules, and the round trip through
``regner predict format=cluener`` on the CLUENER dev texts (skipped without ../shared/data)."""

import json

import pytest

from regner.data.errors import DataError
from regner.inference.submission import cluener_record, read_lines, score_cluener

from .conftest import shared
from .test_cli import regner

TEXT = "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。"


def test_a_record_uses_inclusive_ends_and_groups_mentions_by_type():
    entities = [{"start": 9, "end": 12, "type": "name", "text": "叶老桂"},
                {"start": 0, "end": 4, "type": "company", "text": "浙商银行"},
                {"start": 20, "end": 23, "type": "name", "text": "叶老桂"}]
    assert cluener_record(7, entities) == {"id": 7, "label": {"company": {"浙商银行": [[0, 3]]},
                                                              "name": {"叶老桂": [[9, 11], [20, 22]]}}}
    assert cluener_record(0, []) == {"id": 0, "label": {}}


def test_scoring_counts_exact_spans_by_hand():
    gold = [{"text": TEXT, "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[9, 11]]}}},
            {"text": "北京欢迎你", "label": {"address": {"北京": [[0, 1]]}}}]
    predicted = [{"id": 0, "label": {"company": {"浙商银行": [[0, 3]]}, "position": {"博士": [[12, 13]]}}},
                 {"id": 1, "label": {"address": {"北京": [[0, 1]]}}}]
    score = score_cluener(predicted, gold)  # 2 of 3 predicted right, 2 of 3 gold found
    assert (score["correct"], score["predicted"], score["gold"]) == (2, 3, 3)
    assert score["precision"] == pytest.approx(2 / 3) and score["f1"] == pytest.approx(2 / 3)
    wrong_type = [{"id": 0, "label": {"organization": {"浙商银行": [[0, 3]]}}}, {"id": 1, "label": {}}]
    assert score_cluener(wrong_type, gold)["correct"] == 0


@pytest.mark.parametrize("predicted, message", [
    ([{"id": 0, "label": {}}], "exactly one line per gold id"),
    ([{"id": 0, "label": {"name": {"叶老": [[9, 11]]}}}, {"id": 1, "label": {}}], "reads '叶老桂'"),
    ([{"id": 0, "label": {"name": {"叶老桂": [9, 11]}}}, {"id": 1, "label": {}}], "is not \\[start, end\\]"),
])
def test_malformed_submissions_are_named(predicted, message):
    gold = [{"text": TEXT, "label": {}}, {"text": "北京", "label": {}}]
    with pytest.raises(DataError, match=message):
        score_cluener(predicted, gold)


@pytest.mark.slow  # ~95 s on the real CLUENER dev set
def test_predicting_cluener_dev_as_a_submission_scores_regners_own_dev_f1(tmp_path):
    dev = shared("cluener", "dev.json")  # skips when the shared data is absent
    run_dir = tmp_path / "run"
    train = regner("train", "data=cluener", f"data.root={dev.parents[1]}", "data.max_train_samples=1500",
                   "trainer.max_epochs=3", "trainer.batch_size=16", "trainer.progress=false", "trainer.loggers=[]",
                   "encoder.lr=2e-3", "encoder.hidden_size=64", "encoder.intermediate_size=256", "head.head_size=32",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.05 < metrics["dev"]["f1"] < 1  # right and wrong entities, so the comparison means something
    output = tmp_path / "cluener_predict.json"
    result = regner("predict", f"ckpt={run_dir}", f"input={dev}", f"output={output}", "format=cluener", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    submission = read_lines(output)
    assert [r["id"] for r in submission] == list(range(len(read_lines(dev))))
    assert set(submission[0]) == {"id", "label"}
    score = score_cluener(submission, read_lines(dev))
    assert score["f1"] == pytest.approx(metrics["dev"]["f1"], abs=1e-12)
    assert score["precision"] == pytest.approx(metrics["dev"]["precision"], abs=1e-12)


def test_cluener_test_file_ids_are_kept(tmp_path, trained_run):
    source = tmp_path / "test.json"
    source.write_text("\n".join(json.dumps({"id": i + 100, "text": t}, ensure_ascii=False)
                                for i, t in enumerate([TEXT, "北京欢迎你"])) + "\n", encoding="utf-8")
    result = regner("predict", f"ckpt={trained_run}", f"input={source}", "format=cluener", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [100, 101]
    bad = regner("predict", f"ckpt={trained_run}", f"input={source}", "format=xml", cwd=tmp_path)
    assert bad.returncode == 2 and "format='xml'" in bad.stderr
