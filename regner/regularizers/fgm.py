"""FGM (Miyato et al., 2017): train also on the input pushed along the loss gradient.

After the clean backward, ε·g/‖g‖ is added either to the word-embedding *weights* (``target:
weights``, the classic recipe: g is the weight gradient, ‖g‖ its global norm) or to the batch's
embedding *output* (``target: embeds``: g per sample, normalised per sample). A second forward /
backward adds ``weight`` × the adversarial CE to the gradients; the weights are then restored from
a copy, bit for bit. With ``relative: true`` (the default) ε is a fraction of the embedding norm (of
the rows the batch's real tokens use, or of each sample's real positions; padding never counts), so
the same value suits pretrained and tiny random encoders.
"""

from __future__ import annotations

import torch

from regner.errors import ConfigError
from regner.regularizers.base import (
    Adversarial,
    TrainingStep,
    per_sample_norm,
    per_sample_normalize,
    unit_step,
    used_rows_norm,
)

TARGETS = ("weights", "embeds")


class FGM(Adversarial):
    name = "fgm"

    def __init__(self, epsilon: float = 0.05, weight: float = 1.0, target: str = "weights",
                 relative: bool = True, name: str | None = None):
        super().__init__(name)
        if target not in TARGETS:
            raise ConfigError("regularizer.target", target, "weights or embeds")
        self.epsilon, self.weight, self.target, self.relative = float(epsilon), float(weight), target, relative
        self.stackable = target == "weights"

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        if self.target == "weights":
            return super().step(step)
        ce, adversarial = self._perturb_embeds(step)
        return {"loss": (ce + self.weight * adversarial).detach(), "ce": ce.detach(), "adv_ce": adversarial.detach()}

    def attack(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        """Push the word-embedding weights by ε·g/‖g‖ (g: their gradient so far), add the
        adversarial CE's gradient, restore the weights bit for bit."""
        weight = step.model.encoder.get_input_embeddings().weight
        if weight.grad is None:
            zero = torch.zeros((), device=step.device)
            return {"loss": zero, "adv_ce": zero}
        epsilon = self.epsilon * (used_rows_norm(step, weight) if self.relative else 1.0)
        # No host sync: a zero or non-finite gradient norm gives a zero step (then the second pass is
        # a plain clean pass), decided on the device.
        backup = weight.detach().clone()
        with torch.no_grad():
            weight.add_(unit_step(weight.grad, epsilon))
        try:
            adversarial = step.ce(step.scores())
            step.backward(self.weight * adversarial)
        finally:
            with torch.no_grad():
                weight.copy_(backup)
        return {"loss": (self.weight * adversarial).detach(), "adv_ce": adversarial.detach()}

    def _perturb_embeds(self, step: TrainingStep) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = step.embed()
        embeds.retain_grad()
        ce = step.ce(step.scores(inputs_embeds=embeds))
        step.backward(ce)
        grad = embeds.grad
        if grad is None:
            return ce, torch.zeros_like(ce)
        keep = step.padding_mask(grad)
        radius = self.epsilon * (per_sample_norm(embeds.detach() * keep) if self.relative else 1.0)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        delta = (radius * per_sample_normalize(grad * keep)).detach()
        adversarial = step.ce(step.scores(inputs_embeds=step.embed() + delta))
        step.backward(self.weight * adversarial)
        return ce, adversarial
