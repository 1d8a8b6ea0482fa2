"""One exception type for bad input, so the CLI can print it as one clear paragraph."""

from __future__ import annotations

from regner.errors import UserError


class DataError(UserError):
    """Bad input data. The message names the file, the line (when known) and the problem."""

    def __init__(self, problem: str, path: str | None = None, line: int | None = None):
        self.problem = problem
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + problem)
