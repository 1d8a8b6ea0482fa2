"""R-Drop: two dropout samples of the same batch should agree.

Both samples come from **one** forward of the doubled batch (dropout masks differ per row), which
is cheaper than two forwards. Loss = mean CE of both + alpha · D(s1, s2) with the chosen KL.

Scale: with ``kl.reduction: mean`` D is a mean over span cells, where Su's and the R-Drop paper's
KL is summed over the output (per sample); see the README for how regner's alpha maps to theirs.
"""

from __future__ import annotations

import torch

from regner.regularizers.base import Regularizer, TrainingStep


class RDrop(Regularizer):
    name = "rdrop"
    uses_kl = True

    def __init__(self, alpha: float = 100.0, name: str | None = None):
        super().__init__(name)
        self.alpha = float(alpha)

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        ids = torch.cat((step.input_ids, step.input_ids))
        attention = torch.cat((step.attention_mask, step.attention_mask))
        with step.autocast():
            scores = step.model(ids, attention)
        first, second = scores.chunk(2)
        ce = step.ce(scores, doubled=True)  # = (CE(first) + CE(second)) / 2, without slicing the scores
        divergence = step.kl(first, second, step.mask)
        loss = ce + self.alpha * divergence
        step.backward(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "kl": divergence.detach()}
