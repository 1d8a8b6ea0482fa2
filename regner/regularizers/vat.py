"""Virtual adversarial training (Miyato et al., 2018) on the embedding output.

Start from a random unit direction d (per sample, zero on padding); K power-iteration steps replace
d by the normalised gradient of D(s_clean, s(e + ξd)), which turns d toward the direction the
predictions are most sensitive to (the top eigenvector of D's Hessian). The penalty is
alpha · D(s_clean.detach(), s(e + ε·d)) with the chosen KL, added to the clean CE; the clean
forward is reused for both the CE and the reference scores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from regner.regularizers.base import Regularizer, TrainingStep, per_sample_norm, per_sample_normalize


def adversarial_direction(
    distance: Callable[[torch.Tensor], torch.Tensor],
    initial: torch.Tensor,
    xi: float,
    iterations: int,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Power iteration: ``distance(r)`` maps a perturbation to a scalar divergence; returns the
    per-sample unit direction after ``iterations`` steps. ``keep`` zeroes masked positions."""
    keep = torch.ones_like(initial) if keep is None else keep
    direction = per_sample_normalize(initial * keep)
    for _ in range(iterations):
        direction = direction.detach().requires_grad_()
        (grad,) = torch.autograd.grad(distance(xi * direction), direction)
        direction = per_sample_normalize(grad * keep)
    return direction.detach()


class VAT(Regularizer):
    name = "vat"
    uses_kl = True

    def __init__(self, alpha: float = 1.0, epsilon: float = 1.0, xi: float = 1e-3, power_iterations: int = 1,
                 relative: bool = False, name: str | None = None):
        super().__init__(name)
        self.alpha, self.epsilon, self.xi = float(alpha), float(epsilon), float(xi)
        self.power_iterations, self.relative = int(power_iterations), relative

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        embeds = step.embed()
        clean = step.scores(inputs_embeds=embeds)
        ce = step.ce(clean)
        reference = clean.detach()
        base = embeds.detach()
        keep = step.padding_mask(base).expand_as(base)

        def divergence(perturbation: torch.Tensor) -> torch.Tensor:
            return step.kl(reference, step.scores(inputs_embeds=base + perturbation), step.mask)

        direction = adversarial_direction(divergence, torch.randn_like(base), self.xi, self.power_iterations, keep)
        radius = self.epsilon * (per_sample_norm(base) if self.relative else 1.0)
        adversarial = step.kl(reference, step.scores(inputs_embeds=embeds + radius * direction), step.mask)
        loss = ce + self.alpha * adversarial
        step.backward(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "vat_kl": adversarial.detach()}
