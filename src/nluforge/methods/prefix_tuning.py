"""Prefix tuning / P-tuning v2: trainable key and value prefixes in every attention layer.

Papers: Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation" (ACL), which
learns the prefixes through a reparameterisation MLP (``prefix_projection=True``); and Liu et al. 2022,
"P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across Scales and Tasks"
(ACL), which applies them to NLU encoders with a classification head and finds the MLP optional
(``prefix_projection=False``, the default). Each layer l attends over [P_k^l; K] and [P_v^l; V],
with P_k^l, P_v^l of shape (N, hidden), so every layer, not only the input, is steered.

Why not peft's ``PrefixTuningConfig``: peft passes the prefixes as a key/value cache, which needs the
encoder's ``forward`` to take ``past_key_values``; transformers 5.24 renamed that argument to ``cache``
for BERT-style encoders and peft refuses the model ("does not support past key values"). Here the
prefixes go in through the attention modules themselves, which every transformers 5.x version runs
the same way: each layer's self-attention module (``self_attn_path`` in the arch table) is wrapped so
that its input gets N placeholder rows in front, its ``key`` and ``value`` Linears return the layer's
prefixes for those rows, the attention mask gains N attended key columns, and the N extra output rows
are dropped. The model code never sees a cache, so the same code serves every version.

Parameters: without the MLP an N x (2 · layers · hidden) table, N(0, 1) as peft's and P-tuning v2's
``nn.Embedding``; with it, an (N, hidden) embedding goes through Linear(hidden, E) -> tanh ->
Linear(E, 2 · layers · hidden) (P-tuning v2's ``PrefixEncoder``). The same counts as peft's.

Departures: the real tokens keep their positions 0..T-1 (peft and P-tuning v2's BERT code shift them by
N, as a cache would), so ``data.max_length`` alone is limited by the model's positions; the N
placeholder rows also compute (unused) queries, a small cost next to the layer's FFN; the saved form
holds the trained tensors (the table, or the MLP and its input embedding) and the head, so a run
trained with the MLP reloads exactly and can be trained further (peft saves the projected prefixes).
The prefixes are handed to the layers for the duration of one ``forward`` call, so activation
(gradient) checkpointing, which re-runs layers during ``backward``, is not supported.
On the default model, a 47-step SST-2 run (1,500 examples, batch 32, lr 3e-2, max_length 64) reaches
73.2% dev accuracy (peft's cache-based version did 72.1%); with the MLP (E = 512) the same run stays at
the majority class (50.9%) at lr 3e-2 and at 5e-3: the reparameterised form needs longer training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods import peft_common as pc
from nluforge.methods.base import MethodWrapper, freeze, head_param_count, unfreeze_head
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "prefix_tuning"
    num_virtual_tokens: int = 20  # prefix length N per layer: 2 x layers x N x hidden trainable values
    prefix_projection: bool = False  # Li & Liang's reparameterisation MLP (True) or direct prefixes (False)
    encoder_hidden_size: int = 512  # width E of that MLP (used only with prefix_projection)

    def __post_init__(self):
        pc.check_positive(self.method, num_virtual_tokens=self.num_virtual_tokens,
                          encoder_hidden_size=self.encoder_hidden_size)


class PrefixEncoder(nn.Module):
    """The trainable prefixes of every layer: ``forward() -> (N, layers, 2, hidden)`` (key, value)."""

    def __init__(self, n: int, layers: int, hidden: int, cfg: Config):
        super().__init__()
        self.shape = (n, layers, 2, hidden)
        width = layers * 2 * hidden
        self.embedding = nn.Embedding(n, hidden if cfg.prefix_projection else width)  # N(0, 1)
        self.mlp = (nn.Sequential(nn.Linear(hidden, cfg.encoder_hidden_size), nn.Tanh(),
                                  nn.Linear(cfg.encoder_hidden_size, width))
                    if cfg.prefix_projection else None)

    def forward(self) -> torch.Tensor:
        table = self.embedding.weight  # (N, 2LH) or (N, H)
        if self.mlp is not None:
            table = self.mlp(table)  # (N, H) -> (N, 2LH)
        return table.view(self.shape)  # (N, L, 2, H)


class PrefixRows(nn.Module):
    """A frozen key or value Linear whose first N output rows are the layer's prefix."""

    def __init__(self, linear: nn.Module, owner: PrefixAttention, slot: int):
        super().__init__()
        self.linear = linear
        self.slot = slot  # 0: key, 1: value
        self._owner = [owner]  # a list, so the owner is not registered as a child module (no cycle)

    def forward(self, x):  # x: (B, N + T, H), the first N rows placeholders
        prefix = self._owner[0].prefix_for(self.slot)  # (N, H)
        n = prefix.shape[0]
        rest = self.linear(x[:, n:])  # (B, T, H)
        return torch.cat([prefix.to(rest.dtype).expand(x.shape[0], -1, -1), rest], 1)  # (B, N + T, H)


