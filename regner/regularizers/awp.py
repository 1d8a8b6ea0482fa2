"""AWP, adversarial weight perturbation (Wu et al., 2020), as used in NLP competitions.

After the clean backward, each chosen weight matrix W is pushed along its own normalised gradient by
γ·‖W‖ (a perturbation relative to the matrix's own size: every layer moves by the same fraction),
one adversarial forward/backward adds ``weight`` × its CE gradient to the clean gradients, and every
weight is restored from a copy, bit for bit. With ``steps`` K > 1 the perturbation is reached in K
ascent steps of γ·‖W‖/K (each from the gradient at the current perturbed point, gradients of the
intermediate steps reaching only the direction), each projected onto the ball of radius γ·‖W‖.

Chosen weights: parameter names matching the ``params`` regex and not the ``exclude`` one (default:
every encoder weight matrix, not LayerNorm and not the embeddings, as in the paper's recipe for
transformers). ``start_epoch``: the perturbation starts at that epoch (the first ones train plainly,
as the recipe lets the model fit before attacking it). Cost: K + 1 forward/backward passes from
``start_epoch`` on, plain training before.
"""

from __future__ import annotations

import re

import torch

from regner.errors import ConfigError
from regner.regularizers.base import Adversarial, TrainingStep, project_to_ball, unit_step


class AWP(Adversarial):
    name = "awp"

    def __init__(self, gamma: float = 0.005, steps: int = 1, start_epoch: int = 2, weight: float = 1.0,
                 params: str = r"^encoder\..*weight$", exclude: str = r"LayerNorm|layer_norm|embeddings",
                 name: str | None = None):
        super().__init__(name)
        if int(steps) < 1:
            raise ConfigError("regularizer.steps", steps, "an integer ≥ 1")
        if int(start_epoch) < 1:
            raise ConfigError("regularizer.start_epoch", start_epoch, "an integer ≥ 1")
        for key, pattern in (("params", params), ("exclude", exclude)):
            try:
                re.compile(pattern or "")
            except re.error as err:
                raise ConfigError(f"regularizer.{key}", pattern, f"a Python regular expression ({err})") from None
        self.gamma, self.steps, self.start_epoch, self.weight = float(gamma), int(steps), int(start_epoch), float(weight)
        self.params, self.exclude = params, exclude
        self._chosen: tuple[int, list] | None = None  # (id of the model, its chosen parameters)

    def chosen(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        """The (name, parameter) pairs AWP perturbs; a ConfigError if the patterns choose none."""
        if self._chosen is not None and self._chosen[0] == id(model):
            return self._chosen[1]
        keep, drop = re.compile(self.params), re.compile(self.exclude) if self.exclude else None
        chosen = [(n, p) for n, p in model.named_parameters()
                  if p.requires_grad and keep.search(n) and not (drop and drop.search(n))]
        if not chosen:
            raise ConfigError("regularizer.params", self.params,
                              f"a regex matching some parameter names (not matched by exclude={self.exclude!r}); "
                              f"names look like {next(n for n, _ in model.named_parameters())!r}")
        self._chosen = (id(model), chosen)
        return chosen

    def attack(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        if step.epoch < self.start_epoch:
            return {"loss": torch.zeros((), device=step.device)}
        params = [p for _, p in self.chosen(step.model) if p.grad is not None]
        if not params:
            zero = torch.zeros((), device=step.device)
            return {"loss": zero, "adv_ce": zero}
        backups = [p.detach().clone() for p in params]
        radii = [self.gamma * b.norm() for b in backups]
        deltas = [torch.zeros_like(b) for b in backups]
        grads = [p.grad.detach() for p in params]
        try:
            for k in range(self.steps):
                with torch.no_grad():
                    for i, (p, backup) in enumerate(zip(params, backups, strict=True)):
                        deltas[i] = project_to_ball(deltas[i] + unit_step(grads[i], radii[i] / self.steps), radii[i])
                        p.copy_(backup + deltas[i])
                adversarial = step.ce(step.scores())
                if k < self.steps - 1:  # only the direction: no parameter gradient (scaled against fp16 underflow)
                    grads = list(torch.autograd.grad(adversarial * step.grad_scale, params, allow_unused=True))
                    grads = [torch.zeros_like(b) if g is None else g for g, b in zip(grads, backups, strict=True)]
                else:
                    step.backward(self.weight * adversarial)
        finally:
            with torch.no_grad():
                for p, backup in zip(params, backups, strict=True):
                    p.copy_(backup)
        return {"loss": (self.weight * adversarial).detach(), "adv_ce": adversarial.detach()}
