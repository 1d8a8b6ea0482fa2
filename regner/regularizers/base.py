"""The one interface every regularizer implements.

A regularizer owns the forward/backward work of a training step (FGM needs two backward passes,
gradient penalty a second-order one), so :meth:`Regularizer.step` receives a :class:`TrainingStep`
with everything it may need and calls ``step.backward`` itself. It returns the terms it computed,
detached, for logging: always ``loss`` and ``ce``, plus its own extra term(s).

Adversarial regularizers (FGM, PGD, AWP) subclass :class:`Adversarial`: they act *after* a clean
backward, from the gradients it left, and so can follow any other regularizer's step in a
:class:`~regner.regularizers.stack.Stack` (R-Drop + FGM: one clean pass with its KL, then the
adversarial pass).

Adding a regularizer: subclass :class:`Regularizer` (or :class:`Adversarial`) in a new module and add
a YAML file under ``conf/regularizer/`` whose ``_target_`` names the class; Hydra instantiates it
with the YAML keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from regner.model.blockwise import (
    SpanField,
    blockwise_crossentropy,
    blockwise_globalpointer_kl,
    blockwise_rdrop,
    use_blockwise,
)
from regner.model.loss import multilabel_crossentropy, positive_rows
from regner.model.numerics import at_least_fp32
from regner.regularizers.kl import globalpointer_kl


@dataclass
class TrainingStep:
    """One batch on the device, plus the model and the machinery a regularizer may use."""

    model: Any
    batch: dict[str, torch.Tensor]
    targets: torch.Tensor  # positive spans: sparse rows [N, 4] (batch, type, start, end), or a dense [B, T, L, L] bool
    mask: torch.Tensor  # [B, 1, L, L] bool, valid spans
    kl: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor], None] = field(default=lambda loss: loss.backward())
    autocast: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext)
    grad_scale: float = 1.0  # loss scale applied by ``backward`` (fp16 GradScaler), 1 otherwise
    epoch: int = 1  # the training epoch this step belongs to (1-based), for schedules such as AWP's start_epoch
    global_step: int = 0  # optimizer steps taken before this one, for schedules such as a consistency ramp-up
    # a context in which the model holds a teacher's weights (mean teacher: the EMA), None where there is none
    teacher: Callable[[], contextlib.AbstractContextManager] | None = None
    # unlabeled batches: keep only the cells whose reference probability is >= this or <= 1 - this (None: all)
    threshold: float | None = None
    kept: torch.Tensor | None = None  # the share of valid cells the threshold kept, set by consistency_mask
    # head.blockwise: the model hands over SpanFields, and CE, the per-logit KL and R-Drop's pair run block by
    # block (regner/model/blockwise.py) over block_rows start rows (None: automatic); the rest uses .dense()
    blockwise: bool | str = False  # true, false, or "auto" (decided by this batch's length: use_blockwise)
    block_rows: int | None = None
    plain_mask: torch.Tensor | None = None  # the valid-span mask this step was made with (``mask`` may narrow)

    def __post_init__(self):
        if self.plain_mask is None:
            self.plain_mask = self.mask
        if self.blockwise == "auto":
            self.blockwise = use_blockwise(self.blockwise, self.input_ids.shape[-1])
        raw = getattr(self.kl, "raw", self.kl)  # a KL that another step wrapped for itself: this step's own
        self.kl = _field_kl(raw, self) if self.blockwise else raw

    @property
    def input_ids(self) -> torch.Tensor:
        return self.batch["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.batch["attention_mask"]

    def embed(self) -> torch.Tensor:
        """The embedding output (word embeddings fed to the encoder) for this batch."""
        return self.model.embed(self.input_ids)

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    @property
    def mixed_precision(self) -> bool:
        """True when the encoder runs under autocast (bf16/fp16)."""
        return self.autocast is not contextlib.nullcontext

    @property
    def token_mask(self) -> torch.Tensor:
        return self.batch["token_mask"]

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None, dense: bool = False) -> torch.Tensor | SpanField:
        """The model under the training precision: its scores, or with ``blockwise`` their SpanField
        (``dense=True``: the dense scores even then, for the exact gradient penalty's double backward)."""
        extra = {"field": True} if self.blockwise and not dense else {}
        if inputs_embeds is not None:
            extra["inputs_embeds"] = inputs_embeds
        with self.autocast():
            return self.model(input_ids, attention_mask, **extra)

    def scores(self, inputs_embeds: torch.Tensor | None = None, dense: bool = False) -> torch.Tensor | SpanField:
        return self.forward(self.input_ids if inputs_embeds is None else None, self.attention_mask, inputs_embeds,
                            dense)

    def fp32_scores(self, inputs_embeds: torch.Tensor) -> torch.Tensor | SpanField:
        """The scores with autocast off: the whole model in (at least) fp32, whatever the precision."""
        extra = {"field": True} if self.blockwise else {}
        with torch.autocast(self.device.type, enabled=False):
            return self.model(None, self.attention_mask, inputs_embeds=inputs_embeds, **extra)

    def doubled_rows(self) -> torch.Tensor:
        """The positive rows of the batch run twice ([2B, ...]): this batch's, then shifted by B."""
        rows = positive_rows(self.targets)
        return torch.cat((rows, rows + torch.tensor([self.input_ids.shape[0], 0, 0, 0], device=rows.device)))

    def ce(self, scores: torch.Tensor | SpanField, doubled: bool = False) -> torch.Tensor:
        """The CE of ``scores``; ``doubled=True`` for scores of the batch run twice ([2B, ...]): the
        mean CE of both halves in one call (the gradient lands in one tensor, no slicing)."""
        if isinstance(scores, SpanField):
            tokens = torch.cat((self.token_mask, self.token_mask)) if doubled else self.token_mask
            return blockwise_crossentropy(scores, self.doubled_rows() if doubled else self.targets, tokens,
                                          self.block_rows)
        if not doubled:
            return multilabel_crossentropy(scores, self.targets, self.mask)
        return multilabel_crossentropy(scores, self.doubled_rows(), torch.cat((self.mask, self.mask)))

    def pair_terms(self, scores: torch.Tensor | SpanField) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean CE of both halves, D(first half, second half)) of the scores of the batch run twice: R-Drop's
        and consistent noise's two terms; one fused blockwise pass where the divergence is the per-logit KL."""
        if isinstance(scores, SpanField) and _is_globalpointer_kl(self.kl):
            return blockwise_rdrop(scores, self.doubled_rows(), self.token_mask, _reduction(self.kl), self.block_rows)
        first, second = scores.chunk(2)
        return self.ce(scores, doubled=True), self.kl(first, second, self.mask)

    def consistency_mask(self, reference: torch.Tensor) -> torch.Tensor:
        """The cells a consistency term of this batch is taken over: every valid span, or, with ``threshold``
        τ, only those where the reference scores are confident either way, σ(s) ≥ τ or σ(s) ≤ 1 − τ (the
        per-logit Bernoulli reading of FixMatch's confidence mask; the mean is over the kept cells, as in
        UDA). Records the kept share in ``kept``."""
        if self.threshold is None:
            return self.mask
        if isinstance(reference, SpanField):
            reference = reference.dense()  # a mask that depends on the scores: the dense KL takes it
        probability = torch.sigmoid(at_least_fp32(reference.detach()))
        confident = (probability >= self.threshold) | (probability <= 1.0 - self.threshold)
        kept = self.mask & confident
        self.kept = kept.sum() / self.mask.expand_as(kept).sum().clamp_min(1)
        return kept

    def padding_mask(self, like: torch.Tensor) -> torch.Tensor:
        """[B, L, 1] float mask of real positions, to keep perturbations off padding."""
        return self.attention_mask.to(like.dtype).unsqueeze(-1)


