"""Virtual adversarial training (Miyato et al., 2018) on the embedding output.

Start from a random unit direction d (per sample, zero on padding); K power-iteration steps replace
d by the normalised gradient of D(s, s(e + ξd)), which turns d toward the direction the predictions
are most sensitive to (the top eigenvector of D's Hessian at d = 0). The penalty is
w · D(s.detach(), s(e + ε·d)) with the chosen KL, added to the clean CE; the clean forward is
reused for both the CE and the reference scores. The weight w ramps linearly from 0 to ``alpha``
over the first ``rampup_steps`` optimizer steps.

**One function for all passes.** Power iteration relies on D(s, s(e + ξd)) ≈ ½ξ²·dᵀHd, which holds
only if D is exactly 0 at d = 0. With dropout, every forward draws new masks, so D(s, s(e)) > 0 and
its first-order term swamps the curvature term: the "direction" would just be the gradient of a
dropout disagreement, the same whatever the random start, and part of the penalty a one-sided
R-Drop. So the clean, the power-iteration and the adversarial passes all replay **one dropout mask**
(:class:`~regner.regularizers.base.DropoutState`): dropout still regularizes the training passes,
and D(s, s(e)) is exactly 0.

**Direction search in fp32.** The finite-difference step ξ is tiny; in bf16 about half the span
scores do not move at all under it and the found direction is mostly rounding noise. The power
iteration therefore runs with autocast off (its reference scores too, recomputed in fp32 when
training in bf16/fp16), which also makes fp16 loss scaling unnecessary there. Only the final
adversarial pass runs under the training precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from regner.regularizers.base import (
    Consistency,
    DropoutState,
    TrainingStep,
    per_sample_norm,
    per_sample_normalize,
)


def adversarial_direction(
    distance: Callable[[torch.Tensor], torch.Tensor],
    initial: torch.Tensor,
    xi: float,
    iterations: int,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Power iteration: ``distance(r)`` maps a perturbation to a scalar divergence that is 0 at
    r = 0; returns the per-sample unit direction after ``iterations`` steps. ``keep`` zeroes
    masked positions."""
    keep = torch.ones_like(initial) if keep is None else keep
    direction = per_sample_normalize(initial * keep)
    for _ in range(iterations):
        direction = direction.detach().requires_grad_()
        (grad,) = torch.autograd.grad(distance(xi * direction), direction)
        direction = per_sample_normalize(grad * keep)
    return direction.detach()


class VAT(Consistency):
    name = "vat"
    unlabeled_term = "vat_kl"

    def __init__(self, alpha: float = 100.0, epsilon: float = 0.05, xi: float = 1e-3, power_iterations: int = 1,
                 relative: bool = True, rampup_steps: int = 0, name: str | None = None):
        super().__init__(alpha, rampup_steps, name)
        self.epsilon, self.xi = float(epsilon), float(xi)
        self.power_iterations, self.relative = int(power_iterations), relative

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        embeds = step.embed()
        dropout = DropoutState(step.device)
        with dropout.replay():
            clean = step.scores(inputs_embeds=embeds)
        ce = step.ce(clean)
        adversarial = self._adversarial(step, embeds, clean.detach(), dropout)
        loss = ce + self.weight(step) * adversarial
        step.backward(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "vat_kl": adversarial.detach()}

    def consistency(self, step: TrainingStep) -> torch.Tensor:
        """The adversarial KL at the batch's own prediction (no label needed: Miyato et al.'s semi-supervised
        use). The clean pass needs no gradient: it is only the reference."""
        embeds = step.embed()
        dropout = DropoutState(step.device)
        with torch.no_grad(), dropout.replay():
            clean = step.scores(inputs_embeds=embeds)
        # a confidence threshold narrows the cells of both the direction search and the penalty
        narrowed = dataclasses.replace(step, mask=step.consistency_mask(clean))
        return self._adversarial(narrowed, embeds, clean, dropout)

    def _adversarial(self, step: TrainingStep, embeds: torch.Tensor, reference: torch.Tensor,
                     dropout: DropoutState) -> torch.Tensor:
        """D(reference, s(e + r_adv)) with the search and the adversarial pass on ``dropout``'s masks."""
        base = embeds.detach()
        keep = step.padding_mask(base).expand_as(base)
        initial = torch.randn_like(base)
        direction = self.direction(step, base, reference, initial, dropout, keep)
        radius = self.epsilon * (per_sample_norm(base * keep) if self.relative else 1.0)
        with dropout.replay():
            return step.kl(reference, step.scores(inputs_embeds=embeds + radius * direction), step.mask)

    def direction(self, step: TrainingStep, base: torch.Tensor, reference: torch.Tensor, initial: torch.Tensor,
                  dropout: DropoutState, keep: torch.Tensor | None = None,
                  iterations: int | None = None) -> torch.Tensor:
        """The power-iterated direction at ``base`` with the dropout masks of ``dropout``, in fp32.
        ``reference`` are the scores at ``base`` (recomputed in fp32 under mixed precision)."""
        if step.mixed_precision:
            with torch.no_grad(), dropout.replay():
                reference = step.fp32_scores(base)

        def divergence(perturbation: torch.Tensor) -> torch.Tensor:
            with dropout.replay():
                return step.kl(reference, step.fp32_scores(base + perturbation), step.mask)

        iterations = self.power_iterations if iterations is None else iterations
        return adversarial_direction(divergence, initial, self.xi, iterations, keep)
