"""Progress bars (rich, on stderr) for every step that can take more than a few seconds.

One live display per process: a step started inside another (evaluating dev inside a training run,
tokenising inside ``regner predict``) adds its bar to the display already on screen, because rich
shows one live display at a time. Nothing is drawn when stderr is not a terminal (logs and CI stay
clean) or when the command's switch (``trainer.progress``, ``pretrain.progress``) is off. stdout
never carries a bar: it is where results go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_display = None  # the live rich Progress, while one is on screen


def _new_display():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                    console=console)


@contextlib.contextmanager
def display(enabled: bool = True) -> Iterator[Any]:
    """The live display for a command's steps (the enclosing one if a display is already up); yields
    the rich Progress, or None when nothing is drawn."""
    global _display
    if not enabled or _display is not None:
        yield _display if enabled else None
        return
    bar = _new_display()
    if bar is None:
        yield None
        return
    _display = bar
    try:
        with bar:
            yield bar
    finally:
        _display = None


class Step:
    """One bar: ``advance(n)`` moves it, ``info(text)`` sets the text after the count."""

    def __init__(self, bar, task_id):
        self._bar, self._task = bar, task_id

    def advance(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def info(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, info=text)


@contextlib.contextmanager
def step(description: str, total: float | None = None, enabled: bool = True, completed: float = 0) -> Iterator[Step]:
    """A bar for one step (``total`` None: a spinner, for steps of unknown length); removed when the
    step ends."""
    with display(enabled) as bar:
        if bar is None:
            yield Step(None, None)
            return
        task_id = bar.add_task(description, total=total, completed=completed, info="")
        try:
            yield Step(bar, task_id)
        finally:
            bar.remove_task(task_id)

