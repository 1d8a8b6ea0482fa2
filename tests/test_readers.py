import json

import pytest

from regner.data import DataError, Entity
from regner.data.loading import carve_dev, load_splits
from regner.data.readers import read_cluener, read_conll, read_jsonl, token_text

from .conftest import shared


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_cluener_inclusive_ends(tmp_path):
    line = {"text": "浙商银行叶老桂博士", "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}}}
    path = write(tmp_path / "train.json", json.dumps(line, ensure_ascii=False) + "\n")
    (example,) = read_cluener(path)
    assert example.entities == [Entity(0, 4, "company"), Entity(4, 7, "name")]
    assert [e.mention(example.text) for e in example.entities] == ["浙商银行", "叶老桂"]


def test_cluener_mention_mismatch_names_file_and_line(tmp_path):
    good = {"text": "北京", "label": {"address": {"北京": [[0, 1]]}}}
    bad = {"text": "上海很好", "label": {"address": {"上海": [[1, 2]]}}}
    path = write(tmp_path / "train.json", "\n".join(json.dumps(x, ensure_ascii=False) for x in (good, bad)) + "\n")
    with pytest.raises(DataError, match=r"train\.json:2: .*covers '海很' but the file says '上海'"):
        read_cluener(path)


def test_jsonl_exclusive_ends_and_nested_spans_kept(tmp_path):
    record = {"text": "北京大学很好", "entities": [{"start": 0, "end": 4, "type": "ORG"}, {"start": 0, "end": 2, "type": "LOC"}]}
    (example,) = read_jsonl(write(tmp_path / "a.jsonl", json.dumps(record, ensure_ascii=False) + "\n"))
    assert example.entities == [Entity(0, 2, "LOC"), Entity(0, 4, "ORG")]
    assert not example.is_flat()


def test_jsonl_inclusive_option(tmp_path):
    record = {"text": "北京大学", "entities": [{"start": 0, "end": 1, "type": "LOC"}]}
    (example,) = read_jsonl(write(tmp_path / "a.jsonl", json.dumps(record) + "\n"), end_inclusive=True)
    assert example.entities == [Entity(0, 2, "LOC")]


def test_jsonl_out_of_range_and_malformed(tmp_path):
    record = {"text": "北京", "entities": [{"start": 0, "end": 5, "type": "LOC"}]}
    with pytest.raises(DataError, match=r"a\.jsonl:1: span \[0, 5\) of type 'LOC' is out of range"):
        read_jsonl(write(tmp_path / "a.jsonl", json.dumps(record) + "\n"))
    with pytest.raises(DataError, match=r"b\.jsonl:2: malformed JSON"):
        read_jsonl(write(tmp_path / "b.jsonl", '{"text": "好"}\n{"text": \n'))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_conll_bmes_in_user_dir_with_mixed_whitespace(tmp_path):
    path = write(tmp_path / "train.bmes", "张 B-NAME\n三\tE-NAME\n在 O\n北  S-LOC\n\n上 B-LOC\n海 M-LOC\n市 E-LOC\n")
    first, second = read_conll(path, scheme="bmes")
    assert first.text == "张三在北" and first.entities == [Entity(0, 2, "NAME"), Entity(3, 4, "LOC")]
    assert second.text == "上海市" and second.entities == [Entity(0, 3, "LOC")]


def test_conll_bioes(tmp_path):
    path = write(tmp_path / "x.txt", "A B-ORG\nB I-ORG\nC E-ORG\nD S-PER\n")
    (example,) = read_conll(path, scheme="bioes")
    assert example.entities == [Entity(0, 3, "ORG"), Entity(3, 4, "PER")]


def test_conll_invalid_start_error_points_at_line(tmp_path):
    path = write(tmp_path / "x.txt", "a O\n\nb O\nc I-PER\n")
    with pytest.raises(DataError, match=r"x\.txt:4: tag 'I-PER' at token 1 continues no open PER entity"):
        read_conll(path, scheme="bio", on_invalid="error")
    (_, example) = read_conll(path, scheme="bio")
    assert example.entities == [Entity(1, 2, "PER")]


def test_conll_unknown_tag_and_bad_line(tmp_path):
    with pytest.raises(DataError, match=r"x\.txt:2: unknown tag 'S-PER'"):
        read_conll(write(tmp_path / "x.txt", "a O\nb S-PER\n"), scheme="bio")
    with pytest.raises(DataError, match=r"y\.txt:1: expected 'token tag'"):
        read_conll(write(tmp_path / "y.txt", "lonely\n"))
    with pytest.raises(DataError, match="unknown tag scheme"):
        read_conll(write(tmp_path / "z.txt", "a O\n"), scheme="iob9")


@pytest.mark.parametrize("token,char", [("科0", "科"), ("e12", "e"), ("20", "2"), ("\ufffd\ufffd0", "\ufffd\ufffd"), ("好", "好")])
def test_weibo_position_digits(token, char):
    assert token_text(token, strip_position_digits=True) == char


def test_weibo_style_file(tmp_path):
    path = write(tmp_path / "w.conll", "李0\tB-PER.NAM\n开1\tI-PER.NAM\n复2\tI-PER.NAM\n感0\tO\n动1\tO\n")
    (example,) = read_conll(path, strip_position_digits=True)
    assert example.text == "李开复感动"
    assert example.entities == [Entity(0, 3, "PER.NAM")]


def test_carve_dev_is_deterministic(tmp_path):
    from regner.data.types import Example

    train = [Example(str(i)) for i in range(100)]
    a_train, a_dev = carve_dev(train, 0.1, seed=3)
    b_train, b_dev = carve_dev(train, 0.1, seed=3)
    assert [e.text for e in a_dev] == [e.text for e in b_dev] and len(a_dev) == 10 and len(a_train) == 90
    assert not {e.text for e in a_dev} & {e.text for e in a_train}


def test_load_splits_carves_dev_and_collects_labels(tmp_path):
    lines = "".join(json.dumps({"text": f"北京{i}", "entities": [{"start": 0, "end": 2, "type": "LOC"}]}) + "\n" for i in range(20))
    write(tmp_path / "train.jsonl", lines)
    splits = load_splits({"format": "jsonl", "name": "mine", "train": "train.jsonl", "dev_fraction": 0.25}, base_dir=tmp_path)
    assert len(splits.dev) == 5 and len(splits.train) == 15 and splits.labels == ["LOC"] and splits.test is None


def test_empty_training_split(tmp_path):
    write(tmp_path / "train.jsonl", "\n")
    with pytest.raises(DataError, match="empty"):
        load_splits({"format": "jsonl", "train": str(tmp_path / "train.jsonl")})


def test_hf_local_dataset_with_classlabel_tags(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-LOC", "I-LOC"])),
    })
    rows = {"tokens": [["去", "北", "京"], ["上", "海", "好"]], "ner_tags": [[0, 1, 2], [1, 2, 0]]}
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "ds"))
    splits = load_splits({"format": "hf", "path": str(tmp_path / "ds")})
    assert splits.train[0].text == "去北京" and splits.train[0].entities == [Entity(1, 3, "LOC")]
    assert splits.dev[1].entities == [Entity(0, 2, "LOC")] and splits.test is None


