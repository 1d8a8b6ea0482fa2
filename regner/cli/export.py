"""``regner export ckpt=RUN``: the ONNX model of encoder + GlobalPointer head, with the tokenizer and
label map, for ``regner predict ckpt=DIR backend=onnx`` and ``regner serve``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from regner.cli.options import CHECKPOINT, Command, Option, require_extra, wants_help

COMMAND = Command(
    "export", "usage: regner export ckpt=RUN [key=value ...]",
    "ONNX model of encoder + GlobalPointer head (dynamic batch and length; output: fp32 span scores), with the "
    "tokenizer and label map; run it with regner predict ckpt=DIR backend=onnx. Needs pip install 'regner[serve]'.",
    (CHECKPOINT,
     Option("output", None, "directory to write (default: <run dir>/onnx); replaced only once the new export is "
            "complete"),
     Option("opset", "17", "ONNX opset version (an integer ≥ 14)", kind="int", low=14)))


def run(argv: list[str]) -> None:
    if wants_help(argv, COMMAND):
        return
    logging.getLogger("regner").setLevel(logging.INFO)  # the exporter's own INFO lines are not the user's business
    options = COMMAND.parse(argv)
    require_extra("export", ("onnx", "onnxruntime", "onnxscript"))
    from regner.inference.checkpoint import checkpoint_dir
    from regner.inference.export import export_onnx

    source = checkpoint_dir(options["ckpt"])
    run_dir = source.parent if source.name == "checkpoint" else source
    output = Path(options["output"]) if options["output"] else run_dir / "onnx"
    path = export_onnx(source, output, options["opset"])
    print(f"regner export: {path} (predict with: regner predict ckpt={output} backend=onnx)", file=sys.stderr)
