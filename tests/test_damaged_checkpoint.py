"""A damaged checkpoint is one paragraph naming the file, exit 2, in predict, evaluate, export and serve
(it was a traceback, and evaluate left status.json at "running")."""

import json
import shutil

import pytest

from .test_cli import regner


def damage(directory, case):
    if case == "truncated weights":
        data = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "deleted weights":
        (directory / "model.safetensors").unlink()
    elif case == "cut head":
        data = (directory / "globalpointer_head.safetensors").read_bytes()
        (directory / "globalpointer_head.safetensors").write_bytes(data[:40])
    elif case == "garbage config":
        (directory / "config.json").write_text("{not json")
    elif case == "empty config":
        (directory / "config.json").write_text("")
    elif case == "edited config":
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] * 2,
                                                           "intermediate_size": 8}))
    elif case == "garbage label map":
        (directory / "regner_config.json").write_bytes(b"\x00\x01garbage")
    elif case == "labels not a list":
        config = json.loads((directory / "regner_config.json").read_text())
        (directory / "regner_config.json").write_text(json.dumps({**config, "labels": "PER"}))
    elif case == "garbage tokenizer":
        (directory / "tokenizer.json").write_text("[1, 2")


CASES = {
    "truncated weights": "model.safetensors: not a complete safetensors file",
    "deleted weights": "model.safetensors: missing",
    "cut head": "globalpointer_head.safetensors: not a complete safetensors file",
    "garbage config": "config.json: not valid JSON",
    "empty config": "config.json: empty",
    "edited config": "its files do not load together",
    "garbage label map": "regner_config.json: not",
    "labels not a list": '"labels" is not a non-empty list',
    "garbage tokenizer": "tokenizer.json: not valid JSON",
}


@pytest.fixture
def broken_copy(trained_run, tmp_path):
    def make(case):
        copy = tmp_path / case.replace(" ", "-")
        shutil.copytree(trained_run / "checkpoint", copy / "checkpoint")
        damage(copy / "checkpoint", case)
        return copy

    return make


@pytest.mark.parametrize("case", list(CASES))
def test_loading_a_damaged_checkpoint_names_the_file(broken_copy, case):
    from regner.inference.checkpoint import DamagedCheckpoint
    from regner.inference.loaded import LoadedModel

    run = broken_copy(case)
    with pytest.raises(DamagedCheckpoint) as err:
        LoadedModel.load(run)
    message = str(err.value)
    assert message.startswith(f"checkpoint {run / 'checkpoint'} is damaged: ")
    assert CASES[case] in message and "\n" not in message


def test_every_command_reports_a_damaged_checkpoint_in_one_paragraph(broken_copy, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("onnx")
    run = broken_copy("truncated weights")
    before = sorted(p.name for p in (run / "checkpoint").iterdir())
    for args in (["predict", f"ckpt={run}"], ["export", f"ckpt={run}"], ["serve", f"ckpt={run}", "port=0"],
                 ["evaluate", f"ckpt={run}", "hydra.run.dir=evaluation"]):
        result = regner(*args, cwd=tmp_path, stdin="张伟\n")
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert "model.safetensors: not a complete safetensors file" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == before and not (run / "onnx").exists()
    status = json.loads((tmp_path / "evaluation" / "status.json").read_text())
    assert status["status"] == "failed" and "damaged" in status["reason"]
    assert not (tmp_path / "evaluation" / "metrics.json").exists()
