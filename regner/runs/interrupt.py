"""SIGTERM / SIGINT become a clean stop at the next step boundary.

A cluster scheduler sends SIGTERM before it kills a job; Ctrl-C sends SIGINT. The first signal only
sets a flag: the trainer saves its resumable state at the next step boundary, ``status.json`` says
``interrupted`` with the exact command that resumes the run, and the process exits with 128 +
the signal number (143 for SIGTERM, 130 for SIGINT). A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """Training stopped on a signal after saving its resumable state."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; the resumable state was saved")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Set by the first SIGTERM/SIGINT; read by the training loop at step boundaries."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        self.signum = signum


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Install the two-stage handlers for the block (main thread only; elsewhere a no-op flag)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag:
            log.warning("second %s: stopping now, without saving", signal.Signals(signum).name)
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        flag.request(signum)
        log.warning("received %s: saving the resumable state at the next step boundary, then stopping "
                    "(send it again to stop at once)", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
