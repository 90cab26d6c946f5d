"""Knowledge distillation: losses (logit KD, MiniLM relations, hard labels), students, the objective.

Papers: Hinton et al. 2015 (logit KD), Wang et al. 2020 (MiniLM deep self-attention distillation),
Mirzadeh et al. 2020 (teacher assistants; wired in :mod:`nluforge.experiments.distillation`). Each
module's docstring says where it departs from its paper. The run-level wiring (derived run, data,
teacher assistant) is in :mod:`nluforge.experiments.distillation`; this package knows no run.
"""

from nluforge.distill.config import LAYER_PICKS, DistillConfig, parse_student

__all__ = ["LAYER_PICKS", "DistillConfig", "parse_student"]
