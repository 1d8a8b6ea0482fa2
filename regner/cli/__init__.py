"""The ``regner`` command: one module per command under ``regner/cli/``, each with ``run(argv)``.
``train``, ``sweep``, ``evaluate`` and ``pretrain`` are Hydra apps over ``conf/`` (``compare`` composes
its config with Hydra's compose API); ``predict``,
``export``, ``serve`` and ``report`` take ``key=value`` options through one parser
(:mod:`regner.cli.options`) and keep stdout for their results.

    regner train [overrides...]        one run (Hydra single-run mode)
    regner sweep [overrides...]        Hydra multirun (-m is implied), e.g. regner sweep regularizer=rdrop alpha=1,4
    regner compare [compare=PROFILE]  does each regularizer help over none, by how much: racing + sequential
                                       looks within a budget (conf/comparison.yaml), e.g. regner compare compare=cpu
    regner report DIR [DIR...]         aggregate the runs under DIRs (or runs.jsonl.gz files) into report.md/.csv and plots
    regner evaluate ckpt=RUN [data=..] score a saved model; writes metrics.json like training does
    regner pretrain [overrides...]     masked-LM pretraining of the encoder (conf/pretraining.yaml), e.g.
                                       regner pretrain pretrain=zh-mini (what `make pretrain` runs)
    regner predict ckpt=RUN [input=FILE] [output=FILE] [batch_size=64] [threshold=..] [on_error=record]
                                       entities for raw texts (lines or JSONL "text"), as JSONL
    regner export ckpt=RUN [output=DIR] [opset=17]
                                       ONNX model + tokenizer + label map (regner predict ckpt=DIR backend=onnx)
    regner serve ckpt=RUN [host=127.0.0.1] [port=8000] [backend=torch|onnx]
                                       HTTP service: POST /predict, GET /health, GET /labels (batches requests)
    regner --version                   versions of regner, torch and transformers

`regner train --help` lists the config groups and main keys; `regner predict --help` (export, serve, report) theirs.
Errors are one paragraph on stderr with exit code 2; logs go to stderr, results to stdout.
"""

from __future__ import annotations

import importlib
import sys

USAGE = "usage: regner COMMAND [ARGS...]   (regner COMMAND --help for a command's own options)\n\n" + \
    __doc__.split("\n\n", 1)[1]

# command -> the module under regner/cli/ whose run(argv) carries it out (imported only when used)
COMMANDS = {"train": "train", "sweep": "sweep", "compare": "compare", "evaluate": "evaluate", "pretrain": "pretrain", "report": "report",
            "predict": "predict", "export": "export", "serve": "serve",
            "train-worker": "worker"}  # regner compare's persistent training processes (not for users)


def version_text() -> str:
    """regner's version and its main libraries', read from the installed packages' metadata: importing
    torch and transformers only to print their versions took seconds."""
    from importlib import metadata

    from regner import __version__

    found = []
    for package in ("torch", "transformers"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return f"regner {__version__} ({', '.join(found)})"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version", "version"):
        print(version_text())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"regner: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from regner.cli.errors import report_error
    from regner.errors import UserError

    try:
        importlib.import_module(f"regner.cli.{COMMANDS[command]}").run(rest)
    except UserError as err:
        report_error(command, err)
    except KeyboardInterrupt:
        print(f"regner {command}: interrupted", file=sys.stderr)
        sys.exit(130)
