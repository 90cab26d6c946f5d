"""Ladder Side-Tuning: a small side transformer reads the frozen backbone's hidden states.

Paper: Sung, Cho & Bansal 2022, "LST: Ladder Side-Tuning for Parameter and Memory Efficient Transfer
Learning" (NeurIPS). Official code: github.com/ylsung/Ladder-Side-Tuning.

The backbone runs under ``torch.no_grad()``: autograd records nothing inside it, so training memory
holds only the backbone's per-layer outputs (the ladder inputs) plus the side network's activations.
With ``N`` backbone layers, hidden size ``d`` and side width ``d_s = d / reduction_factor``::

    s = down_0(h_0)                                           # (B, T, d_s), h_0 = embedding output
    for i in 1..N:
        mu_i = sigmoid(alpha_i / T)                           # learned gate, T = gate_temperature
        s = side_i(mu_i * down_i(h_i) + (1 - mu_i) * s)       # ladder from backbone layer i
    logits = head(s[:, 0])                                    # (B, num_labels)

``side_i`` is a post-LayerNorm transformer layer (the backbone's layout) with ``d_s`` width, the
backbone's head count and FFN width ``ffn / reduction_factor``. With ``init="prune"`` (the paper) its
weights are the backbone layer's, structurally pruned by L1 importance as in the official code: the
residual dimensions kept are those with the largest L1 norm in the word-embedding matrix; per head,
the attention dimensions with the largest L1 norm of ``|Wq|·|Wk|·|Wv|·|Wo^T|``; the FFN units with the
largest L1 norm of ``|W_in|·|W_out^T|``. The ladder projections ``down_i`` start as the matching
selection of the kept residual dimensions, so the pruned side layers first see the inputs their
weights were cut for. ``init="random"`` draws everything fresh.

Departures: the gate follows the formula above (the official code weights the side state by
``mu_i``, the mirror image under ``alpha -> -alpha``; both start at 0.5); the official code's 1-shot
pruning uses Torch-Pruning's dependency graph on T5, here the same L1 criteria are applied directly;
the head is a new two-layer classifier (dense, tanh, out) on the side network's first token (the
paper's T5 models decode from the up-projected side output instead); no side-layer dropping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from nluforge.core.errors import UserError
from nluforge.methods.base import freeze
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "lst"
    reduction_factor: int = 8  # side width d / reduction_factor (paper: 8)
    gate_temperature: float = 0.1  # T in sigmoid(alpha / T) (paper: 0.1)
    gate_init: float = 0.0  # alpha's initial value: sigmoid(0) = 0.5
    init: Literal["prune", "random"] = "prune"  # side weights from the pruned backbone, or fresh
    dropout: float = 0.1

    def __post_init__(self):
        if self.reduction_factor < 1:
            raise UserError(f"lst: reduction_factor must be >= 1, got {self.reduction_factor}")
        if self.gate_temperature <= 0:
            raise UserError(f"lst: gate_temperature must be positive, got {self.gate_temperature}")
        if self.init not in ("prune", "random"):
            raise UserError(f"lst: init must be 'prune' or 'random', got '{self.init}'")
        if not 0 <= self.dropout < 1:
            raise UserError(f"lst: dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class Sizes:
    layers: int  # N
    hidden: int  # d
    side: int  # d_s
    heads: int
    ffn: int  # side FFN width


def _sizes(model: nn.Module, cfg: Config) -> Sizes:
    c, rf = model.config, cfg.reduction_factor
    d, heads = c.hidden_size, c.num_attention_heads
    if d % rf or (d // rf) % heads or c.intermediate_size % rf:
        raise UserError(f"lst: reduction_factor={rf} must divide the hidden size {d} into a width divisible "
                        f"by the {heads} attention heads, and divide the FFN size {c.intermediate_size} "
                        f"(try {', '.join(str(f) for f in (2, 4, 8, 16) if d % (f * heads) == 0)})")
    return Sizes(c.num_hidden_layers, d, d // rf, heads, c.intermediate_size // rf)


class LadderSideNetwork(nn.Module):
    """Ladders (down-projections and gates), side layers and the head."""

    def __init__(self, s: Sizes, cfg: Config, num_labels: int, eps: float):
        super().__init__()
        self.temperature = cfg.gate_temperature
        self.down = nn.ModuleList(nn.Linear(s.hidden, s.side) for _ in range(s.layers + 1))
        self.gates = nn.Parameter(torch.full((s.layers,), cfg.gate_init))  # alpha_1..alpha_N
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(s.side, s.heads, s.ffn, cfg.dropout, activation="gelu",
                                       layer_norm_eps=eps, batch_first=True) for _ in range(s.layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.dense = nn.Linear(s.side, s.side)
        self.out = nn.Linear(s.side, num_labels)

    def forward(self, hidden_states, attention_mask):  # N+1 tensors (B, T, d); mask (B, T)
        pad = attention_mask == 0  # (B, T), True = ignore
        mu = torch.sigmoid(self.gates / self.temperature)  # (N,)
        s = self.down[0](hidden_states[0])  # (B, T, d_s)
        for i, layer in enumerate(self.layers):
            ladder = self.down[i + 1](hidden_states[i + 1])  # (B, T, d_s)
            s = layer(mu[i] * ladder + (1 - mu[i]) * s, src_key_padding_mask=pad)  # (B, T, d_s)
        pooled = torch.tanh(self.dense(self.dropout(s[:, 0])))  # (B, d_s)
        return self.out(self.dropout(pooled))  # (B, num_labels)


class LSTModel(nn.Module):
    """Frozen backbone (no autograd graph) + trainable ladder side network."""

    def __init__(self, model: nn.Module, side: LadderSideNetwork):
        super().__init__()
        self.model = model
        self.config = model.config
        self.side = side
        self._has_token_types = arch_of(model).has_token_type_ids

    def backbone(self) -> nn.Module:
        return getattr(self.model, arch_of(self.model).base)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_kw):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None and self._has_token_types else {}
        with torch.no_grad():
            out = self.backbone()(input_ids=input_ids, attention_mask=attention_mask,
                                  output_hidden_states=True, **extra)
        return SequenceClassifierOutput(logits=self.side(out.hidden_states, attention_mask))


def _linear(layer: nn.Module, name: str) -> nn.Linear:
    """The one Linear in ``layer`` whose path is ``name`` or ends with ``.name``."""
    found = [m for p, m in layer.named_modules() if isinstance(m, nn.Linear) and (p == name or p.endswith("." + name))]
    if len(found) != 1:
        raise UserError(f"lst: init='prune' needs one '{name}' projection per layer, found {len(found)}; "
                        "use init: random for this architecture")
    return found[0]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


def _head_dims(importance: torch.Tensor, heads: int, keep: int) -> torch.Tensor:
    """Top-``keep`` dims inside each head of an (heads·dh,) importance vector, in head order."""
    per_head = importance.view(heads, -1)  # (heads, dh)
    idx = per_head.topk(keep, dim=1).indices.sort(dim=1).values  # (heads, keep)
    return (idx + torch.arange(heads)[:, None] * per_head.shape[1]).flatten()


@torch.no_grad()
def _prune_into(side: nn.TransformerEncoderLayer, layer: nn.Module, arch, keep: torch.Tensor, s: Sizes) -> None:
    """Copy ``layer``'s weights into ``side``, restricted to the kept residual dims ``keep``."""
    q, k, v = (_linear(layer, n) for n in (arch.query, arch.key, arch.value))
    o, fi, fo = (layer.get_submodule(p) for p in (arch.attn_out_path, arch.ffn_in_path, arch.ffn_out_path))
    attn_imp = (q.weight.abs() * k.weight.abs() * v.weight.abs() * o.weight.T.abs()).sum(1)  # (d_att,)
    att = _head_dims(attn_imp, s.heads, s.side // s.heads)  # (d_s,)
    ffn = _top((fi.weight.abs() * fo.weight.T.abs()).sum(1), s.ffn)  # (ffn_s,)
    side.self_attn.in_proj_weight.copy_(torch.cat([w.weight[att][:, keep] for w in (q, k, v)]))
    side.self_attn.in_proj_bias.copy_(torch.cat([w.bias[att] for w in (q, k, v)]))
    side.self_attn.out_proj.weight.copy_(o.weight[keep][:, att])
    side.self_attn.out_proj.bias.copy_(o.bias[keep])
    side.linear1.weight.copy_(fi.weight[ffn][:, keep])
    side.linear1.bias.copy_(fi.bias[ffn])
    side.linear2.weight.copy_(fo.weight[keep][:, ffn])
    side.linear2.bias.copy_(fo.bias[keep])
    norms = [m for m in layer.modules() if isinstance(m, nn.LayerNorm)]
    if len(norms) == 2:  # post-LN layer: attention LayerNorm, then output LayerNorm (else keep 1 / 0)
        for target, source in zip((side.norm1, side.norm2), norms, strict=True):
            target.weight.copy_(source.weight[keep])
            target.bias.copy_(source.bias[keep])


@torch.no_grad()
def _prune_init(side: LadderSideNetwork, model: nn.Module, s: Sizes) -> None:
    arch = arch_of(model)
    words = model.get_submodule(f"{arch.base}.{arch.word_embeddings}").weight  # (V, d)
    keep = _top(words.abs().sum(0), s.side)  # (d_s,) residual dims kept
    layers = model.get_submodule(f"{arch.base}.{arch.layers}")
    for side_layer, layer in zip(side.layers, layers, strict=True):
        _prune_into(side_layer, layer, arch, keep, s)
    for down in side.down:  # each ladder starts as the selection of the kept dims
        down.weight.zero_()
        down.weight[torch.arange(s.side), keep] = 1.0
        down.bias.zero_()


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    s = _sizes(model, cfg)
    side = LadderSideNetwork(s, cfg, model.config.num_labels, getattr(model.config, "layer_norm_eps", 1e-12))
    if cfg.init == "prune":
        _prune_init(side, model, s)
    freeze(model)
    return LSTModel(model, side)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """(N+1)(d·d_s + d_s) ladders + N gates + N side layers + head (d_s² + d_s + d_s·L + L).

    A side layer: attention 4·d_s² + 4·d_s, FFN 2·d_s·f + f + d_s, two LayerNorms 4·d_s.
    """
    s, labels = _sizes(model, cfg), model.config.num_labels
    ladders = (s.layers + 1) * (s.hidden * s.side + s.side) + s.layers
    layer = 4 * s.side**2 + 4 * s.side + 2 * s.side * s.ffn + s.ffn + s.side + 4 * s.side
    head = s.side**2 + s.side + s.side * labels + labels
    return ladders + s.layers * layer + head
