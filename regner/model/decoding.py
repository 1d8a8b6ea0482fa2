"""Scores to entities: threshold the valid spans, map to characters, merge windows."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regner.data.features import Window, token_to_char_span
from regner.data.types import Entity


def decode_scores(scores: torch.Tensor, mask: torch.Tensor, threshold: float = 0.0) -> list[list[tuple[int, int, int, float]]]:
    """(type, start, end, score) per batch row for every valid span scoring above ``threshold``."""
    hits = torch.nonzero((scores > threshold) & mask)  # [N, 4]
    values = scores[tuple(hits.unbind(-1))]
    found: list[list[tuple[int, int, int, float]]] = [[] for _ in range(scores.shape[0])]
    # one transfer for the indices and one for the scores, not one per span
    for (b, t, s, e), value in zip(hits.tolist(), values.tolist()):
        found[b].append((t, s, e, value))
    return found


def merge_window_predictions(
    windows: Sequence[Window], predictions: Sequence[Sequence[tuple[int, int, int, float]]],
    labels: Sequence[str], n_examples: int,
) -> list[dict[Entity, float]]:
    """Union of the windows' character-level entities per example, keeping each one's best score."""
    merged: list[dict[Entity, float]] = [{} for _ in range(n_examples)]
    for window, found in zip(windows, predictions):
        target = merged[window.example_index]
        for t, s, e, score in found:
            a, b = token_to_char_span(window.offsets, s, e)
            if a >= b:
                continue
            entity = Entity(a, b, labels[t])
            if score > target.get(entity, float("-inf")):
                target[entity] = score
    return merged
