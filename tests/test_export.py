"""ONNX export: scores equal PyTorch's within 1e-4 on the demo dev windows (any batch and length), the
decoded entities are identical through ``regner predict backend=onnx``, and bad use is a clear error."""

import json

import pytest
import torch

from .test_cli import regner

pytest.importorskip("onnxruntime")


def test_exported_scores_match_pytorch_on_every_batch_shape(trained_run, exported):
    from regner.data.batching import collate
    from regner.data.demo import generate_split
    from regner.data.types import Example
    from regner.inference.loaded import LoadedModel

    torch_model, onnx_model = LoadedModel.load(trained_run), LoadedModel.load(exported)
    assert type(onnx_model.model).__name__ == "OnnxSpanModel" and onnx_model.model.labels == torch_model.model.labels
    texts = [ex.text for ex in generate_split(60, 0, "dev")]
    windows = torch_model.encode("dev", [Example(t) for t in texts]).windows
    for start, size in ((0, 1), (1, 7), (8, 52)):  # several batch sizes and padded lengths
        batch = collate(windows[start : start + size], 0)
        with torch.no_grad():
            expected = torch_model.model(batch["input_ids"], batch["attention_mask"])
        got = onnx_model.model(batch["input_ids"], batch["attention_mask"])
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert torch.allclose(got, expected, atol=1e-4, rtol=0), float((got - expected).abs().max())


def test_predict_with_onnx_gives_the_same_entities(trained_run, exported, tmp_path):
    from regner.data.demo import generate_split

    source = tmp_path / "dev.txt"
    source.write_text("\n".join(ex.text for ex in generate_split(300, 0, "dev")) + "\n", encoding="utf-8")
    outputs = {}
    for name, args in (("torch", [f"ckpt={trained_run}"]), ("onnx", [f"ckpt={exported}", "backend=onnx"])):
        result = regner("predict", *args, f"input={source}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[name] = [json.loads(line) for line in result.stdout.splitlines()]
    spans = {name: [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in records]
             for name, records in outputs.items()}
    assert spans["onnx"] == spans["torch"] and sum(map(len, spans["torch"])) > 100
    for a, b in zip(outputs["torch"], outputs["onnx"]):
        for x, y in zip(a["entities"], b["entities"]):
            assert abs(x["score"] - y["score"]) <= 1e-4


def test_backends_refuse_the_wrong_directory(trained_run, exported, tmp_path):
    no_onnx = regner("predict", f"ckpt={trained_run}", "backend=onnx", cwd=tmp_path, stdin="北京\n")
    assert no_onnx.returncode == 2 and "regner export" in no_onnx.stderr
    no_torch = regner("predict", f"ckpt={exported}", "backend=torch", cwd=tmp_path, stdin="北京\n")
    assert no_torch.returncode == 2 and "backend=onnx" in no_torch.stderr
    default = regner("predict", f"ckpt={exported}", cwd=tmp_path, stdin="张伟在北京。\n")
    assert default.returncode == 0 and "entities" in default.stdout  # the directory says it is an ONNX export
    bad = regner("export", f"ckpt={trained_run}", "opset=9", cwd=tmp_path)
    assert bad.returncode == 2 and "opset" in bad.stderr and not (trained_run / "onnx").exists()


def snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_export_never_destroys_what_it_did_not_write(trained_run, exported, tmp_path):
    """Refused: a directory of user files, the run directory itself (or its checkpoint/), an existing
    file; each with exit 2, one paragraph, nothing deleted and no partial directory left behind."""
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    afile = tmp_path / "model.onnx"
    afile.write_text("not a directory")
    before = snapshot(trained_run)
    for target, expected in ((users, "not an earlier regner export"), (trained_run, "holds the checkpoint"),
                             (trained_run / "checkpoint", "holds the checkpoint"), (afile, "existing file")):
        result = regner("export", f"ckpt={trained_run}", f"output={target}", cwd=tmp_path)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert (users / "notes.txt").read_text() == "keep me" and afile.read_text() == "not a directory"
    assert snapshot(trained_run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model.onnx"]  # no *.partial* left anywhere


def test_export_replaces_only_an_earlier_export(trained_run, exported, tmp_path):
    import shutil

    earlier = tmp_path / "earlier"
    shutil.copytree(exported, earlier)
    assert (earlier / ".regner-export").is_file()
    result = regner("export", f"ckpt={trained_run}", f"output={earlier}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((earlier / "regner_config.json").read_text())["backend"] == "onnx"
    (earlier / "extra.txt").write_text("a user's file inside an export")  # no longer only what an export writes
    again = regner("export", f"ckpt={trained_run}", f"output={earlier}", cwd=tmp_path)
    assert again.returncode == 2 and (earlier / "extra.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]


def test_a_failed_export_leaves_nothing_behind(trained_run, tmp_path, monkeypatch):
    from regner.inference import export

    def broken(*args, **kwargs):
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(export, "_write", broken)
    with pytest.raises(RuntimeError):
        export.export_onnx(trained_run, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []
