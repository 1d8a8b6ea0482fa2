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
import tempfile
import warnings
from pathlib import Path

import torch

from regner.errors import UserError
from regner.inference.onnx import ONNX_FILE
from regner.model.span_model import MODEL_CONFIG

log = logging.getLogger(__name__)


EXPORT_MARKER = ".regner-export"  # in every export: the directories regner export may replace
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
    path of ``model.onnx``. The export is written into a temporary sibling of ``output`` and renamed
    when complete (a failure leaves nothing behind); ``output`` may be new, empty or an earlier export,
    never a file, a run or checkpoint directory, or a directory of other files (:func:`check_export_target`)."""
    from regner.runs.progress import step

    with step("exporting to ONNX", 4, progress) as bar:
        return _export(ckpt, Path(output), opset, bar)


def _export(ckpt: str | Path, output: Path, opset: int, bar) -> Path:
    from regner.inference.checkpoint import checkpoint_dir, load_checked
    from regner.model.span_model import SpanModel

    source = checkpoint_dir(ckpt)
    check_export_target(output, source)  # before any work: a refused export touches nothing
    bar.info("loading the checkpoint")
    model, tokenizer, config = load_checked(source, lambda: SpanModel.from_pretrained(source))
    model.eval()
    bar.advance()
    bar.info("tracing (torch.export)")
    # the exporter traces one shape; eager attention keeps the graph free of SDPA's shape-specialised kernels
    if hasattr(model.encoder, "set_attn_implementation"):
        model.encoder.set_attn_implementation("eager")
    else:
        model.encoder.config._attn_implementation = "eager"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        _write(model, tokenizer, config, source, partial, opset, bar)
        _replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # a failed export leaves nothing behind
    log.info("exported %s to %s (opset %d)", source, output / ONNX_FILE, opset)
    return output / ONNX_FILE


def _write(model, tokenizer, config: dict, source: Path, partial: Path, opset: int, bar) -> None:
    """Trace, save and check the ONNX graph, and copy the tokenizer and label map, into ``partial``."""
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
    (partial / EXPORT_MARKER).write_text("written by regner export; regner export may replace this directory\n")


def _replace(partial: Path, output: Path) -> None:
    """Put the complete export in place: an earlier export at ``output`` is moved aside first and
    removed only once the new one is there."""
    if not output.exists():
        partial.rename(output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    old.rmdir()
    output.rename(old)
    partial.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def is_export(directory: Path) -> bool:
    """Whether ``directory`` is an earlier ``regner export`` (its marker, or the ONNX label map an
    export before the marker wrote), and holds nothing else than what an export writes."""
    config = directory / MODEL_CONFIG
    if not (directory / EXPORT_MARKER).is_file():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("backend") != "onnx":
                return False
        except (OSError, ValueError, AttributeError):
            return False
    written = {ONNX_FILE, ONNX_FILE + ".data", MODEL_CONFIG, EXPORT_MARKER, *TOKENIZER_FILES}
    return all(entry.name in written and entry.is_file() for entry in directory.iterdir())


def check_export_target(output: Path, source: Path) -> None:
    """Refuse an ``output`` whose replacement would destroy something: an existing file, a directory
    holding the model being exported (a run or checkpoint directory, or one above it), or a non-empty
    directory that is not an earlier ``regner export``."""
    output, source = Path(output), Path(source)
    hint = "choose a new directory, e.g. output=<run dir>/onnx (the default)"
    if output.is_file() or (output.exists() and not output.is_dir()):
        raise UserError(f"output={output} is an existing file, not a directory: {hint}")
    resolved, inside = output.resolve(), source.resolve()
    if resolved == inside or resolved in inside.parents:
        raise UserError(f"output={output} holds the checkpoint being exported ({source}); an export never replaces "
                        f"a run or checkpoint directory: {hint}")
    if output.is_dir() and any(output.iterdir()) and not is_export(output):
        kind = "a regner run directory" if (output / "status.json").exists() or (output / "checkpoint").is_dir() \
            else "a directory that is not an earlier regner export"
        raise UserError(f"output={output} is {kind} and is not empty; regner export replaces only its own earlier "
                        f"exports (marked by {EXPORT_MARKER}): {hint}")
