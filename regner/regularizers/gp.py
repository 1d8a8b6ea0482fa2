"""Gradient penalty on the embedding output: loss + ½·ε·‖∇ₑL‖².

``mode: exact`` differentiates through the gradient (``create_graph=True``): a true second-order
term, about as costly as two extra backward passes. ``mode: approx`` uses the first-order identity
∇θ[L + ½ε‖∇ₑL‖²] ≈ ∇θ L(e + ε∇ₑL): one extra forward/backward at the point pushed along the
*unnormalised* gradient, i.e. an FGM step whose size is set by the gradient itself. ‖·‖² sums over
every element of the batch's embedding output, and L is the batch-mean CE.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from regner.numerics import at_least_fp32
from regner.regularizers.base import Regularizer, TrainingStep


class GradientPenalty(Regularizer):
    name = "gp"

    def __init__(self, epsilon: float = 1.0, mode: str = "exact", name: str | None = None):
        super().__init__(name)
        if mode not in ("exact", "approx"):
            raise ValueError(f"gp.mode must be 'exact' or 'approx', got {mode!r}")
        self.epsilon, self.mode = float(epsilon), mode

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        exact = self.mode == "exact"
        embeds = step.embed()
        # Fused attention kernels have no double backward; the math kernel does.
        with sdpa_kernel([SDPBackend.MATH]) if exact else contextlib.nullcontext():
            ce = step.ce(step.scores(inputs_embeds=embeds))
        # Differentiate the scaled loss so that fp16 gradients do not underflow, then unscale.
        (grad,) = torch.autograd.grad(ce * step.grad_scale, embeds, create_graph=exact, retain_graph=exact)
        grad = grad / step.grad_scale
        penalty = 0.5 * self.epsilon * at_least_fp32(grad).pow(2).sum()
        if exact:
            loss = ce + penalty
            step.backward(loss)
            return {"loss": loss.detach(), "ce": ce.detach(), "grad_penalty": penalty.detach()}
        shifted = step.ce(step.scores(inputs_embeds=step.embed() + self.epsilon * grad.detach()))
        step.backward(shifted)
        return {"loss": (ce + penalty).detach(), "ce": ce.detach(), "grad_penalty": penalty.detach()}
