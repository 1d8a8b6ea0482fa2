"""Run directories: one process per directory, no run ever overwrites another.

A process that trains into a directory holds an exclusive ``flock`` on ``<run dir>/.regner.lock``
(the file also names the PID, host and command, for the message a second process gets). The
kernel drops the lock when the process dies, so a lock file left by a killed process is *stale*:
it is detected (the lock is free) and taken over. Checks happen before anything is written, so a
rejected start or resume leaves the target exactly as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from regner.errors import RunDirError
from regner.runs.io import METRICS_FILE, STATUS_FILE

log = logging.getLogger(__name__)

LOCK_FILE = ".regner.lock"
LAST_STATE = "last/trainer_state.pt"
RUN_FILES = (STATUS_FILE, METRICS_FILE, "config.yaml", "history.jsonl", "checkpoint", "last")


def _owner(path: Path) -> dict:
    """The JSON object in ``path`` ({} when it is missing, unreadable or not an object)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process"
    return f"process {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')}: {owner.get('command')})"


@dataclass
class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` or the process ends."""

    run_dir: Path
    _fd: int | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_FILE

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirError(
                    f"{self.run_dir} is in use by {_describe(_owner(self.path))}. Two processes never share a run "
                    "directory: wait for it to finish, or choose another hydra.run.dir") from None
            # The file may have been removed (released) between open and lock: then lock the new one.
            if os.path.exists(self.path) and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                break
            os.close(fd)
        previous = _owner(self.path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.warning("%s: taking over a stale lock left by %s, which no longer holds it", self.run_dir,
                        _describe(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(["regner", *sys.argv[1:]])[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def lock_holder(run_dir: Path) -> dict | None:
    """Who holds ``run_dir``'s lock (their lock-file record), or None when nobody does."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _owner(path) or {"pid": None}
    finally:
        os.close(fd)
    return None


def run_status(run_dir: Path) -> str | None:
    """``status`` of ``status.json`` (None when there is none or it is unreadable)."""
    return _owner(Path(run_dir) / STATUS_FILE).get("status")


def holds_a_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def check_resumable(run_dir: Path) -> None:
    """Raise RunDirError unless ``run_dir`` is an unfinished regner run that nobody is training."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"cannot resume {run_dir}: no such directory")
    if not (run_dir / "config.yaml").exists():
        raise RunDirError(f"cannot resume {run_dir}: not a regner run directory (no config.yaml)")
    holder = lock_holder(run_dir)
    if holder is not None:
        raise RunDirError(f"cannot resume {run_dir}: it is still being trained by {_describe(holder)}")
    if run_status(run_dir) == "completed":
        raise RunDirError(f"cannot resume {run_dir}: this run has already completed (see its metrics.json); "
                          "start a new run instead")


def latest_unfinished_run(root: Path = Path("outputs"), skip_locked: bool = True) -> Path:
    """Most recent run under ``root`` that saved resumable state, did not complete and (with
    ``skip_locked``) is not being trained by another process."""
    candidates, busy = [], 0
    for status_file in Path(root).glob("**/" + STATUS_FILE):
        run_dir = status_file.parent
        state = run_dir / LAST_STATE
        if not state.exists() or run_status(run_dir) == "completed":
            continue
        if skip_locked and lock_holder(run_dir) is not None:
            busy += 1
            continue
        candidates.append((state.stat().st_mtime, str(run_dir)))
    if not candidates:
        extra = f" ({busy} unfinished run(s) are still being trained by other processes)" if busy else ""
        raise RunDirError(f"trainer.resume=true but no unfinished run with saved state was found under {root}{extra}")
    return Path(max(candidates)[1])


@dataclass
class Claim:
    """A run directory this process now owns (locked), or a completed one to skip."""

    run_dir: Path
    lock: RunLock | None
    skip: bool = False

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def claim_new_run_dir(run_dir: Path, explicit: bool, skip_completed: bool = False) -> Claim:
    """Lock ``run_dir`` for a new run. If it already holds a run: a sweep job whose run completed is
    skipped (``skip_completed``); a directory the user named is refused; a directory Hydra derived
    from the clock (two runs started in the same second) moves on to ``<dir>-2``, ``<dir>-3``, ..."""
    base = Path(run_dir)
    for attempt in range(1, 1000):
        candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            lock = RunLock(candidate).acquire()
        except RunDirError:
            if explicit:
                raise
            continue
        if not holds_a_run(candidate):
            return Claim(candidate, lock)
        status = run_status(candidate)
        if skip_completed and status == "completed":
            lock.release()
            return Claim(candidate, None, skip=True)
        if explicit:
            lock.release()
            raise RunDirError(
                f"{candidate} already holds a run (status: {status or 'unknown'}); a new run never overwrites "
                f"another. Choose another directory, or continue that run with: regner train resume={candidate.resolve()}")
        lock.release()
    raise RunDirError(f"no free run directory next to {base}")


def check_creatable(run_dir: Path, key: str = "hydra.run.dir") -> None:
    """Refuse a run directory that cannot become one: it (or a parent) is a file, or the nearest
    existing parent is not writable. Checked before Hydra creates it (Hydra's own error is a traceback)."""
    run_dir = Path(run_dir).expanduser()
    for path in (run_dir, *run_dir.parents):
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{key}={run_dir} cannot be a run directory: {path} is a file. Choose another directory")
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise RunDirError(f"{key}={run_dir} cannot be created: {path} is not writable by this user. Choose "
                                  "another directory")
            return
