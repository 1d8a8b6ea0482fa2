"""The one error path of every command: one paragraph on stderr, exit code 2."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from regner.errors import UserError

log = logging.getLogger("regner")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, reported as one paragraph instead of a traceback."""
    from omegaconf.errors import MissingMandatoryValue

    return UserError, MissingMandatoryValue


def report_error(command: str, err: BaseException, run_dir: Path | None = None, exit_code: int | None = 2) -> None:
    """The one error path of every command: one paragraph on stderr (no traceback) naming the file,
    line, key or value, where the failed run's status.json is, then exit ``exit_code`` (None: return,
    so the other jobs of a sweep go on)."""
    message = str(err).strip() or type(err).__name__
    if type(err).__name__ == "MissingMandatoryValue":
        message = f"a required key has no value: {message.splitlines()[0]}; set it on the command line (key=value)"
    where = (f" The run directory {run_dir} holds no finished result: its status.json says failed, and why."
             if run_dir is not None else "")
    end = "" if message.endswith((".", "?", "!")) else "."
    print(f"regner {command}: error: {message}{end}{where}", file=sys.stderr, flush=True)
    if exit_code is not None:
        sys.exit(exit_code)
