"""ONNX export of a trained model (encoder + GlobalPointer head) and an onnxruntime predictor.

``regner export ckpt=RUN [output=DIR] [opset=17]`` writes DIR with ``model.onnx`` (inputs ``input_ids``
and ``attention_mask`` [batch, length], int64, both axes dynamic; output ``scores`` [batch, types,
length, length], fp32 span logits, exactly what ``SpanModel`` returns), the tokenizer and
``regner_config.json`` (labels, max length, window overlap, threshold). ``regner predict ckpt=DIR
backend=onnx`` runs it with onnxruntime through the same windows, decoding and merging as PyTorch.
Needs ``pip install 'regner[serve]'`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import torch

from regner.inference.onnx import ONNX_FILE
from regner.model.span_model import MODEL_CONFIG

log = logging.getLogger(__name__)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


class _Scores(torch.nn.Module):
    """SpanModel with a plain (input_ids, attention_mask) → scores signature for tracing."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)


def export_onnx(ckpt: str | Path, output: str | Path, opset: int = 17, progress: bool = True) -> Path:
    """Export the checkpoint of ``ckpt`` (a run or checkpoint directory) to ``output``; returns the
    path of ``model.onnx``. The directory is written under a temporary name and renamed when complete."""
    from regner.runs.progress import step

    with step("exporting to ONNX", 4, progress) as bar:
        return _export(ckpt, Path(output), opset, bar)


def _export(ckpt: str | Path, output: Path, opset: int, bar) -> Path:
    from regner.inference.checkpoint import checkpoint_dir
    from regner.model.span_model import SpanModel

    source = checkpoint_dir(ckpt)
    bar.info("loading the checkpoint")
    model, tokenizer, config = SpanModel.from_pretrained(source)
    model.eval()
    bar.advance()
    bar.info("tracing (torch.export)")
    # the exporter traces one shape; eager attention keeps the graph free of SDPA's shape-specialised kernels
    if hasattr(model.encoder, "set_attn_implementation"):
        model.encoder.set_attn_implementation("eager")
    else:
        model.encoder.config._attn_implementation = "eager"
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    ids = torch.tensor([[tokenizer.cls_token_id or 1, 5, 6, 7, tokenizer.sep_token_id or 2]] * 2)
    mask = torch.ones_like(ids)
    mask[1, -1] = 0
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on traced Python values; the test checks the graph
        program = torch.onnx.export(_Scores(model), (ids, mask), dynamo=True, opset_version=opset,
                                    input_names=["input_ids", "attention_mask"], output_names=["scores"],
                                    dynamic_shapes={"input_ids": {0: batch, 1: length},
                                                    "attention_mask": {0: batch, 1: length}},
                                    verbose=False, optimize=True)
        bar.advance()
        bar.info("optimising and saving")
        program.save(str(partial / ONNX_FILE))
    bar.advance()
    bar.info("checking the graph")
    import onnx

    onnx.checker.check_model(str(partial / ONNX_FILE))
    bar.advance()
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, partial / name)
    exported = {**config, "backend": "onnx", "onnx": {"file": ONNX_FILE, "opset": opset,
                                                      "exported_from": str(source.resolve())}}
    (partial / MODEL_CONFIG).write_text(json.dumps(exported, ensure_ascii=False, indent=2), encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    log.info("exported %s to %s (opset %d)", source, output / ONNX_FILE, opset)
    return output / ONNX_FILE
