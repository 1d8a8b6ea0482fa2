"""FGM (Miyato et al., 2017): train also on the input pushed along the loss gradient.

After the clean backward, ε·g/‖g‖ is added either to the word-embedding *weights* (``target:
weights``, the classic recipe: g is the weight gradient, ‖g‖ its global norm) or to the batch's
embedding *output* (``target: embeds``: g per sample, normalised per sample). A second forward /
backward adds ``weight`` × the adversarial CE to the gradients; the weights are then restored from
a copy, bit for bit. With ``relative: true`` ε is a fraction of the embedding norm (of the rows
used, or of each sample), so the same value suits pretrained and tiny random encoders.
"""

from __future__ import annotations

import torch

from regner.regularizers.base import Regularizer, TrainingStep, per_sample_norm, per_sample_normalize


class FGM(Regularizer):
    name = "fgm"

    def __init__(self, epsilon: float = 1.0, weight: float = 1.0, target: str = "weights",
                 relative: bool = False, name: str | None = None):
        super().__init__(name)
        if target not in ("weights", "embeds"):
            raise ValueError(f"fgm.target must be 'weights' or 'embeds', got {target!r}")
        self.epsilon, self.weight, self.target, self.relative = float(epsilon), float(weight), target, relative

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        if self.target == "weights":
            ce, adversarial = self._perturb_weights(step)
        else:
            ce, adversarial = self._perturb_embeds(step)
        return {"loss": (ce + self.weight * adversarial).detach(), "ce": ce.detach(), "adv_ce": adversarial.detach()}

    def _perturb_weights(self, step: TrainingStep) -> tuple[torch.Tensor, torch.Tensor]:
        weight = step.model.encoder.get_input_embeddings().weight
        ce = step.ce(step.scores())
        step.backward(ce)
        grad = weight.grad
        if grad is None:
            return ce, torch.zeros_like(ce)
        norm = grad.norm()
        if not torch.isfinite(norm) or norm == 0:
            return ce, torch.zeros_like(ce)
        epsilon = self.epsilon
        if self.relative:
            used = torch.unique(step.input_ids)
            epsilon = self.epsilon * float(weight.detach()[used].norm())
        backup = weight.detach().clone()
        with torch.no_grad():
            weight.add_(grad, alpha=epsilon / float(norm))
        try:
            adversarial = step.ce(step.scores())
            step.backward(self.weight * adversarial)
        finally:
            with torch.no_grad():
                weight.copy_(backup)
        return ce, adversarial

    def _perturb_embeds(self, step: TrainingStep) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = step.embed()
        embeds.retain_grad()
        ce = step.ce(step.scores(inputs_embeds=embeds))
        step.backward(ce)
        grad = embeds.grad
        if grad is None or not torch.isfinite(grad).all():
            return ce, torch.zeros_like(ce)
        radius = self.epsilon * (per_sample_norm(embeds.detach()) if self.relative else 1.0)
        delta = (radius * per_sample_normalize(grad * step.padding_mask(grad))).detach()
        adversarial = step.ce(step.scores(inputs_embeds=step.embed() + delta))
        step.backward(self.weight * adversarial)
        return ce, adversarial
