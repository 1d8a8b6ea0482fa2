"""In-process training runs through the real Hydra config tree, one per regularizer × KL."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from regner.config.paths import config_dir
from regner.training.run import run_training
from regner.training.trainer import TrainingDiverged

TINY = ["data.train_size=120", "data.dev_size=30", "data.test_size=0", "trainer.max_epochs=1",
        "trainer.progress=false", "trainer.batch_size=16", "encoder.hidden_size=32", "encoder.num_layers=1",
        "encoder.intermediate_size=64", "head.head_size=16"]


def compose_config(*overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[*TINY, *overrides])


COMBINATIONS = [
    ("none", "globalpointer"), ("fgm", "globalpointer"), ("gp", "globalpointer"),
    ("noise", "globalpointer"), ("rdrop", "globalpointer"), ("rdrop", "softmax"), ("rdrop", "mse"),
    ("vat", "globalpointer"), ("vat", "softmax"), ("vat", "mse"),
]


@pytest.mark.parametrize("regularizer,kl", COMBINATIONS)
def test_every_regularizer_trains_and_logs_its_terms(tmp_path, regularizer, kl):
    cfg = compose_config(f"regularizer={regularizer}", f"kl={kl}")
    metrics = run_training(cfg, tmp_path)
    assert metrics["run"]["regularizer"] == regularizer
    assert metrics["run"]["kl"] == (kl if regularizer in ("rdrop", "vat") else None)  # None: the KL is unused
    assert (tmp_path / "metrics.json").exists()
    (row,) = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    extra = {"none": set(), "fgm": {"adv_ce"}, "gp": {"grad_penalty"}, "noise": set(), "rdrop": {"kl"}, "vat": {"vat_kl"}}
    assert set(row["train"]) == {"loss", "ce"} | extra[regularizer]


@pytest.mark.parametrize("overrides", [
    ["regularizer=noise", "regularizer.consistency=true", "kl=softmax"],
    ["regularizer=fgm", "regularizer.target=embeds", "regularizer.relative=true", "regularizer.epsilon=0.1"],
    ["regularizer=gp", "regularizer.mode=approx"],
    ["regularizer=vat", "regularizer.relative=true", "regularizer.epsilon=0.05", "regularizer.power_iterations=2"],
    ["head=efficient", "regularizer=rdrop", "alpha=4"],
])
def test_regularizer_variants(tmp_path, overrides):
    metrics = run_training(compose_config(*overrides), tmp_path)
    assert metrics["status"] == "completed"


def test_alpha_flows_into_the_regularizer(tmp_path):
    cfg = compose_config("regularizer=rdrop", "alpha=4")  # a multiplier of each regularizer's default
    assert cfg.regularizer.alpha == 4 * 100
    assert compose_config("regularizer=gp", "alpha=0.5").regularizer.epsilon == 0.5 * 0.01
    assert compose_config("regularizer=fgm", "alpha=2").regularizer.weight == 2
    assert compose_config("regularizer=rdrop", "regularizer.alpha=7").regularizer.alpha == 7  # absolute value


def test_bf16_autocast_run_is_finite(tmp_path):
    metrics = run_training(compose_config("trainer.precision=bf16", "regularizer=rdrop"), tmp_path)
    assert metrics["status"] == "completed"


def test_non_finite_loss_stops_the_run(tmp_path, monkeypatch):
    from regner.regularizers.none import NoRegularizer

    def broken(self, step):
        return {"loss": torch.tensor(float("nan")), "ce": torch.tensor(float("nan"))}

    monkeypatch.setattr(NoRegularizer, "step", broken)
    with pytest.raises(TrainingDiverged, match="non-finite loss"):
        run_training(compose_config(), tmp_path)
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"
    assert not (tmp_path / "metrics.json").exists()


def test_pretrained_encoder_loads_from_a_local_directory(tmp_path):
    """The hub-loading path (AutoModel/AutoTokenizer.from_pretrained) on a model saved to disk."""
    from regner.data.demo import generate_split
    from regner.model.encoder import build_char_vocab, tiny_encoder, tiny_tokenizer

    vocab = build_char_vocab(ex.text for ex in generate_split(200, 0, "train"))
    model_dir = tmp_path / "my-bert"
    tiny_tokenizer(vocab).save_pretrained(model_dir)
    cfg = compose_config("encoder=tiny")
    tiny_encoder(len(vocab), cfg.encoder).save_pretrained(model_dir)
    small_run = [o for o in TINY if not o.startswith("encoder.")]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        pretrained = compose("config", overrides=[*small_run, "encoder=pretrained", f"encoder.pretrained={model_dir}"])
    metrics = run_training(pretrained, tmp_path / "run")
    assert metrics["run"]["encoder"] == "pretrained"
    from transformers import AutoModel

    reloaded = AutoModel.from_pretrained(tmp_path / "run" / "checkpoint")  # the encoder part is a plain HF model
    assert reloaded.config.hidden_size == cfg.encoder.hidden_size


def test_encoder_directory_without_config_is_rejected(tmp_path):
    from regner.model.encoder import EncoderError, load_pretrained

    with pytest.raises(EncoderError, match="without config.json is not a transformers model"):
        load_pretrained(str(tmp_path))


def test_compile_failure_on_the_first_step_falls_back_to_eager(tmp_path, monkeypatch):
    """trainer.compile must never cost a run: a backend error on the first step means eager mode."""
    import torch

    from regner.training.trainer import Trainer

    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: setattr(self, "_compiled_call_impl", None))
    original, calls = Trainer._training_step, {"n": 0}

    def first_step_breaks(self, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("inductor backend exploded")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_training_step", first_step_breaks)
    metrics = run_training(compose_config("trainer.compile=true"), tmp_path)
    assert metrics["train"]["compiled"] is False and metrics["status"] == "completed"


def test_compile_is_skipped_for_the_exact_gradient_penalty(tmp_path):
    metrics = run_training(compose_config("trainer.compile=true", "regularizer=gp"), tmp_path)
    assert metrics["train"]["compiled"] is False


def test_training_steps_do_not_wait_for_the_device_between_checks(tmp_path, monkeypatch):
    """Between the every-`check_every`-steps reads, regner's step code reads no tensor into Python
    (each read is a device sync on a GPU)."""
    from regner.training.trainer import Trainer

    from .test_regularizers import count_host_reads

    active = {"on": False}
    reads = count_host_reads(monkeypatch, when=lambda: active["on"])
    original = Trainer._training_step

    def watched(self, batch):
        active["on"] = True
        try:
            return original(self, batch)
        finally:
            active["on"] = False

    monkeypatch.setattr(Trainer, "_training_step", watched)
    run_training(compose_config("data.train_size=64", "data.dev_size=16", "data.test_size=0", "trainer.max_epochs=1",
                                "trainer.batch_size=16", "regularizer=rdrop", "trainer.check_every=1000"), tmp_path)
    assert reads == []


def test_history_counts_predicted_spans_and_warns_when_there_are_none(tmp_path, monkeypatch, caplog):
    import regner.training.trainer as trainer_module

    real = trainer_module.evaluate

    def nothing_predicted(*args, **kwargs):
        scores, merged = real(*args, **kwargs)
        if not kwargs.get("with_seqeval"):
            scores = {**scores, "precision": 0.0, "recall": 0.0, "f1": 0.0, "predicted": 0}
        return scores, merged

    monkeypatch.setattr(trainer_module, "evaluate", nothing_predicted)
    run_training(compose_config("data.train_size=64", "data.dev_size=16", "data.test_size=0", "trainer.max_epochs=1",
                                "regularizer=rdrop"), tmp_path)
    (row,) = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert row["dev"]["predicted"] == 0
    warning = [r.getMessage() for r in caplog.records if "predicted no entity" in r.getMessage()]
    assert warning and "rdrop" in warning[0] and "% of this epoch's training loss" in warning[0]
    assert "kl " in warning[0] and "learning rate" in warning[0]


def test_perturbation_sizes_default_to_relative_and_kl_to_the_mean():
    """Absolute sizes tuned for BERT embeddings destroy a small encoder's input, and a summed KL
    grows with the square of the window: the defaults are relative sizes and the per-cell mean."""
    for regularizer in ("fgm", "vat", "noise"):
        assert compose_config(f"regularizer={regularizer}").regularizer.relative is True
    cfg = compose_config("regularizer=rdrop")
    assert cfg.kl.reduction == "mean" and cfg.regularizer.alpha == 100
