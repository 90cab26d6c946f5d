"""(IA)^3: learned vectors that rescale keys, values and the FFN's inner activations.

Paper: Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning" (NeurIPS): softmax(Q (l_k ⊙ K)ᵀ) (l_v ⊙ V) and (l_ff ⊙ γ(W_1 x)) W_2, with l_k, l_v
(size hidden) and l_ff (size intermediate) initialised to ones, so training starts at the base model.

Implementation: peft's ``IA3Config``. A target in ``feedforward_modules`` has its *input* rescaled (a
vector of its in_features); any other target has its *output* rescaled (out_features). The defaults
come from the arch table (``ia3_targets``): key and value outputs, and the input of the FFN
down-projection. Where the table's FFN name is shared with other layers (BERT calls the attention
output, both FFN projections and the pooler all ``dense``), the down-projection is the one that
narrows (in_features > out_features), so l_ff has the intermediate size as in the paper.

Departures: the paper trains (IA)^3 with extra losses (unlikelihood, length normalisation) for
few-shot T0; here it is trained with the task loss only, and the task head is trained too (an
encoder classifier has no LM head to reuse). The vectors start at one, so a short run needs a large
lr: on the default model, a 47-step SST-2 run learns at 3e-2 and stays at the majority class at 3e-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods import peft_common as pc
from nluforge.methods.base import head_param_count
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "ia3"
    target_modules: list[str] | None = None  # Linear layers (peft's suffix rule); None: key, value, FFN down
    feedforward_modules: list[str] | None = None  # targets whose input is rescaled; None: the FFN down-projection


def _defaults(model: nn.Module) -> tuple[dict[str, nn.Linear], set[str]]:
    """The arch table's ``ia3_targets``; of the feedforward names, only layers that narrow the width
    (in_features > out_features: the FFN down-projection, not BERT's other ``dense`` layers)."""
    names, feedforward = arch_of(model).ia3_targets
    down = {p: m for p, m in pc.resolve_targets(model, feedforward, "ia3").items() if m.in_features > m.out_features}
    rest = pc.resolve_targets(model, [n for n in names if n not in feedforward], "ia3")
    return rest | down, set(down)


def plan(model: nn.Module, cfg: Config) -> tuple[dict[str, nn.Linear], set[str]]:
    """(targeted layers by path, paths of those whose input is rescaled), checked against the model."""
    layers, feedforward = _defaults(model)
    if cfg.target_modules is not None:
        layers = pc.resolve_targets(model, cfg.target_modules, cfg.method)
    if cfg.feedforward_modules is None:
        return layers, feedforward & set(layers)
    feedforward = set(pc.resolve_targets(model, cfg.feedforward_modules, cfg.method))
    outside = sorted(feedforward - set(layers))
    if outside:
        raise UserError(f"ia3: feedforward module '{outside[0]}' is not among target_modules; "
                        "feedforward_modules must be a subset of target_modules")
    return layers, feedforward


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    from peft import IA3Config

    from nluforge.optim import NO_DECAY

    layers, feedforward = plan(model, cfg)
    peft_config = IA3Config(task_type="SEQ_CLS", target_modules=list(layers),
                            feedforward_modules=sorted(feedforward))
    peft_model = pc.wrap(model, peft_config)
    # The vectors are stored as (d, 1) or (1, d) matrices and start at 1: weight decay would pull them
    # towards 0 and switch their activations off, so they get none (as biases and norms).
    setattr(peft_model, NO_DECAY, frozenset(n for n, _ in peft_model.named_parameters() if ".ia3_l." in n))
    return peft_model


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """One vector per target: in_features for feedforward targets, out_features otherwise; plus the head."""
    layers, feedforward = plan(model, cfg)
    vectors = sum(m.in_features if p in feedforward else m.out_features for p, m in layers.items())
    return vectors + head_param_count(model)
