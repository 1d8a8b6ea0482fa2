"""Gaussian noise on the embedding output, optionally with a consistency term.

Without consistency the model trains on e + N(0, σ²). With ``consistency: true`` the clean and the
noisy batch run in one forward of the doubled batch and the loss is the mean CE of both plus
w · D(s_clean, s_noisy), w ramping up to ``alpha`` over ``rampup_steps`` as R-Drop's. ``relative: true`` scales σ by the per-sample RMS of e over real
(non-padding) positions. With σ = 0 no random numbers are drawn, so the step is exactly that of
``none``.
"""

from __future__ import annotations

import torch

from regner.regularizers.base import Consistency, TrainingStep, per_sample_norm


class GaussianNoise(Consistency):
    name = "noise"

    def __init__(self, sigma: float = 0.2, consistency: bool = False, alpha: float = 100.0,
                 relative: bool = True, rampup_steps: int = 0, name: str | None = None):
        super().__init__(alpha, rampup_steps, name)
        self.sigma, self.consistency, self.relative = float(sigma), consistency, relative
        self.uses_kl = bool(consistency)

    def _noisy(self, step: TrainingStep, embeds: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return embeds
        keep = step.padding_mask(embeds)
        scale = self.sigma
        if self.relative:  # σ × the RMS of each sample's real (non-padding) positions
            count = step.attention_mask.sum(1).view(-1, 1, 1).to(embeds.dtype) * embeds.shape[-1]
            scale = self.sigma * per_sample_norm(embeds.detach() * keep) / count.sqrt()
        return embeds + scale * torch.randn_like(embeds) * keep

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        embeds = step.embed()
        if not self.consistency:
            ce = step.ce(step.scores(inputs_embeds=self._noisy(step, embeds)))
            step.backward(ce)
            return {"loss": ce.detach(), "ce": ce.detach()}
        both = torch.cat((embeds, self._noisy(step, embeds)))
        attention = torch.cat((step.attention_mask, step.attention_mask))
        ce, divergence = step.pair_terms(step.forward(None, attention, inputs_embeds=both))
        loss = ce + self.weight(step) * divergence
        step.backward(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "kl": divergence.detach()}
