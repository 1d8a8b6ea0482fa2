"""``regner predict ckpt=RUN``: entities for raw texts, one JSON line per input line; stdout carries
only the results (no Hydra logging, no run directory)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from regner.cli.errors import report_error, user_errors
from regner.cli.options import CHECKPOINT, Command, Option, wants_help
from regner.data.errors import DataError

THRESHOLD = "a finite number (a logit; 0 = probability 0.5)"
COMMAND = Command(
    "predict", "usage: regner predict ckpt=RUN [key=value ...]",
    "Entities for raw texts, one JSON line per input line ({text, entities: [{start, end, type, text, score}]}, end "
    "exclusive, score = σ(logit)).",
    (CHECKPOINT,
     Option("input", "-", 'texts: one per line, or JSONL with a "text" field; - reads stdin'),
     Option("output", "-", "where the JSONL results go (written atomically); - writes stdout"),
     Option("batch_size", "64", "windows per forward pass (an integer ≥ 1)", kind="int", low=1),
     Option("threshold", None, "logit threshold for a span (default: the checkpoint's head.threshold)", kind="float",
            expected=THRESHOLD),
     Option("device", "cpu", "cpu, cuda, cuda:N or auto", kind="device"),
     Option("on_error", "record", 'a line that is not UTF-8 text or a JSON object with a string "text": record = '
            'write {"line", "error"} for it and predict the rest; fail = stop with exit 2 naming the line',
            kind="choice", choices=("record", "fail")),
     Option("backend", None, "torch (a run or checkpoint) or onnx (a `regner export` directory); default: what ckpt "
            "holds", kind="choice", choices=("torch", "onnx")),
     Option("format", "jsonl", 'jsonl = {text, entities} per line; cluener = the CLUENER2020 leaderboard submission '
            '{"id", "label": {type: {mention: [[start, end_inclusive]]}}} (ids from the input\'s "id" field, else 0, '
            '1, ... by line)', kind="choice", choices=("jsonl", "cluener"))))


def run(argv: list[str]) -> None:
    if wants_help(argv, COMMAND):
        return
    try:
        options = COMMAND.parse(argv)
        from regner.inference.loaded import LoadedModel
        from regner.inference.texts import read_texts
        from regner.training.device import resolve_device

        loaded = LoadedModel.load(options["ckpt"], resolve_device(options["device"], "device"), options["backend"])
        source = options["input"]
        if source == "-":
            lines = list(read_texts(sys.stdin.buffer, "<stdin>"))
        else:
            if not Path(source).is_file():
                raise DataError("input file not found", source)
            with open(source, "rb") as handle:
                lines = list(read_texts(handle, source))
        bad = [line for line in lines if line.error]
        if bad and options["on_error"] == "fail":
            raise DataError(bad[0].error + " (on_error=fail; on_error=record writes an error record and goes on)")
        good = [line for line in lines if line.error is None]
        predictions = iter(loaded.predict([line.text for line in good], options["batch_size"], options["threshold"]))
    except user_errors() as err:
        report_error("predict", err)
    if options["format"] == "cluener":
        from regner.inference.submission import cluener_record

        records = [{"line": line.number, "error": line.error} if line.error else
                   cluener_record(line.number - 1 if line.id is None else line.id, next(predictions))
                   for line in lines]
    else:
        records = [{"line": line.number, "error": line.error} if line.error else
                   {"text": line.text, "entities": next(predictions)} for line in lines]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if options["output"] == "-":
        sys.stdout.write(text)
    else:
        from regner.runs.io import atomic_write_text

        atomic_write_text(options["output"], text)
    entities = sum(len(r["entities"]) if "entities" in r else
                   sum(len(spans) for by_text in (r.get("label") or {}).values() for spans in by_text.values())
                   for r in records)
    print(f"regner predict: {len(lines) - len(bad)} texts, {entities} entities written to "
          f"{'stdout' if options['output'] == '-' else Path(options['output']).resolve()}", file=sys.stderr)
    if bad:
        print(f"regner predict: warning: {len(bad)} of {len(lines)} input lines could not be read; their records "
              f'hold {{"line", "error"}} instead of entities (first: {bad[0].error})', file=sys.stderr)
