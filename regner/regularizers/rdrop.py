"""R-Drop: two dropout samples of the same batch should agree.

Both samples come from **one** forward of the doubled batch (dropout masks differ per row), which
is cheaper than two forwards. Loss = mean CE of both + w · D(s1, s2) with the chosen KL, where the
weight w ramps linearly from 0 to ``alpha`` over the first ``rampup_steps`` optimizer steps.

Scale: with ``kl.reduction: mean`` D is a mean over span cells, where Su's and the R-Drop paper's
KL is summed over the output (per sample); see the README for how regner's alpha maps to theirs.
"""

from __future__ import annotations

import torch

from regner.regularizers.base import Consistency, TrainingStep


class RDrop(Consistency):
    name = "rdrop"
    unlabeled_term = "kl"

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        scores = step.forward(torch.cat((step.input_ids, step.input_ids)),
                              torch.cat((step.attention_mask, step.attention_mask)))
        ce, divergence = step.pair_terms(scores)  # ce = (CE(first) + CE(second)) / 2, without slicing the scores
        loss = ce + self.weight(step) * divergence
        step.backward(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "kl": divergence.detach()}

    def consistency(self, step: TrainingStep) -> torch.Tensor:
        """D(s1, s2) between two dropout samples of the batch (one forward of the doubled batch)."""
        scores = step.forward(torch.cat((step.input_ids, step.input_ids)),
                              torch.cat((step.attention_mask, step.attention_mask)))
        first, second = scores.chunk(2)
        return step.kl(first, second, step.consistency_mask(first))
