"""Semi-supervised consistency on unlabeled text: reading without labels, the stream, the consistency
term against a hand computation, μ = 0 = supervised bit for bit, and exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from regner.data.errors import DataError
from regner.data.unlabeled import read_unlabeled
from regner.regularizers.base import TrainingStep
from regner.regularizers.kl import get_kl
from regner.regularizers.rdrop import RDrop
from regner.training.run import run_training
from regner.training.state import TrainState
from regner.training.trainer import Trainer
from regner.training.unlabeled import UnlabeledStream

from .helpers import killed_then_resumed
from .test_training import compose_config

SETTINGS = ["data.train_size=160", "data.dev_size=40", "data.test_size=40", "trainer.max_epochs=2",
            "trainer.num_threads=1",  # auto follows the load: runs compared bit for bit must not differ in threads
            "trainer.batch_size=16", "encoder.dropout=0.1"]


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


# -- reading without labels ---------------------------------------------------------------------------------
def test_labeled_formats_give_their_texts_and_their_labels_are_never_parsed(tmp_path):
    cluener = tmp_path / "c.json"
    cluener.write_text('{"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}\n'
                       '{"text": "李四", "label": "not even a mapping"}\n', encoding="utf-8")
    assert read_unlabeled(cluener, "cluener", {}) == ["张三在北京", "李四"]
    conll = tmp_path / "c.txt"
    conll.write_text("张 B-PER\n三 I-BROKEN-TAG\n\n北0 X\n京1 Y\n", encoding="utf-8")
    assert read_unlabeled(conll, "conll", {"strip_position_digits": True}) == ["张三", "北京"]
    text = tmp_path / "t.txt"
    text.write_text("第一句\n\n  第二句  \n", encoding="utf-8")
    assert read_unlabeled(text, "text", {}) == ["第一句", "第二句"]
    bad = tmp_path / "b.json"
    bad.write_text('{"text": "好"}\n{"txt": "坏"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"b.json:2"):
        read_unlabeled(bad, "cluener", {})


# -- the stream -----------------------------------------------------------------------------------------------
def test_the_stream_is_its_own_random_draw_and_resumes_from_its_position():
    state = TrainState()
    stream = UnlabeledStream(list(range(10)), 4, seed=7, pad_id=0, state_of=lambda: state)
    torch.manual_seed(0)
    first = [stream.next_indices() for _ in range(6)]  # 24 draws: passes 0, 1 and part of 2
    assert all(len(batch) == 4 for batch in first)
    assert sorted(first[0] + first[1] + first[2][:2]) == list(range(10))  # pass 0 is a permutation
    again_state = TrainState()
    again = UnlabeledStream(list(range(10)), 4, seed=7, pad_id=0, state_of=lambda: again_state)
    torch.manual_seed(123)  # the global random state does not matter
    assert [again.next_indices() for _ in range(6)] == first
    resumed_state = TrainState(unlabeled_pass=0, unlabeled_position=8)  # after two batches
    resumed = UnlabeledStream(list(range(10)), 4, seed=7, pad_id=0, state_of=lambda: resumed_state)
    assert [resumed.next_indices() for _ in range(4)] == first[2:]
    other = TrainState()
    assert [UnlabeledStream(list(range(10)), 4, 8, 0, lambda: other).next_indices() for _ in range(3)] != first[:3]


# -- the consistency term against a hand computation --------------------------------------------------------
class TwoSamples(torch.nn.Module):
    """Scores w·x, with the doubled batch's second half scaled by 1.5: two "dropout samples" that differ
    in a known way."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.x = torch.tensor([[[[0.5, -1.0], [2.0, 0.3]]]])  # [1, 1, 2, 2]

    def forward(self, ids, attention):
        halves = ids.shape[0] // 2
        scale = torch.tensor([1.0] * halves + [1.5] * halves).view(-1, 1, 1, 1)
        return self.w * self.x.expand(ids.shape[0], -1, -1, -1) * scale


