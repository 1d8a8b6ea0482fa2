"""The exceptions that are the user's input, not a bug in regner.

Every command reports a :class:`UserError` the same way (see :func:`regner.cli.errors.report_error`): one
paragraph on stderr naming the file, line, key or value, exit code 2, and a run directory (if one
was started) whose ``status.json`` says ``failed`` and why. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from typing import Any


class UserError(ValueError):
    """Bad input from the user (config, files, command-line arguments, run directories)."""


class ConfigError(UserError):
    """A config value outside what regner accepts: names the key, the value and the allowed range."""

    def __init__(self, key: str, value: Any, expected: str, hint: str = ""):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r} is not valid: expected {expected}" + (f". {hint}" if hint else ""))


class RunDirError(UserError):
    """A run directory cannot be used (held by another process, already a run, not resumable)."""
