"""Where and how a run computes: device, mixed precision, seeds and memory figures."""

from __future__ import annotations

import contextlib
import random
import resource
from functools import partial

import numpy as np
import torch

from regner.errors import UserError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(UserError):
    """The requested device is not available."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """The device ``name`` (auto, cpu, mps, cuda, cuda:N); ``key`` is how the user set it (named in the error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{key}={name} but CUDA is not available here; use {key}=cpu or auto")
    return device


def autocast_factory(device: torch.device, precision: str):
    """A zero-argument context-manager factory for the configured mixed precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors since the run started; None on CPU, where the only
    figure is the process's max RSS, which a multirun sweep (jobs share a process) cannot attribute
    to one job (reported separately as ``process_max_rss_mb``)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def process_max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
