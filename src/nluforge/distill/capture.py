"""The last layer's query/key/value projections of a model, captured with forward hooks.

MiniLM needs the attention distributions and the values of the last layer. We hook the query, key and
value Linears (named by :mod:`nluforge.models.arch`) rather than switching to eager attention and asking
for ``output_attentions``: SDPA returns no weights, eager attention would slow every forward of the
teacher and student, and attention weights alone would still lack the values. The hooks read the
projections SDPA is given, so the model keeps its own attention kernel; the relations are computed in
:func:`nluforge.distill.losses.relation_log_probs`.
"""

from __future__ import annotations

from torch import nn

from nluforge.core.errors import UserError
from nluforge.models.arch import arch_of


def inner_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The encoder's ModuleList of layers (``bert.encoder.layer`` for BERT)."""
    inner = inner_model(model)
    arch = arch_of(inner)
    return inner.get_submodule(f"{arch.base}.{arch.layers}")


def last_layer_qkv(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The last layer's query, key and value Linears; UserError where the table cannot name them."""
    inner = inner_model(model)
    arch = arch_of(inner)
    if arch.self_attn_path is None or len({arch.query, arch.key, arch.value}) < 3:
        raise UserError(f"MiniLM distillation needs separate query/key/value projections, which nluforge does not "
                        f"know for {inner.config.model_type}; set -p minilm_weight=0")
    attn = layer_list(inner)[-1].get_submodule(arch.self_attn_path)
    return attn.get_submodule(arch.query), attn.get_submodule(arch.key), attn.get_submodule(arch.value)


class QKVCapture:
    """Hooks that keep the last forward's query, key and value projections, each (B, T, D)."""

    def __init__(self, model: nn.Module):
        self.outputs: list = [None, None, None]
        self._handles = [m.register_forward_hook(self._keep(i)) for i, m in enumerate(last_layer_qkv(model))]

    def _keep(self, i: int):
        def hook(_module, _args, output):
            self.outputs[i] = output

        return hook

    def take(self):
        """(q, k, v) of the latest forward; cleared so a stale capture is never read twice."""
        q, k, v = self.outputs
        if q is None:
            raise RuntimeError("no query/key/value captured: the hooked model did not run a forward")
        self.outputs = [None, None, None]
        return q, k, v

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