def _reduction(kl: Callable) -> str:
    return getattr(getattr(kl, "raw", kl), "keywords", {}).get("reduction", "mean")


def _is_globalpointer_kl(kl: Callable) -> bool:
    raw = getattr(kl, "raw", kl)
    return getattr(raw, "func", raw) is globalpointer_kl


def _field_kl(kl: Callable, step: TrainingStep) -> Callable:
    """``kl`` for SpanFields: the blockwise per-logit KL over the step's valid spans; any other divergence, or
    a narrowed mask (a confidence threshold), on the dense scores."""

    def divergence(s, t, mask):
        fields = isinstance(s, SpanField), isinstance(t, SpanField)
        if all(fields) and mask is step.plain_mask and _is_globalpointer_kl(kl):
            return blockwise_globalpointer_kl(s, t, step.token_mask, _reduction(kl), step.block_rows)
        if any(fields):
            s, t = (x.dense() if isinstance(x, SpanField) else x for x in (s, t))
        return kl(s, t, mask)

    divergence.raw = kl
    return divergence


class DropoutState:
    """A snapshot of the random-number state that dropout draws from. Every forward run inside
    :meth:`replay` draws exactly the dropout masks of the forward that followed the snapshot (same
    shapes, same order of random draws), so several passes can see *one* function of their input;
    the global random state is left as it was, so training continues as if no replay happened."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def per_sample_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / ‖x‖ with the L2 norm taken over each sample (all but the batch dimension)."""
    norm = x.flatten(1).norm(dim=1).clamp_min(eps)
    return x / norm.view(-1, *([1] * (x.dim() - 1)))


def per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖ per sample, shaped to broadcast against x."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


# A perturbation counts as outside its ball only beyond this relative margin, so that a step of
# exactly the radius (PGD with one step of size ε) is not rescaled by a rounding error.
BALL_TOLERANCE = 1e-6


