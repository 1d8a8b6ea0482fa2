"""Mean teacher (Tarvainen & Valpola, 2017): the student should agree with a teacher whose weights are
the exponential moving average of the student's.

Loss on a labeled batch: CE(student) + w · D(teacher, student); on an unlabeled batch (``unlabeled.ratio``)
w · D(teacher, student) alone, with the chosen KL (per logit by default). The teacher's scores come from
one forward with the averaged weights, without gradient, under the same training-mode dropout as the
student's own forward (fresh masks: the two see different noise, as in the paper). w ramps up like every
consistency weight (``rampup_steps``).

The average itself is the trainer's EMA callback (regner/training/callbacks/ema.py), built from
``decay`` (the teacher's decay); ``evaluate: teacher`` (the default) evaluates and saves the teacher, as
the paper reports it, ``student`` the raw weights. The teacher's weights come in through
``TrainingStep.teacher``, a context in which the model holds them.
"""

from __future__ import annotations

import torch

from regner.regularizers.base import Consistency, TrainingStep

EVALUATED = ("teacher", "student")


class MeanTeacher(Consistency):
    name = "mean_teacher"
    unlabeled_term = "mt_kl"

    def __init__(self, alpha: float = 100.0, decay: float = 0.99, evaluate: str = "teacher", rampup_steps: int = 0,
                 warmup: bool = True, name: str | None = None):
        super().__init__(alpha, rampup_steps, name)
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"mean_teacher.decay must be in (0, 1), got {decay}")
        if evaluate not in EVALUATED:
            raise ValueError(f"mean_teacher.evaluate must be one of {', '.join(EVALUATED)}, got {evaluate!r}")
        self.decay, self.evaluate, self.warmup = float(decay), evaluate, bool(warmup)

    def teacher_scores(self, step: TrainingStep) -> torch.Tensor:
        if step.teacher is None:
            raise RuntimeError("mean_teacher needs the teacher's weights (TrainingStep.teacher): the trainer's EMA "
                               "callback provides them")
        with torch.no_grad(), step.teacher():
            return step.scores()

    def step(self, step: TrainingStep) -> dict[str, torch.Tensor]:
        teacher = self.teacher_scores(step)
        student = step.scores()
        ce = step.ce(student)
        divergence = step.kl(teacher, student, step.mask)
        loss = ce + self.weight(step) * divergence
        step.backward(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "mt_kl": divergence.detach()}

    def consistency(self, step: TrainingStep) -> torch.Tensor:
        teacher = self.teacher_scores(step)
        return step.kl(teacher, step.scores(), step.consistency_mask(teacher))
