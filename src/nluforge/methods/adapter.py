"""Bottleneck adapters: small down-project / nonlinearity / up-project blocks with a residual.

Papers: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP" (ICML), two adapters per
layer; Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for Transfer Learning"
(EACL), one adapter per layer, after the feed-forward block (the "Pfeiffer" configuration).

An adapter maps ``h`` to ``h + W_up f(W_down h)`` with bottleneck ``m = hidden // reduction_factor``.
Placement (module paths from the architecture table, :mod:`nluforge.models.arch`):

- ``houlsby``: after the attention output projection and after the FFN output projection, i.e. before
  each sub-layer's residual add and LayerNorm (Houlsby et al., Fig. 2);
- ``pfeiffer``: after the FFN output projection only.

Trained: the adapters, the LayerNorms inside the encoder layers (both papers train them; switch off
with ``train_layernorm=False``) and the task head. Everything else is frozen.

Departures from the papers:

- the adapter wraps the output projection, so it runs *before* that sub-layer's dropout rather than
  after it (AdapterHub applies it after the dropout); the residual add and LayerNorm are unchanged;
- initialisation: ``W_down`` ~ N(0, 0.02) (BERT's init, as AdapterHub) and ``W_up = 0`` with zero
  biases, so the adapted model starts exactly at the pretrained one; Houlsby et al. draw both from a
  near-zero normal (std 1e-2), which starts *near* the identity instead of at it;
- Pfeiffer et al.'s configuration also wraps the adapter in an extra residual around the FFN
  LayerNorm; here the Pfeiffer placement is the Houlsby adapter at the FFN site only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods.base import MethodWrapper, freeze, head_param_count, unfreeze, unfreeze_head
from nluforge.models.arch import arch_of

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class Config:
    method: ClassVar[str] = "adapter"
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"  # two adapters per layer, or one after the FFN
    reduction_factor: int = 16  # bottleneck = hidden // reduction_factor (Houlsby: 8..256 wide for 768)
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    train_layernorm: bool = True  # the encoder layers' LayerNorms (both papers train them)

    def __post_init__(self):
        if self.placement not in ("houlsby", "pfeiffer"):
            raise UserError(f"adapter: placement must be 'houlsby' or 'pfeiffer', got '{self.placement}'")
        if self.non_linearity not in ACTIVATIONS:
            raise UserError(f"adapter: non_linearity must be one of {', '.join(ACTIVATIONS)}, "
                            f"got '{self.non_linearity}'")
        if self.reduction_factor < 1:
            raise UserError(f"adapter: reduction_factor must be >= 1, got {self.reduction_factor}")


class Bottleneck(nn.Module):
    """``h + up(f(down(h)))``; ``up`` starts at zero, so the block starts as the identity."""

    def __init__(self, hidden: int, bottleneck: int, non_linearity: str):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h):  # h: (B, T, H)
        return h + self.up(self.act(self.down(h)))  # (B, T, m) inside; (B, T, H) out


class Adapted(nn.Module):
    """A frozen projection followed by its adapter."""

    def __init__(self, base: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x):
        return self.adapter(self.base(x))


def _layers(model: nn.Module) -> nn.ModuleList:
    arch = arch_of(model)
    return model.get_submodule(f"{arch.base}.{arch.layers}")


def _sites(model: nn.Module, cfg: Config) -> list[str]:
    """Paths, inside one layer, of the projections that get an adapter."""
    arch = arch_of(model)
    return [arch.attn_out_path, arch.ffn_out_path] if cfg.placement == "houlsby" else [arch.ffn_out_path]


def _bottleneck(model: nn.Module, cfg: Config) -> tuple[int, int]:
    """(hidden, bottleneck) sizes, checked."""
    hidden = model.config.hidden_size
    if cfg.reduction_factor > hidden or hidden % cfg.reduction_factor:
        raise UserError(f"adapter: reduction_factor={cfg.reduction_factor} must divide the hidden size "
                        f"{hidden} (e.g. 8, 16 or 32 for a hidden size of 768)")
    return hidden, hidden // cfg.reduction_factor


def _layer_norms(model: nn.Module) -> list[nn.LayerNorm]:
    return [m for layer in _layers(model) for m in layer.modules() if isinstance(m, nn.LayerNorm)]


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    """Insert adapters into every encoder layer; returns a wrapper (saved as method state)."""
    hidden, bottleneck = _bottleneck(model, cfg)
    freeze(model)
    for layer in _layers(model):
        for path in _sites(model, cfg):
            parent_path, _, name = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            old = getattr(parent, name)
            setattr(parent, name, Adapted(old, Bottleneck(hidden, bottleneck, cfg.non_linearity)))
    for module in model.modules():
        if isinstance(module, Bottleneck):
            unfreeze(module.parameters())
    if cfg.train_layernorm:
        unfreeze(p for ln in _layer_norms(model) for p in ln.parameters())
    unfreeze_head(model)
    return MethodWrapper(model)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """layers · sites · (2·H·m + m + H) + LayerNorms in the layers (if trained) + head."""
    hidden, m = _bottleneck(model, cfg)
    adapters = len(_layers(model)) * len(_sites(model, cfg)) * (2 * hidden * m + m + hidden)
    norms = sum(p.numel() for ln in _layer_norms(model) for p in ln.parameters()) if cfg.train_layernorm else 0
    return adapters + norms + head_param_count(model)