def project_to_ball(delta: torch.Tensor, radius: torch.Tensor | float, norm: torch.Tensor | None = None) -> torch.Tensor:
    """``delta`` pulled back onto the ball of ``radius`` when it lies outside (by more than the
    tolerance); ``norm`` is ‖delta‖ in whatever grouping the ball uses (global, or per sample)."""
    norm = delta.norm() if norm is None else norm
    radius = torch.as_tensor(radius, dtype=norm.dtype, device=norm.device)
    outside = norm > radius * (1 + BALL_TOLERANCE)
    return delta * torch.where(outside, radius / norm.clamp_min(1e-30), torch.ones_like(norm))


def unit_step(grad: torch.Tensor, size: torch.Tensor | float) -> torch.Tensor:
    """size · g/‖g‖ over the whole tensor, without a host sync: zero when ‖g‖ is zero or not finite."""
    norm = grad.norm()
    scale = torch.where(torch.isfinite(norm) & (norm > 0), size / norm, torch.zeros_like(norm))
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0) * scale


def used_rows_norm(step: TrainingStep, weight: torch.Tensor) -> torch.Tensor:
    """‖rows of the embedding matrix used by the batch's real tokens‖ (padding and the PAD row
    excluded), without a host sync: what a relative ε of the word-embedding weights is relative to."""
    present = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    present.scatter_reduce_(0, step.input_ids.flatten(), step.attention_mask.flatten().to(weight.dtype),
                            reduce="amax")
    return (weight.detach().pow(2).sum(-1) * present).sum().sqrt()


class Regularizer:
    """Base class: plain training. Subclasses override :meth:`step`."""

    name = "none"
    uses_kl = False  # whether the ``kl`` choice changes what this regularizer computes

    def __init__(self, name: str | None = None, **knobs: Any):
        if name is not None:
            self.name = name
        if knobs:
            raise TypeError(f"regularizer {self.name!r} got unknown options {sorted(knobs)}")

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        ce = step.ce(step.scores())
        step.backward(ce)
        return {"loss": ce.detach(), "ce": ce.detach()}

    def __repr__(self) -> str:
        knobs = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in knobs.items())})"


def rampup_factor(global_step: int, rampup_steps: int) -> float:
    """The linear ramp-up of a consistency weight: (step + 1) / rampup_steps for the first
    ``rampup_steps`` optimizer steps, then 1 (always 1 when ``rampup_steps`` is 0)."""
    if rampup_steps <= 0:
        return 1.0
    return min(1.0, (global_step + 1) / rampup_steps)


class Consistency(Regularizer):
    """A regularizer whose extra term is a consistency (agreement) term with weight ``alpha``, which
    ramps up linearly over the first ``rampup_steps`` optimizer steps (alpha/N at the first, alpha from
    the N-th on; the YAML default is 100, the class default 0 = no ramp). Early in training, when
    the head has learnt nothing yet, the cheapest way for two outputs to agree is to predict no span
    at all; a large weight at step 0 can lock a model there (F1 0), a ramped one lets the CE lead first."""

    uses_kl = True

    def __init__(self, alpha: float = 100.0, rampup_steps: int = 0, name: str | None = None):
        super().__init__(name)
        self.alpha, self.rampup_steps = float(alpha), int(rampup_steps)

    def weight(self, step: TrainingStep) -> float:
        """``alpha`` × the ramp-up factor at this step."""
        return self.alpha * rampup_factor(step.global_step, self.rampup_steps)

    #: the name of the label-free term (None: this regularizer has none and cannot use unlabeled text)
    unlabeled_term: str | None = None

    def consistency(self, step: TrainingStep) -> torch.Tensor:
        """The consistency term alone, on a batch without labels (``step.targets`` is unused)."""
        raise NotImplementedError

    def unlabeled_step(self, step: TrainingStep, multiplier: float = 1.0) -> dict[str, torch.Tensor]:
        """Semi-supervised: ``multiplier`` × the (ramped) weight × the consistency term of an unlabeled
        batch, backpropagated onto the gradients of the labeled step (no CE: there is no label)."""
        term = self.consistency(step)
        loss = multiplier * self.weight(step) * term
        step.backward(loss)
        terms = {"loss": loss.detach(), f"unlabeled_{self.unlabeled_term}": term.detach()}
        if step.kept is not None:
            terms["unlabeled_kept"] = step.kept.detach()
        return terms


class Adversarial(Regularizer):
    """A regularizer that adds passes after a clean backward, computed from the gradients it left.

    :meth:`attack` runs once ``step.backward`` has put the clean loss's gradients into ``.grad``;
    it adds its own backward(s) onto them, restores every weight it touched, and returns the
    loss it added (``loss``) and its own terms. On its own, :meth:`step` is plain CE + attack; in a
    :class:`~regner.regularizers.stack.Stack` the clean pass is another regularizer's step.
    """

    stackable = True  # False where the attack needs state of the clean pass (FGM/PGD on the embedding output)

    def attack(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        ce = step.ce(step.scores())
        step.backward(ce)
        terms = self.attack(step)
        added = terms.pop("loss")
        return {"loss": (ce + added).detach(), "ce": ce.detach(), **terms}
