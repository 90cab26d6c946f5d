"""Prefix tuning / P-tuning v2: trainable key and value prefixes in every attention layer.

Papers: Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation" (ACL), which
learns the prefixes through a reparameterisation MLP (``prefix_projection=True``); and Liu et al. 2022,
"P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across Scales and Tasks"
(ACL), which applies them to NLU encoders with a classification head and finds the MLP optional
(``prefix_projection=False``, the default). Each layer l attends over [P_k^l; K] and [P_v^l; V],
with P_k^l, P_v^l of shape (N, hidden), so every layer, not only the input, is steered.

Implementation: peft's ``PrefixTuningConfig``; peft passes the prefixes as a key/value cache and
extends the attention mask by N ones. Without the MLP the N x (2 · layers · hidden) table is learned
directly; with it, an (N, hidden) embedding goes through Linear(hidden, E) -> tanh ->
Linear(E, 2 · layers · hidden).

Departures: as in P-tuning v2's BERT code, the real tokens' position ids start at N (transformers
offsets positions by the cache length), so keep ``data.max_length + num_virtual_tokens`` within the
model's maximum positions. A saved adapter trained with the MLP stores the projected prefixes, not
the MLP (peft's format): it reloads for inference, not to resume training of the MLP. On the default
model, a 47-step SST-2 run learns at lr 3e-2 and stays at the majority class at 1e-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from nluforge.methods import peft_common as pc
from nluforge.methods.base import head_param_count


@dataclass
class Config:
    method: ClassVar[str] = "prefix_tuning"
    num_virtual_tokens: int = 20  # prefix length N per layer: 2 x layers x N x hidden trainable values
    prefix_projection: bool = False  # Li & Liang's reparameterisation MLP (True) or direct prefixes (False)
    encoder_hidden_size: int = 512  # width E of that MLP (used only with prefix_projection)

    def __post_init__(self):
        pc.check_positive(self.method, num_virtual_tokens=self.num_virtual_tokens,
                          encoder_hidden_size=self.encoder_hidden_size)


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    from peft import PrefixTuningConfig

    peft_config = PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=cfg.num_virtual_tokens,
                                     prefix_projection=cfg.prefix_projection,
                                     encoder_hidden_size=cfg.encoder_hidden_size)
    return pc.wrap(model, peft_config)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """Direct: N x (2 · L · H). With the MLP: N·H + (H·E + E) + (E·2LH + 2LH). Plus the head."""
    n, hidden, layers = cfg.num_virtual_tokens, model.config.hidden_size, model.config.num_hidden_layers
    kv = 2 * layers * hidden  # one key and one value vector per layer, per virtual token
    if not cfg.prefix_projection:
        prefixes = n * kv
    else:
        e = cfg.encoder_hidden_size
        prefixes = n * hidden + (hidden * e + e) + (e * kv + kv)
    return prefixes + head_param_count(model)
