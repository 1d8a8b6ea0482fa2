"""Several regularizers in one training step: a first part's step, then adversarial parts.

The first part is any regularizer (R-Drop, VAT, noise, GP, none): it runs its clean pass(es) with its
own term and backward. Each further part must be adversarial (:class:`~regner.regularizers.base.
Adversarial`: FGM or PGD on the embedding weights, AWP): it perturbs from the gradients accumulated so
far (the first part's loss, its term included, as bert4torch's R-Drop + FGM does) and adds its
adversarial backward. So ``rdrop_fgm`` = one doubled forward/backward with the KL, then one FGM pass.

The step's ``loss`` is the sum of the parts' losses. ``history.jsonl`` shows each part's share and
cost: ``<part>/loss`` (what the part adds: its term for the first part, e.g. ``rdrop/loss`` =
alpha·KL, ``fgm/loss`` = weight·adversarial CE), the part's own terms (``rdrop/kl``, ``fgm/adv_ce``)
and ``<part>/seconds``, the part's wall time per step (on a GPU the timing waits for the device at each
part's end, which costs little next to a full forward/backward).

Configs compose parts from the regularizer group (``conf/regularizer/rdrop_fgm.yaml``)::

    defaults:
      - rdrop@parts.rdrop
      - fgm@parts.fgm
      - _self_

and their knobs stay reachable: ``regularizer.parts.fgm.epsilon=0.1``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch

from regner.errors import ConfigError
from regner.regularizers.base import Adversarial, Regularizer, TrainingStep


class Stack(Regularizer):
    name = "stack"

    def __init__(self, parts: Mapping[str, Regularizer] | Sequence[Regularizer], name: str | None = None):
        super().__init__(name)
        named = dict(parts) if isinstance(parts, Mapping) else {p.name: p for p in parts}
        if len(named) < 2:
            raise ConfigError("regularizer.parts", list(named), "at least two parts (a first regularizer, then "
                              "adversarial ones: fgm, pgd, awp)")
        for key, part in named.items():
            if not isinstance(part, Regularizer) or isinstance(part, Stack):
                raise ConfigError(f"regularizer.parts.{key}", type(part).__name__, "a regner regularizer (not a stack)")
        self.parts = named
        self.first, *self.adversarial = named.items()
        for key, part in self.adversarial:
            if not isinstance(part, Adversarial):
                raise ConfigError(f"regularizer.parts.{key}", part.name,
                                  "an adversarial regularizer (fgm, pgd, awp) after the first part: only those can "
                                  "follow another part's backward")
            if not part.stackable:
                raise ConfigError(f"regularizer.parts.{key}.target", getattr(part, "target", None),
                                  "weights (a perturbation of the embedding output needs the first part's pass)")
        self.uses_kl = any(part.uses_kl for part in named.values())

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        sync = torch.cuda.synchronize if step.device.type == "cuda" else (lambda: None)
        (first_key, first), terms = self.first, {}
        start = time.perf_counter()
        own = first.step(step)
        sync()
        loss, ce = own.pop("loss"), own.pop("ce")
        terms[f"{first_key}/loss"] = loss - ce
        terms.update({f"{first_key}/{k}": v for k, v in own.items()})
        terms[f"{first_key}/seconds"] = torch.tensor(time.perf_counter() - start)
        for key, part in self.adversarial:
            start = time.perf_counter()
            own = part.attack(step)
            sync()
            added = own.pop("loss")
            loss = loss + added
            terms[f"{key}/loss"] = added
            terms.update({f"{key}/{k}": v for k, v in own.items()})
            terms[f"{key}/seconds"] = torch.tensor(time.perf_counter() - start)
        return {"loss": loss.detach(), "ce": ce.detach(), **terms}

    def __repr__(self) -> str:
        return f"Stack({', '.join(f'{k}={p!r}' for k, p in self.parts.items())})"
