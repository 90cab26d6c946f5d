"""The options of one ``distill`` step (no torch, so a bad option fails in a second).

A step is ``{student: SPEC, <options>}``: SPEC is another model (``default``, a folder, a hub id) or
``layers:K`` (the teacher's backbone cut to K layers). The total loss is
``kd_weight · KD + minilm_weight · (attention KL + value-relation KL) + hard_weight · CE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from nluforge.core.errors import UserError

LAYER_PICKS = ("first", "every_other", "last", "uniform")
_LAYERS = re.compile(r"^layers:(-?\d+)$")


@dataclass
class DistillConfig:
    """One distillation step's options (``-p key=value`` on ``nluforge distill``)."""

    student: str = "layers:3"  # another model (default, folder, hub id) or layers:K of the teacher
    layer_pick: Literal["first", "every_other", "last", "uniform"] = "uniform"  # which teacher layers layers:K keeps
    # None: 2.0 on classification (Hinton et al. 2015 used 1-20; PET and TextBrewer's GLUE recipes 2-8);
    # a regression teacher has no distribution to soften: its KD term is the MSE to the teacher's score
    temperature: float | None = None
    kd_weight: float = 1.0  # logit KD against the teacher (Hinton et al. 2015)
    minilm_weight: float = 1.0  # MiniLM's last-layer attention + value-relation KL (Wang et al. 2020)
    hard_weight: float = 1.0  # cross-entropy (or MSE) against the gold labels
    relation_heads: int | None = None  # None: the teacher's head count (MiniLMv1); R: MiniLMv2 re-split into R
    assistant: str | None = None  # teacher assistant (Mirzadeh et al. 2020), e.g. layers:4: teacher -> TA -> student
    unlabeled_file: str | None = None  # extra CSV/TSV/JSONL texts, soft-labelled by the teacher (no hard loss)
    max_train_samples: int | None = None  # seeded subset of the teacher's training set (None: all of it)
    epochs: float | None = None  # None: the teacher run's train.epochs
    max_steps: int | None = None
    lr: float | None = None  # None: the teacher run's lr (else full fine-tuning's default)
    batch_size: int | None = None  # None: the teacher run's

    def __post_init__(self):
        parse_student(self.student, "student")
        if self.assistant is not None:
            parse_student(self.assistant, "assistant")
        if self.layer_pick not in LAYER_PICKS:
            raise UserError(f"unknown layer_pick '{self.layer_pick}'; choose one of {', '.join(LAYER_PICKS)}")
        for name in ("kd_weight", "minilm_weight", "hard_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"distill {name} must be >= 0, got {getattr(self, name)}")
        if self.kd_weight == self.minilm_weight == self.hard_weight == 0:
            raise UserError("distill: kd_weight, minilm_weight and hard_weight are all 0; set at least one > 0")
        if self.temperature is not None and self.temperature <= 0:
            raise UserError(f"distill temperature must be positive, got {self.temperature}")
        for name in ("relation_heads", "max_train_samples", "max_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"distill {name} must be a positive integer, got {value}")
        for name in ("epochs", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"distill {name} must be positive, got {value}")

    @property
    def uses_teacher(self) -> bool:
        """False for the no-teacher baseline (hard labels only): the teacher is then never run."""
        return self.kd_weight > 0 or self.minilm_weight > 0


def parse_student(spec: str, where: str = "student") -> int | None:
    """K for ``layers:K`` (checked > 0 here, against the teacher's depth later); None for a model name."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"distill {where} must be a model (default, a folder, a hub id) or layers:K, got {spec!r}")
    m = _LAYERS.match(spec.strip())
    if m is None:
        if spec.startswith("layers"):
            raise UserError(f"distill {where} '{spec}' is not layers:K with an integer K, e.g. layers:3")
        return None
    k = int(m.group(1))
    if k <= 0:
        raise UserError(f"distill {where} {spec}: K must be at least 1")
    return k