def test_rdrop_on_an_unlabeled_batch_is_the_weighted_bernoulli_kl_with_its_gradient():
    model = TwoSamples()
    mask = torch.tensor([[[[True, True], [False, True]]]])
    batch = {"input_ids": torch.ones(1, 2, dtype=torch.long), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    step = TrainingStep(model=model, batch=batch, targets=None, mask=mask, kl=get_kl("globalpointer", "mean"),
                        global_step=9)
    regularizer = RDrop(alpha=4.0, rampup_steps=20)  # weight at step 9: 4 · 10/20 = 2
    terms = regularizer.unlabeled_step(step, multiplier=0.5)
    # by hand: cells (0.5, −1.0, 0.3)·w, s = w·x, t = 1.5·w·x; mean of (σ(s) − σ(t))(s − t); loss = 0.5 · 2 · KL
    w, xs = 0.7, [0.5, -1.0, 0.3]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    kl = sum((sig(w * x) - sig(1.5 * w * x)) * (w * x - 1.5 * w * x) for x in xs) / 3
    assert float(terms["unlabeled_kl"]) == pytest.approx(kl, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(0.5 * 2 * kl, rel=1e-6)
    # d/dw of (σ(wx) − σ(1.5wx))(−0.5wx): (σ'(wx)x − 1.5σ'(1.5wx)x)(−0.5wx) + (σ(wx) − σ(1.5wx))(−0.5x)
    d = lambda v: sig(v) * (1 - sig(v))  # noqa: E731
    grad = sum((d(w * x) * x - 1.5 * d(1.5 * w * x) * x) * (-0.5 * w * x) + (sig(w * x) - sig(1.5 * w * x)) * (-0.5 * x)
               for x in xs) / 3
    assert float(model.w.grad) == pytest.approx(0.5 * 2 * grad, rel=1e-5)


def test_a_confidence_threshold_keeps_only_the_cells_the_first_pass_is_sure_of():
    model = TwoSamples()
    mask = torch.tensor([[[[True, True], [False, True]]]])
    batch = {"input_ids": torch.ones(1, 2, dtype=torch.long), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    step = TrainingStep(model=model, batch=batch, targets=None, mask=mask, kl=get_kl("globalpointer", "mean"),
                        threshold=0.6)
    terms = RDrop(alpha=1.0).unlabeled_step(step)
    # first pass σ(0.7·x): 0.587, 0.332, 0.552 — only the cell x = −1 is ≥ 0.6 or ≤ 0.4; the mean is over it alone
    w, x = 0.7, -1.0
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    d = lambda v: sig(v) * (1 - sig(v))  # noqa: E731
    assert float(terms["unlabeled_kl"]) == pytest.approx((sig(w * x) - sig(1.5 * w * x)) * (-0.5 * w * x), rel=1e-6)
    assert float(terms["unlabeled_kept"]) == pytest.approx(1 / 3)
    grad = (d(w * x) * x - 1.5 * d(1.5 * w * x) * x) * (-0.5 * w * x) + (sig(w * x) - sig(1.5 * w * x)) * (-0.5 * x)
    assert float(model.w.grad) == pytest.approx(grad, rel=1e-5)


def test_the_sigmoid_rampup_is_exp_of_minus_five_one_minus_t_squared():
    from regner.training.unlabeled import sigmoid_rampup

    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(400, 100) == sigmoid_rampup(0, 0) == 1.0


# -- training -------------------------------------------------------------------------------------------------
def unlabeled_file(tmp_path, texts=None):
    path = tmp_path / "unlabeled.txt"
    path.write_text("\n".join(texts or [f"王小明{i}号在北京大学工作。" for i in range(40)]) + "\n", encoding="utf-8")
    return path


def test_ratio_zero_is_supervised_training_bit_for_bit(tmp_path):
    supervised = run_training(compose_config(*SETTINGS, "regularizer=rdrop"), tmp_path / "a")
    with_text = run_training(compose_config(*SETTINGS, "regularizer=rdrop", f"data.unlabeled={unlabeled_file(tmp_path)}",
                                            "unlabeled.ratio=0"), tmp_path / "b")
    assert [r["train"] for r in history(tmp_path / "a")] == [r["train"] for r in history(tmp_path / "b")]
    assert supervised["dev"] == with_text["dev"]


@pytest.mark.parametrize("regularizer, term", [("rdrop", "unlabeled_kl"), ("vat", "unlabeled_vat_kl")])
def test_the_labels_a_file_carries_do_not_change_training(tmp_path, regularizer, term):
    texts = [f"李{i}在上海工作" for i in range(24)]
    runs = []
    for name, label in (("one", '{"name": {"李0": [[0, 1]]}}'), ("other", '{"company": {"上海": [[3, 4]]}}')):
        path = tmp_path / f"{name}.json"
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False)[:-1] + f', "label": {label}}}\n'
                                for t in texts), encoding="utf-8")
        cfg = compose_config(*SETTINGS, "trainer.max_epochs=1", f"regularizer={regularizer}", f"data.unlabeled={path}",
                             "data.unlabeled_format=cluener", "unlabeled.ratio=2")
        runs.append(run_training(cfg, tmp_path / name))
    first, second = (history(tmp_path / name) for name in ("one", "other"))
    assert [r["train"] for r in first] == [r["train"] for r in second] and term in first[0]["train"]
    assert runs[0]["dev"] == runs[1]["dev"]


def test_unlabeled_pool_from_train_and_a_killed_run_resumes_exactly(tmp_path, monkeypatch):
    cfg = compose_config(*SETTINGS, "regularizer=rdrop", "data.max_train_samples=64", "data.unlabeled_from_train=true",
                         "unlabeled.ratio=2", "unlabeled.rampup_epochs=1", "unlabeled.threshold=0.9",
                         "trainer.save_every_steps=2")
    reference = run_training(cfg, tmp_path / "reference")
    resumed = killed_then_resumed(monkeypatch, cfg, tmp_path / "resumed", 5)  # mid-epoch 2 (4 labeled batches each)
    assert resumed["dev"] == reference["dev"] and resumed["test"] == reference["test"]
    assert [r["dev"] for r in history(tmp_path / "resumed")] == [r["dev"] for r in history(tmp_path / "reference")]


