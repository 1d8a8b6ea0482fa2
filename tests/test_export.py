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
