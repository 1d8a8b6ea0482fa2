"""Trainer callbacks: features that hook into the training loop without branching through it.

The loop calls, in order: :meth:`Callback.on_train_start` once the model and optimizer exist (before a
resume loads saved state), :meth:`Callback.on_train_begin` once the state to continue from is loaded,
:meth:`Callback.on_step_end` after every optimizer step, :meth:`Callback.on_terms` with the mean
training terms whenever the loop reads them back from the device (every ``check_every`` steps),
:meth:`Callback.evaluation_weights` around each dev evaluation and best-checkpoint save,
:meth:`Callback.on_evaluate` with the epoch's history record, and :meth:`Callback.on_train_end` with the
final metrics (None when the run stopped early on an error or interrupt). :meth:`Callback.state_dict`
goes into the resumable state, so a resumed run continues every callback exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Callback:
    name = "callback"

    def on_train_start(self, trainer: Any) -> None:
        pass

    def on_train_begin(self, trainer: Any) -> None:
        pass

    def on_step_end(self, trainer: Any) -> None:
        pass

    def on_terms(self, trainer: Any, terms: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Any, metrics: dict[str, Any] | None) -> None:
        pass

    @contextlib.contextmanager
    def evaluation_weights(self, trainer: Any) -> Iterator[None]:
        yield

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Callbacks:
    """The run's callbacks, called in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def __iter__(self):
        return iter(self.callbacks)

    def on_train_start(self, trainer: Any) -> None:
        for callback in self.callbacks:
            callback.on_train_start(trainer)

    def on_train_begin(self, trainer: Any) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(trainer)

    def on_step_end(self, trainer: Any) -> None:
        for callback in self.callbacks:
            callback.on_step_end(trainer)

    def on_terms(self, trainer: Any, terms: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_terms(trainer, terms)

    def on_train_end(self, trainer: Any, metrics: dict[str, Any] | None) -> None:
        for callback in self.callbacks:
            callback.on_train_end(trainer, metrics)

    @contextlib.contextmanager
    def evaluation_weights(self, trainer: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for callback in self.callbacks:
                stack.enter_context(callback.evaluation_weights(trainer))
            yield

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_evaluate(trainer, record)

    @property
    def teacher(self):
        """The context of a teacher's weights (the EMA callback's), or None."""
        return next((c.teacher for c in self.callbacks if hasattr(c, "teacher")), None)

    def state_dict(self) -> dict[str, Any]:
        return {callback.name: callback.state_dict() for callback in self.callbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for callback in self.callbacks:
            if callback.name in state:
                callback.load_state_dict(state[callback.name])
