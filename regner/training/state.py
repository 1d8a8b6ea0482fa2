"""What an exact resume needs: the loop's position (:class:`TrainState`), every random state,
and the optimization state (weights, optimizer, scheduler, loss scaler)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    """Where training stands; saved with the optimizer so a run can resume mid-epoch."""

    epoch: int = 1
    batches_done: int = 0  # batches of ``epoch`` already trained
    global_step: int = 0
    train_tokens: int = 0
    train_time: float = 0.0
    wall_time: float = 0.0  # seconds of the run so far, every invocation's up to its last save (evaluation included)
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False  # early stopping decided: a resumed run must not train on
    unlabeled_pass: int = 0  # the unlabeled stream's pass and position in it (semi-supervised runs)
    unlabeled_position: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch's logged terms

    @property
    def epochs_done(self) -> int:
        return self.epoch - 1


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimization_state(model, optimizer, scheduler, scaler, **extra: Any) -> dict[str, Any]:
    """What an exact resume needs beside the loop's own position: weights, optimizer, scheduler,
    loss scaler and every random state (``extra`` adds the caller's own entries)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), **extra}


def load_optimization_state(saved: dict[str, Any], model, optimizer, scheduler, scaler) -> None:
    """Restore what :func:`optimization_state` saved (random states are the caller's: ranks differ)."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])


RANK_RNG = "last/rng_rank{rank}.pt"  # ranks > 0 keep their own random state for an exact resume


RANK_SEED_STRIDE = 1_000_003
