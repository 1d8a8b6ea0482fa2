"""``regner train-worker``: run ``regner train`` command lines read from stdin (one JSON list per line), one
after another in this one process, answering each with one JSON line ``{"code": exit code}`` on stdout.

``regner compare`` keeps one worker per slot, so torch, transformers and Hydra are imported once per slot
rather than once per run (on small runs that was most of their time). A run in a worker is the run
``regner train`` makes in a fresh process: same seed, same losses, bit for bit (checked in
tests/test_compare_cli.py). Not a command for users; it is not listed in ``regner --help``.
"""

from __future__ import annotations

import contextlib
import json
import sys


def run(argv: list[str]) -> None:
    from regner.cli import main

    answers = sys.stdout
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        code = 0
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the answers only
            try:
                main(list(command))
            except SystemExit as end:
                code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
            except KeyboardInterrupt:
                code = 130
            except Exception as err:  # noqa: BLE001 - a crash of one run is that run's failure, not the worker's
                print(f"regner train-worker: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                code = 1
        answers.write(json.dumps({"code": code}) + "\n")
        answers.flush()
