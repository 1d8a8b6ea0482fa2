"""Gradient penalty on the embedding output: loss + ½·ε·mean_i ‖∇_{e_i} L_i‖², per sample.

L_i is sample i's own loss and e_i its embedding output, so the penalty is a mean over samples and ε
means the same at any batch size and any number of data-parallel ranks. (The gradient of the
*batch-mean* loss has per-sample parts ∇_{e_i}L_i / B, so its squared norm shrinks as 1/B:
duplicating every sample of a batch would halve the penalty.) Since samples do not interact in the
encoder, ∇_{e_i}L_i = B·∇_{e_i}L̄ and the penalty is computed as ½·ε·B·‖∇ₑL̄‖² from one gradient.

Mapping to Su's gradient penalty (kexue.fm 7234, ``K.sum(grad(mean loss, embeddings)**2)``, i.e.
the squared gradient of the batch-mean loss at each token's embedding): his ε at batch size B is
regner's ε·B, so his ε = 1 at batch 32 is ``epsilon=0.03`` here.

``mode: exact`` differentiates through the gradient (``create_graph=True``): a true second-order
term, about as costly as two extra backward passes. ``mode: approx`` uses the first-order identity
∇θ[L + ½ε'‖∇ₑL‖²] ≈ ∇θ L(e + ε'∇ₑL) with ε' = ε·B: one extra forward/backward at the point pushed
along the *unnormalised* gradient, i.e. an FGM step whose size is set by the gradient itself.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from regner.errors import ConfigError
from regner.model.numerics import at_least_fp32
from regner.regularizers.base import Regularizer, TrainingStep


class GradientPenalty(Regularizer):
    name = "gp"

    def __init__(self, epsilon: float = 0.01, mode: str = "exact", name: str | None = None):
        super().__init__(name)
        if mode not in ("exact", "approx"):
            raise ConfigError("regularizer.mode", mode, "exact or approx")
        self.epsilon, self.mode = float(epsilon), mode

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        exact = self.mode == "exact"
        embeds = step.embed()
        # Fused attention kernels have no double backward; the math kernel does.
        with sdpa_kernel([SDPBackend.MATH]) if exact else contextlib.nullcontext():
            # the blockwise loss is first-order only: the exact penalty's double backward takes the dense scores
            ce = step.ce(step.scores(inputs_embeds=embeds, dense=exact))
        # Differentiate the scaled loss so that fp16 gradients do not underflow, then unscale.
        (grad,) = torch.autograd.grad(ce * step.grad_scale, embeds, create_graph=exact, retain_graph=exact)
        grad = grad / step.grad_scale
        weight = self.epsilon * embeds.shape[0]  # per-sample mean: ε·B·‖∇ₑ(batch-mean L)‖²
        penalty = 0.5 * weight * at_least_fp32(grad).pow(2).sum()
        if exact:
            loss = ce + penalty
            step.backward(loss)
            return {"loss": loss.detach(), "ce": ce.detach(), "grad_penalty": penalty.detach()}
        shifted = step.ce(step.scores(inputs_embeds=step.embed() + weight * grad.detach()))
        step.backward(shifted)
        return {"loss": (ce + penalty).detach(), "ce": ce.detach(), "grad_penalty": penalty.detach()}
