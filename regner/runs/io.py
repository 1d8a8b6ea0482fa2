"""Run-directory files, written atomically so a crash never leaves a half-written result."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from regner.errors import UserError

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.jsonl"


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block succeeds it is renamed over ``path``,
    and if the block fails it is removed, so ``path`` is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_target(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), ensure_ascii=False, indent=2) + "\n")


def write_status(run_dir: str | Path, status: str, reason: str | None = None, **extra: Any) -> None:
    """``status.json``: ``running``, ``completed`` or ``failed`` (with the reason)."""
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    if reason:
        record["reason"] = reason
    atomic_write_json(Path(run_dir) / STATUS_FILE, record)


class History:
    """``history.jsonl``, one line per evaluation; the whole file is rewritten atomically."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self.rows: list[dict[str, Any]] = []

    def load(self) -> None:
        """Continue an existing history (after a resume)."""
        if self.path.exists():
            self.rows = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(_jsonable(row))
        if self.enabled:
            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))


# Errors of the storage, not of regner or the user's input: a full disk, a quota, a read-only or vanished mount.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


class StorageError(UserError):
    """A run could not write its files (disk full, quota, read-only); what it saved before is intact."""


def storage_error(err: BaseException, run_dir: Path, resume: str) -> StorageError | None:
    """The :class:`StorageError` for ``err`` if it is a storage failure, else None."""
    if not isinstance(err, OSError) or err.errno not in STORAGE_ERRNOS:
        return None
    target = f" {err.filename}" if err.filename else ""
    return StorageError(f"cannot write{target}: {err.strerror or err}. The run stopped; every file it saved before "
                        f"is intact (written atomically), so once there is space, continue it with: {resume}")


class JsonFileError(ValueError):
    """A file that is not the JSON object it should be; ``reason`` says why (without the path)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; a file that cannot be read, is empty, is not JSON or not an object
    raises :class:`JsonFileError` with the reason."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise JsonFileError(path, f"cannot be read ({type(err).__name__}: {err})") from None
    except json.JSONDecodeError as err:
        raise JsonFileError(path, "empty" if not path.stat().st_size else f"not valid JSON ({err.msg} at line "
                                  f"{err.lineno})") from None
    if not isinstance(value, dict):
        raise JsonFileError(path, f"a JSON {type(value).__name__}, not an object")
    return value
