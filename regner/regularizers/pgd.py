"""PGD (Madry et al., 2018), the NLP recipe of bert4torch / ark-nlp: K ascent steps on the embeddings.

After the clean backward, the perturbation δ (of the word-embedding *weights*, ``target: weights``,
or of the batch's embedding *output*, ``target: embeds``, per sample) takes K steps of size
``step_size`` along the normalised gradient of the loss at the current adversarial point, each
projected back onto the ε-ball around the clean embeddings. The intermediate steps only find the
direction: their gradients reach δ and nothing else (``torch.autograd.grad``), so the weights'
gradients hold the clean gradient plus ``weight`` × the gradient of the *last* adversarial CE, as in
the recipe (which zeroes them between steps and restores the clean ones before the last). The
weights are then restored from a copy, bit for bit.

Sizes are relative by default, exactly as FGM's (a fraction of the norm of the embedding rows the
batch uses, or of each sample's embedding output over real tokens); one step of size ε equals FGM.
Cost: K extra forward/backward passes (≈ (K + 1)× none).
"""

from __future__ import annotations

import torch

from regner.errors import ConfigError
from regner.regularizers.base import (
    Adversarial,
    TrainingStep,
    per_sample_norm,
    per_sample_normalize,
    project_to_ball,
    unit_step,
    used_rows_norm,
)
from regner.regularizers.fgm import TARGETS


class PGD(Adversarial):
    name = "pgd"

    def __init__(self, epsilon: float = 0.05, step_size: float = 0.02, steps: int = 3, weight: float = 1.0,
                 target: str = "weights", relative: bool = True, name: str | None = None):
        super().__init__(name)
        if target not in TARGETS:
            raise ConfigError("regularizer.target", target, "weights or embeds")
        if int(steps) < 1:
            raise ConfigError("regularizer.steps", steps, "an integer ≥ 1")
        self.epsilon, self.step_size, self.steps = float(epsilon), float(step_size), int(steps)
        self.weight, self.target, self.relative = float(weight), target, relative
        self.stackable = target == "weights"

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        if self.target == "weights":
            return super().step(step)
        return self._embeds(step)

    def attack(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        weight = step.model.encoder.get_input_embeddings().weight
        if weight.grad is None:
            zero = torch.zeros((), device=step.device)
            return {"loss": zero, "adv_ce": zero}
        scale = used_rows_norm(step, weight) if self.relative else 1.0
        radius, size = self.epsilon * scale, self.step_size * scale
        backup = weight.detach().clone()
        delta, grad = torch.zeros_like(backup), weight.grad.detach()
        try:
            for k in range(self.steps):
                delta = project_to_ball(delta + unit_step(grad, size), radius)
                with torch.no_grad():
                    weight.copy_(backup + delta)
                adversarial = step.ce(step.scores())
                if k < self.steps - 1:  # only the direction: no parameter gradient (scaled against fp16 underflow)
                    (grad,) = torch.autograd.grad(adversarial * step.grad_scale, weight)
                else:
                    step.backward(self.weight * adversarial)
        finally:
            with torch.no_grad():
                weight.copy_(backup)
        return {"loss": (self.weight * adversarial).detach(), "adv_ce": adversarial.detach()}

    def _embeds(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        embeds = step.embed()
        embeds.retain_grad()
        ce = step.ce(step.scores(inputs_embeds=embeds))
        step.backward(ce)
        if embeds.grad is None:
            return {"loss": ce.detach(), "ce": ce.detach(), "adv_ce": torch.zeros_like(ce)}
        base = embeds.detach()
        keep = step.padding_mask(base)
        scale = per_sample_norm(base * keep) if self.relative else torch.ones_like(per_sample_norm(base))
        radius, size = self.epsilon * scale, self.step_size * scale
        delta, grad = torch.zeros_like(base), embeds.grad
        for k in range(self.steps):
            step_ = size * per_sample_normalize(torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0) * keep)
            delta = delta + step_
            delta = project_to_ball(delta, radius, per_sample_norm(delta)).detach()
            if k < self.steps - 1:
                point = (base + delta).requires_grad_()
                adversarial = step.ce(step.scores(inputs_embeds=point))
                (grad,) = torch.autograd.grad(adversarial * step.grad_scale, point)
            else:
                adversarial = step.ce(step.scores(inputs_embeds=step.embed() + delta))
                step.backward(self.weight * adversarial)
        return {"loss": (ce + self.weight * adversarial).detach(), "ce": ce.detach(), "adv_ce": adversarial.detach()}
