"""Batches: dynamic padding, length buckets, and sparse span labels made dense on the device."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from regner.data.features import Window


class LengthBucketSampler:
    """Shuffled batches of similar length: shuffle, cut into chunks of ``bucket_batches`` batches,
    sort each chunk by length, batch it, shuffle the batches. Padding waste drops sharply, and
    ``set_epoch`` keeps the order reproducible per epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_batches: int = 50):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.seed, self.bucket_batches, self.epoch = seed, bucket_batches, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(f"{self.seed}/{self.epoch}")
        if self.shuffle:
            rng.shuffle(order)
        chunk = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            batches.extend(part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size))
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def collate(windows: Sequence[Window], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest window; span labels stay sparse as rows (batch, type, start, end), each
    span once (the loss sums over distinct positive cells)."""
    length = max(len(w) for w in windows)
    input_ids = torch.full((len(windows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), length), dtype=torch.long)
    token_mask = torch.zeros((len(windows), length), dtype=torch.bool)
    rows = []
    for b, window in enumerate(windows):
        n = len(window)
        input_ids[b, :n] = torch.tensor(window.input_ids)
        attention_mask[b, :n] = 1
        token_mask[b, 1 : n - 1] = True
        rows.extend(sorted({(b, t, s, e) for t, s, e in window.spans}))
    spans = torch.tensor(rows, dtype=torch.long).reshape(-1, 4)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_mask": token_mask, "spans": spans}


def dense_targets(spans: torch.Tensor, batch_size: int, num_types: int, length: int,
                  device: torch.device | str) -> torch.Tensor:
    """The [batch, types, len, len] 0/1 target built on ``device`` with one scatter (the loss itself
    takes the sparse rows; this is for inspection and tests)."""
    target = torch.zeros((batch_size, num_types, length, length), dtype=torch.bool, device=device)
    if spans.numel():
        spans = spans.to(device)
        target[spans[:, 0], spans[:, 1], spans[:, 2], spans[:, 3]] = True
    return target
