"""The distillation objective: one ``loss_fn(model, batch) -> (loss, logits)`` for the training loop.

It queries the frozen, eval-mode teacher on every batch (no soft labels computed ahead, so the teacher
sees exactly the batch the student sees) and weighs the three terms of
:mod:`nluforge.distill.losses`. It is the ``loss_fn`` seam of :func:`nluforge.train.fit`: no second loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nluforge.distill.capture import QKVCapture
from nluforge.distill.losses import hard_loss, kd_loss, minilm_loss, regression_kd_loss, soft_labels


@dataclass
class Weights:
    kd: float = 1.0
    minilm: float = 0.0
    hard: float = 1.0
    temperature: float = 2.0
    heads: int | None = None  # relation heads, required when minilm > 0


@dataclass
class DistillObjective:
    """``loss_fn`` for a student learning from ``teacher``; call :meth:`close` after training.

    ``last`` holds the latest batch's loss terms (floats) for logging and tests.
    """

    teacher: nn.Module | None  # None: no teacher (the hard-label-only baseline)
    student: nn.Module
    weights: Weights
    regression: bool = False
    last: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self._captures = None
        if self.teacher is not None:
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        if self.teacher is not None and self.weights.minilm > 0:
            self._captures = (QKVCapture(self.teacher), QKVCapture(self.student))

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits  # (B, L)
        terms: dict[str, torch.Tensor] = {}
        if w.hard > 0:
            terms["hard"] = hard_loss(logits, batch["labels"], regression=self.regression)
        if self.teacher is not None and (w.kd > 0 or w.minilm > 0):
            with torch.no_grad():
                teacher_logits = self.teacher(**inputs).logits  # (B, L); the teacher's last layer is captured
            if w.kd > 0:
                terms["kd"] = (regression_kd_loss(logits, teacher_logits) if self.regression else
                               kd_loss(logits, soft_labels(teacher_logits, w.temperature), w.temperature))
            if self._captures is not None:
                t_cap, s_cap = self._captures
                terms["minilm"] = minilm_loss(t_cap.take(), s_cap.take(), inputs["attention_mask"], w.heads)
        loss = sum(getattr(w, name) * value for name, value in terms.items())
        self.last = {name: float(value.detach()) for name, value in terms.items()}
        return loss, logits

    def close(self) -> None:
        """Remove the capture hooks (the student is saved and evaluated without them)."""
        if self._captures is not None:
            for capture in self._captures:
                capture.remove()
            self._captures = None
