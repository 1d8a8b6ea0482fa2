"""Semi-supervised consistency: each labeled step also backpropagates the regularizer's consistency term
on ``unlabeled.ratio`` (μ) unlabeled batches, before the one optimizer step.

The unlabeled batches come from :class:`UnlabeledStream`: a shuffled pass over the unlabeled windows,
reshuffled each pass, drawn with its own generator seeded from the run's seed and the pass number. So
the stream is independent of the labeled order and of every other random draw (dropout, VAT's start),
and its position — two integers kept in the trainer's saved state — is all a resumed run needs to
continue it exactly. With μ = 0 nothing here runs: training is the supervised code path, bit for bit.
"""

from __future__ import annotations

import logging
import math

import torch

from regner.config.validation import check_unlabeled
from regner.data.batching import collate
from regner.data.types import Example
from regner.inference.evaluation import encode_split, to_device
from regner.model.head import span_mask
from regner.regularizers.base import TrainingStep

log = logging.getLogger(__name__)

STREAM_SEED = 0x5EED  # mixed into the run's seed: the stream's draws are its own
RANK_STRIDE = 7919  # data parallel: rank r's stream is seeded seed + r · stride


class UnlabeledStream:
    """Batches of unlabeled windows, in an order fixed by (seed, pass), resumable from (pass, position)
    kept in the trainer's state (``state_of()``: the TrainState, which a resume replaces)."""

    def __init__(self, windows: list, batch_size: int, seed: int, pad_id: int, state_of):
        if not windows:
            raise ValueError("no unlabeled windows")
        self.windows, self.batch_size, self.seed, self.pad_id, self.state_of = windows, batch_size, seed, pad_id, state_of
        self._order: list[int] = []
        self._order_pass = -1

    def order(self, number: int) -> list[int]:
        """The window order of pass ``number`` (a permutation drawn from the stream's own generator)."""
        if self._order_pass != number:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + STREAM_SEED + number) % 2**63)
            self._order, self._order_pass = torch.randperm(len(self.windows), generator=generator).tolist(), number
        return self._order

    def next_indices(self) -> list[int]:
        state = self.state_of()
        size = min(self.batch_size, len(self.windows))
        indices = self.order(state.unlabeled_pass)[state.unlabeled_position:state.unlabeled_position + size]
        state.unlabeled_position += len(indices)
        if len(indices) < size:  # the pass ends inside this batch: the rest opens the next pass
            state.unlabeled_pass, state.unlabeled_position = state.unlabeled_pass + 1, size - len(indices)
            indices = indices + self.order(state.unlabeled_pass)[:size - len(indices)]
        elif state.unlabeled_position >= len(self.windows):
            state.unlabeled_pass, state.unlabeled_position = state.unlabeled_pass + 1, 0
        return indices

    def next_batch(self) -> dict[str, torch.Tensor]:
        return collate([self.windows[i] for i in self.next_indices()], pad_id=self.pad_id)


def build_stream(trainer) -> UnlabeledStream | None:
    """The unlabeled stream of ``trainer`` (None with μ = 0); checks that the regularizer has a label-free term."""
    cfg = trainer.cfg
    section = cfg.get("unlabeled") or {}
    ratio, texts = int(section.get("ratio") or 0), trainer.splits.unlabeled
    if ratio == 0:
        if texts:
            log.warning("%d unlabeled text(s) read but unlabeled.ratio=0: supervised training, they are not used",
                        len(texts))
        return None
    check_unlabeled(cfg, trainer.regularizer)  # as validate_config does (a Trainer may be built without it)
    encoded = encode_split("unlabeled", [Example(text, [], f"unlabeled:{i + 1}") for i, text in enumerate(texts)],
                           trainer.tokenizer, trainer.label2id, cfg.data, cfg.trainer.get("feature_cache"),
                           trainer.show_progress)
    batch_size = int(section.get("batch_size") or cfg.trainer.batch_size)
    threshold = section.get("threshold")
    log.info("semi-supervised: %d unlabeled batch(es) of %d per labeled batch, from %d windows, consistency weight "
             "× %g (%s), ramped up over %d step(s), %s", ratio, batch_size, len(encoded.windows),
             float(section.get("weight", 1.0)), trainer.regularizer.unlabeled_term, rampup_length(trainer),
             "every valid cell" if threshold is None else f"only cells with confidence ≥ {float(threshold):g}")
    # data parallel: each rank its own unlabeled batches (its own stream), positions kept alike in the state
    seed = int(cfg.seed) + RANK_STRIDE * trainer.dist.rank
    return UnlabeledStream(encoded.windows, batch_size, seed, trainer.pad_id, lambda: trainer.state)


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(−5 (1 − t)²) with t = min(1, step / length): the sigmoid-shaped ramp of Laine & Aila's temporal
    ensembling and the mean teacher, from exp(−5) ≈ 0.007 at step 0 to 1 at ``length`` (1 throughout when
    ``length`` is 0)."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, step / length))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def rampup_length(trainer) -> int:
    """``unlabeled.rampup_epochs`` in optimizer steps of this run (0: no ramp)."""
    epochs = float((trainer.cfg.get("unlabeled") or {}).get("rampup_epochs") or 0)
    return round(epochs * trainer.steps_per_epoch)


def unlabeled_terms(trainer, labeled: TrainingStep) -> dict[str, torch.Tensor]:
    """Backpropagate the consistency term of μ unlabeled batches (gradients add to the labeled step's),
    weighted by ``unlabeled.weight`` × the sigmoid ramp; returns their terms for the log (summed over the μ
    batches, the kept share of cells averaged)."""
    section = trainer.cfg.unlabeled
    ratio = int(section.ratio)
    multiplier = float(section.get("weight", 1.0)) * sigmoid_rampup(labeled.global_step, rampup_length(trainer))
    threshold = section.get("threshold")
    total: dict[str, torch.Tensor] = {}
    for _ in range(ratio):
        batch = to_device(trainer.unlabeled.next_batch(), trainer.device)
        step = TrainingStep(model=trainer.model, batch=batch, targets=None, mask=span_mask(batch["token_mask"]),
                            kl=labeled.kl, backward=labeled.backward, autocast=labeled.autocast,
                            grad_scale=labeled.grad_scale, epoch=labeled.epoch, global_step=labeled.global_step,
                            teacher=labeled.teacher, threshold=None if threshold is None else float(threshold),
                            **trainer.blockwise)
        for key, value in trainer.regularizer.unlabeled_step(step, multiplier).items():
            total[key] = total[key] + value if key in total else value
    if "unlabeled_kept" in total:
        total["unlabeled_kept"] = total["unlabeled_kept"] / ratio
    return total