def test_hf_data_files_dir_with_span_columns(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "spans"
    folder.mkdir()
    record = {"sentence": "张三在上海", "spans": [{"start": 0, "end": 2, "type": "PER"}]}
    write(folder / "train.jsonl", "".join(json.dumps(record, ensure_ascii=False) + "\n" for _ in range(4)))
    cfg = {"format": "hf", "path": str(folder), "dev_fraction": 0.5,
           "columns": {"text_column": "sentence", "entities_column": "spans"}}
    splits = load_splits(cfg)
    assert splits.train[0].entities == [Entity(0, 2, "PER")] and len(splits.dev) == 2


def test_shared_cluener_counts():
    train = read_cluener(shared("cluener", "train.json"))
    dev = read_cluener(shared("cluener", "dev.json"))
    assert (len(train), len(dev)) == (10748, 1343)
    assert sum(len(e.entities) for e in train) == 23972 and sum(len(e.entities) for e in dev) == 3072
    nested = train[1506]  # train line 1507: a book title containing two company names
    assert not nested.is_flat()


def test_shared_weibo_counts():
    train = read_conll(shared("weibo", "weiboNER_2nd_conll.train"), strip_position_digits=True)
    assert len(train) == 1350 and sum(len(e.entities) for e in train) == 1895
    assert train[0].text.startswith("科技全方位资讯智能")


def test_shared_msra_test_counts():
    test = read_conll(shared("msra", "msra_test_bio"))
    assert len(test) == 3442 and sum(len(e.entities) for e in test) == 6190


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="expected a file but found a directory"):
        read_conll(tmp_path)


def test_absolutize_paths_keeps_hub_ids(tmp_path):
    from omegaconf import OmegaConf

    from regner.data.loading import absolutize_paths

    (tmp_path / "local_ds").mkdir()
    cfg = OmegaConf.create({"train": "data/train.json", "dev": None, "test": "/abs/test.json", "path": "org/hub-id"})
    absolutize_paths(cfg, tmp_path)
    assert cfg.train == str(tmp_path / "data" / "train.json") and cfg.dev is None and cfg.test == "/abs/test.json"
    assert cfg.path == "org/hub-id"
    cfg.path = "local_ds"
    absolutize_paths(cfg, tmp_path)
    assert cfg.path == str(tmp_path / "local_ds")