class PrefixAttention(nn.Module):
    """Wraps one self-attention module: N placeholder rows in, the N extra output rows out."""

    def __init__(self, attention: nn.Module, key: str, value: str):
        super().__init__()
        self.attention = attention
        self.kv: torch.Tensor | None = None  # (N, 2, H), set by PrefixTuningModel for one forward
        for slot, name in enumerate((key, value)):
            setattr(attention, name, PrefixRows(getattr(attention, name), self, slot))

    def prefix_for(self, slot: int) -> torch.Tensor:
        if self.kv is None:
            raise RuntimeError("prefix_tuning: call the PrefixTuningModel, not the wrapped encoder")
        return self.kv[:, slot]  # (N, H)

    def forward(self, hidden_states, *args, **kwargs):  # hidden_states: (B, T, H)
        n = self.kv.shape[0] if self.kv is not None else 0
        padded = torch.cat([hidden_states.new_zeros(hidden_states.shape[0], n, hidden_states.shape[2]),
                            hidden_states], 1)  # (B, N + T, H)
        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = extend_mask(kwargs["attention_mask"], n)
        elif args:
            args = (extend_mask(args[0], n), *args[1:])
        out = self.attention(padded, *args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out[:, n:]
        return (out[0][:, n:], *(_drop_query_rows(o, n) for o in out[1:]))


def extend_mask(mask, n: int):
    """Let every query attend to the N prefix keys (and give the N placeholder queries a full row).

    Handles what transformers 5.x hands an attention module: None (no padding), a 4-D boolean
    (True = attend) or additive float mask of shape (B, 1, T or 1, T), or a 2-D (B, T) padding mask.
    """
    if mask is None or n == 0:
        return mask
    if not isinstance(mask, torch.Tensor):
        raise UserError(f"prefix_tuning: unsupported attention mask type {type(mask).__name__}; "
                        "load the model with attn_implementation 'sdpa' or 'eager'")
    attend = True if mask.dtype == torch.bool else (1 if mask.dim() == 2 else 0)
    cols = mask.new_full((*mask.shape[:-1], n), attend)
    mask = torch.cat([cols, mask], -1)  # (..., N + T) keys
    if mask.dim() == 4 and mask.shape[-2] > 1:
        rows = mask.new_full((mask.shape[0], mask.shape[1], n, mask.shape[-1]), attend)
        mask = torch.cat([rows, mask], -2)  # (B, 1, N + T, N + T)
    return mask


def _drop_query_rows(x, n: int):
    """Attention weights (B, heads, N + T, N + T) -> (B, heads, T, N + T); anything else as is."""
    return x[..., n:, :] if isinstance(x, torch.Tensor) and x.dim() == 4 else x


class PrefixTuningModel(MethodWrapper):
    """The frozen classifier with prefixed attention; saved as the prefix encoder plus the head."""

    def __init__(self, model: nn.Module, cfg: Config):
        super().__init__(model)
        c = model.config
        self.prefix = PrefixEncoder(cfg.num_virtual_tokens, c.num_hidden_layers, c.hidden_size, cfg)
        self._attention = _wrap_layers(model)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        kv = self.prefix()  # (N, L, 2, H)
        for i, attention in enumerate(self._attention):
            attention.kv = kv[:, i]  # (N, 2, H)
        try:
            return super().forward(input_ids, attention_mask, token_type_ids, **kwargs)
        finally:
            for attention in self._attention:
                attention.kv = None


def _wrap_layers(model: nn.Module) -> list[PrefixAttention]:
    arch = arch_of(model)
    layers = model.get_submodule(f"{arch.base}.{arch.layers}")
    wrapped = []
    for layer in layers:
        parent_path, _, name = arch.self_attn_path.rpartition(".")
        parent = layer.get_submodule(parent_path) if parent_path else layer
        attention = PrefixAttention(getattr(parent, name), arch.key, arch.value)
        setattr(parent, name, attention)
        wrapped.append(attention)
    return wrapped


def _check(model: nn.Module) -> None:
    arch = arch_of(model)
    if arch.self_attn_path is None:
        raise UserError(f"prefix_tuning does not support {model.config.model_type} models yet (its attention "
                        "is not a plain query/key/value block); use prompt_tuning or lora")
    layers = model.get_submodule(f"{arch.base}.{arch.layers}")
    if len(layers) != model.config.num_hidden_layers:
        raise UserError(f"prefix_tuning: found {len(layers)} layers, the config says "
                        f"{model.config.num_hidden_layers}")


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    _check(model)
    freeze(model)
    wrapper = PrefixTuningModel(model, cfg)
    unfreeze_head(model)
    return wrapper


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
