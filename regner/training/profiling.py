"""Deterministic peak-memory accounting for tensors, on any device (the CPU included).

``torch.cuda.max_memory_allocated`` only exists on CUDA and the process RSS mixes in the allocator's
caching, so the loss-memory benchmark and its test count tensor storages instead: every storage an
op creates while :class:`TensorMemoryTracker` is active is added when it appears and removed when
it is freed (its Python storage object is kept alive by PyTorch exactly as long as the storage, so
a weak reference tells when the memory goes, including tensors that autograd saved for backward).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemoryTracker(TorchDispatchMode):
    """``with TensorMemoryTracker() as mem: ...`` then ``mem.peak_bytes``: the largest total size of
    storages created inside the block that were alive at the same time (inputs made before the
    block are not counted)."""

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._seen: set[int] = set()
        self._foreign: set[int] = set()  # storages made before the block (inputs): views of them are free

    def _freed(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for tensor in tree_leaves((args, kwargs)):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                key = tensor.untyped_storage()._cdata
                if key not in self._seen:
                    self._foreign.add(key)
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in self._seen or key in self._foreign:
                continue
            self._seen.add(key)
            nbytes = storage.nbytes()
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(storage, self._freed, key, nbytes)
        return out