def test_a_ratio_without_text_or_with_a_supervised_regularizer_is_refused(tmp_path):
    from regner.errors import ConfigError

    with pytest.raises(ConfigError, match="unlabeled.ratio"):
        run_training(compose_config(*SETTINGS, "regularizer=rdrop", "unlabeled.ratio=1"), tmp_path / "a")
    with pytest.raises(ConfigError, match="regularizer=fgm"):
        run_training(compose_config(*SETTINGS, "regularizer=fgm", f"data.unlabeled={unlabeled_file(tmp_path)}",
                                    "unlabeled.ratio=1"), tmp_path / "b")
    from regner.config.validation import validate_config

    texts = unlabeled_file(tmp_path)
    with pytest.raises(ConfigError, match=r"unlabeled.threshold=0.5 is not valid"):
        validate_config(compose_config(*SETTINGS, "regularizer=rdrop", f"data.unlabeled={texts}", "unlabeled.ratio=1",
                                       "unlabeled.threshold=0.5"))
    with pytest.raises(ConfigError, match="kl=softmax"):
        validate_config(compose_config(*SETTINGS, "regularizer=rdrop", "kl=softmax", f"data.unlabeled={texts}",
                                       "unlabeled.ratio=1", "unlabeled.threshold=0.9"))
    with pytest.raises(ConfigError, match="unlabeled.rampup_epochs=-1 is not valid"):
        validate_config(compose_config(*SETTINGS, "regularizer=vat", f"data.unlabeled={texts}", "unlabeled.ratio=1",
                                       "unlabeled.rampup_epochs=-1"))


# -- mean teacher ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("warmup", [False, True])
def test_the_mean_teachers_teacher_is_the_closed_form_ema_of_the_students_weights(tmp_path, monkeypatch, warmup):
    from regner.training.callbacks.ema import EMA

    snapshots = []
    original = EMA.on_step_end

    def record(self, trainer):
        snapshots.append([p.detach().clone() for p in self.params])  # θ_k after optimizer step k
        original(self, trainer)

    monkeypatch.setattr(EMA, "on_step_end", record)
    cfg = compose_config(*SETTINGS, "trainer.max_epochs=1", "regularizer=mean_teacher", "regularizer.decay=0.8",
                         f"data.unlabeled={unlabeled_file(tmp_path)}", "unlabeled.ratio=1", f"regularizer.warmup={warmup}")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
    assert ema.evaluate and len(snapshots) == trainer.state.global_step == 10
    initial = ema.state_dict()  # shadow after n steps: d^n θ0 + Σ_k (1 − d) d^(n−k) θ_k
    d, n = 0.8, len(snapshots)
    torch.manual_seed(0)
    fresh = Trainer(cfg, tmp_path / "fresh")
    fresh.setup()
    theta0 = [p.detach().clone() for p in fresh.model.parameters() if p.requires_grad]
    for name, start, shadow, *steps in zip(ema.names, theta0, initial["shadow"].values(), *snapshots):
        if warmup:  # the plain mean of θ0 … θ3 (decays 1/2, 2/3, 3/4 < 0.8), then d = 0.8 from update 4 on
            mean = (start + steps[0] + steps[1] + steps[2]) / 4
            expected = d ** (n - 3) * mean + sum((1 - d) * d ** (n - k) * steps[k - 1] for k in range(4, n + 1))
        else:
            expected = d ** n * start + sum((1 - d) * d ** (n - k) * steps[k - 1] for k in range(1, n + 1))
        assert torch.allclose(shadow, expected, atol=1e-6), name
    assert "unlabeled_mt_kl" in history(tmp_path / "run")[0]["train"]


def test_mean_teacher_refuses_a_second_ema():
    from regner.config.validation import validate_config
    from regner.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.ema.decay"):
        validate_config(compose_config("regularizer=mean_teacher", "trainer.ema.decay=0.9"))


def test_semi_supervised_training_through_the_cli_with_a_plain_text_file(tmp_path):
    import subprocess
    import sys

    texts = unlabeled_file(tmp_path)
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "regner", "train", "regularizer=rdrop", f"data.unlabeled={texts}",
                             "unlabeled.ratio=2", "data.train_size=160", "data.dev_size=40", "data.test_size=40",
                             "trainer.max_epochs=1", "trainer.progress=false", f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "40 unlabeled text(s) for consistency training" in result.stderr
    assert "semi-supervised: 2 unlabeled batch(es) of 32 per labeled batch, from 40 windows" in result.stderr
    assert "unlabeled_kl" in history(run_dir)[0]["train"]
    assert json.loads((run_dir / "metrics.json").read_text())["dev"]["f1"] > 0
    bad = subprocess.run([sys.executable, "-m", "regner", "train", "regularizer=rdrop", "unlabeled.ratio=1",
                          f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unlabeled.ratio=1 is not valid" in bad.stderr and "Traceback" not in bad.stderr
