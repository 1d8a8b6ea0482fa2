"""Where and how a run computes: device, mixed precision, seeds and memory figures."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import resource
import time
from functools import partial

import numpy as np
import torch

from regner.errors import UserError

log = logging.getLogger("regner")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(UserError):
    """The requested device is not available."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_deterministic(enabled: bool) -> None:
    """``trainer.deterministic``: deterministic kernels only (``torch.use_deterministic_algorithms``, warning where
    an op has none), cuDNN autotuning off, and cuBLAS's fixed-size workspace (``CUBLAS_WORKSPACE_CONFIG``, which
    cuBLAS reads when the process first uses it: set it before that, as ``scripts/device_check.sh`` does, for a
    process that ran CUDA matmuls already). On CPU regner's kernels are deterministic anyway."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores(cores: set[int], window_s: float = 0.5) -> tuple[float, str]:
    """How many of ``cores`` other processes keep busy now: from /proc/stat over ``window_s`` (this
    process sleeps meanwhile, so it does not count itself), else from the 1-minute load average."""
    try:
        first = _cpu_times(cores)
        time.sleep(window_s)
        second = _cpu_times(cores)
    except (OSError, ValueError):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return load, f"load average {load:.2f}"
    busy = 0.0
    for cpu, (idle, total) in second.items():
        idle0, total0 = first.get(cpu, (idle, total))
        if total > total0:
            busy += 1 - (idle - idle0) / (total - total0)
    return busy, f"{busy:.1f} of them busy with other work"


def _cpu_times(cores: set[int]) -> dict[int, tuple[int, int]]:
    """(idle + iowait, total) jiffies of each CPU in ``cores``, from /proc/stat."""
    times = {}
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                values = [int(x) for x in fields[:8]]
                times[int(name[3:])] = (values[3] + values[4], sum(values))
    if not times:
        raise ValueError("no per-CPU lines in /proc/stat")
    return times


def auto_threads() -> tuple[int, str]:
    """Threads for torch on this machine now: the cores this process may use minus those other work
    keeps busy, at least 1; and how that was decided, for the log. All cores on a busy machine
    oversubscribe it: OpenMP threads then wait for a descheduled peer at every parallel region
    (measured: a 2-core machine with one other job ran the default run 12× slower)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = max(1, len(allowed))
    busy, why = busy_cores(set(allowed))
    taken = min(cores - 1, int(busy + 0.5))
    return max(1, cores - taken), f"{cores} core(s) available, {why}"


def set_threads(value, key: str) -> int:
    """Apply ``key``'s thread setting (``auto``, a positive integer, or null for torch's own default)
    and log the count in use; returns it."""
    if value == "auto":
        threads, why = auto_threads()
        torch.set_num_threads(threads)
        log.info("%s=auto: %d CPU thread(s) (%s; set %s=N to fix it)", key, threads, why, key)
    elif value:
        torch.set_num_threads(int(value))
    return torch.get_num_threads()
