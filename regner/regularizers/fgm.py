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
from regner.regularizers.base import Regularizer, TrainingStep, per_sample_norm, per_sample_normalize


class FGM(Regularizer):
    name = "fgm"

    def __init__(self, epsilon: float = 0.05, weight: float = 1.0, target: str = "weights",
                 relative: bool = True, name: str | None = None):
        super().__init__(name)
        if target not in ("weights", "embeds"):
            raise ConfigError("regularizer.target", target, "weights or embeds")
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
        epsilon = self.epsilon * (self._used_rows_norm(step, weight) if self.relative else 1.0)
        # No host sync: a zero or non-finite gradient norm gives a zero step (then the second pass is
        # a plain clean pass), decided on the device.
        scale = torch.where(torch.isfinite(norm) & (norm > 0), epsilon / norm, torch.zeros_like(norm))
        backup = weight.detach().clone()
        with torch.no_grad():
            weight.add_(torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0) * scale)
        try:
            adversarial = step.ce(step.scores())
            step.backward(self.weight * adversarial)
        finally:
            with torch.no_grad():
                weight.copy_(backup)
        return ce, adversarial

    @staticmethod
    def _used_rows_norm(step: TrainingStep, weight: torch.Tensor) -> torch.Tensor:
        """‖rows of the embedding matrix used by the batch's real tokens‖ (padding and the PAD row
        excluded), without a host sync."""
        present = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        present.scatter_reduce_(0, step.input_ids.flatten(), step.attention_mask.flatten().to(weight.dtype),
                                reduce="amax")
        return (weight.detach().pow(2).sum(-1) * present).sum().sqrt()

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
