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
    log.info("semi-supervised: %d unlabeled batch(es) of %d per labeled batch, from %d windows, consistency weight "
             "× %g (%s)", ratio, batch_size, len(encoded.windows), float(section.get("weight", 1.0)),
             trainer.regularizer.unlabeled_term)
    # data parallel: each rank its own unlabeled batches (its own stream), positions kept alike in the state
    seed = int(cfg.seed) + RANK_STRIDE * trainer.dist.rank
    return UnlabeledStream(encoded.windows, batch_size, seed, trainer.pad_id, lambda: trainer.state)


def unlabeled_terms(trainer, labeled: TrainingStep) -> dict[str, torch.Tensor]:
    """Backpropagate the consistency term of μ unlabeled batches (gradients add to the labeled step's);
    returns their summed terms for the log."""
    section = trainer.cfg.unlabeled
    multiplier, total = float(section.get("weight", 1.0)), {}
    for _ in range(int(section.ratio)):
        batch = to_device(trainer.unlabeled.next_batch(), trainer.device)
        step = TrainingStep(model=trainer.model, batch=batch, targets=None, mask=span_mask(batch["token_mask"]),
                            kl=labeled.kl, backward=labeled.backward, autocast=labeled.autocast,
                            grad_scale=labeled.grad_scale, epoch=labeled.epoch, global_step=labeled.global_step,
                            teacher=labeled.teacher)
        for key, value in trainer.regularizer.unlabeled_step(step, multiplier).items():
            total[key] = total[key] + value if key in total else value
    return total
