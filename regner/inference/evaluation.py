"""Scoring a model: encode a split into windows, predict every window, merge, compare with gold.

Shared by training (dev/test each epoch), ``regner evaluate`` and ``regner predict``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from regner.data.batching import LengthBucketSampler, collate
from regner.data.features import EncodingStats, Window, encode_examples_cached
from regner.data.types import Example
from regner.inference.metrics import seqeval_report, span_scores
from regner.model.blockwise import blockwise_decode, use_blockwise
from regner.model.decoding import decode_scores, merge_window_predictions
from regner.model.head import span_mask
from regner.model.span_model import SpanModel
from regner.runs.progress import step


@dataclass
class EncodedSplit:
    examples: list[Example]
    windows: list[Window]
    stats: EncodingStats


def encode_split(name: str, examples: list[Example], tokenizer, label2id, cfg, cache_dir: str | None = None,
                 progress: bool = True) -> EncodedSplit:
    with step(f"tokenising {name}", total=len(examples), enabled=progress) as bar:
        windows, stats = encode_examples_cached(examples, tokenizer, label2id, cfg.max_length, cfg.window_overlap,
                                                cache_dir, on_chunk=bar.advance)
    stats.report(name)
    return EncodedSplit(examples, windows, stats)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: SpanModel, windows: list[Window], device: torch.device, batch_size: int,
            threshold: float = 0.0, autocast=contextlib.nullcontext, pad_id: int = 0,
            description: str = "predicting", progress: bool = True, blockwise: bool | str = False,
            block_rows: int | None = None):
    """(type, start, end, score) per window, batches sorted by length for speed; ``blockwise`` (true, or ``auto``
    for batches of long windows): the scores are thresholded block by block of start rows
    (regner/model/blockwise.py), never held whole."""
    model.eval()
    found: list[list[tuple[int, int, int, float]]] = [[] for _ in windows]
    sampler = LengthBucketSampler([len(w) for w in windows], batch_size, shuffle=False)
    with step(description, total=len(windows), enabled=progress) as bar:
        for indices in sampler:
            batch = to_device(collate([windows[i] for i in indices], pad_id), device)
            field = use_blockwise(blockwise, batch["input_ids"].shape[-1])
            with autocast():
                scores = model(batch["input_ids"], batch["attention_mask"], **({"field": True} if field else {}))
            rows = (blockwise_decode(scores, batch["token_mask"], threshold, block_rows) if field else
                    decode_scores(scores.float(), span_mask(batch["token_mask"]), threshold))
            for i, row in zip(indices, rows):
                found[i] = row
            bar.advance(len(indices))
    return found


def evaluate(model: SpanModel, split: EncodedSplit, device: torch.device, batch_size: int,
             threshold: float = 0.0, autocast=contextlib.nullcontext, pad_id: int = 0, with_seqeval: bool = False,
             name: str = "", progress: bool = True, blockwise: bool | str = False, block_rows: int | None = None):
    """Entity scores of ``split`` against its gold, plus the merged predictions per example."""
    found = predict(model, split.windows, device, batch_size, threshold, autocast, pad_id,
                    f"evaluating {name}".strip(), progress, blockwise, block_rows)
    merged = merge_window_predictions(split.windows, found, model.labels, len(split.examples))
    scores = span_scores([ex.entities for ex in split.examples], [list(m) for m in merged], model.labels)
    if with_seqeval:
        scores["seqeval"] = seqeval_report(split.examples, merged)
    return scores, merged


