"""How training state that is not a flat dict of tensors goes into a checkpoint (safetensors + JSON).

Checkpoints never pickle, so every piece of state is split into tensors (safetensors) and plain
values (JSON), and rebuilt from the two on resume.

- Optimizer state: an :class:`OptimizerCodec` per optimizer class. The default, :data:`FLAT`, stores
  each parameter's slot ``{idx}.{key}`` as a tensor or a JSON value, which covers torch's optimizers.
  An optimizer whose state holds objects (GaLore keeps a projector object per parameter) registers a
  codec with :func:`register_optimizer_codec`, or carries one as the class attribute ``state_codec``
  (for optimizers defined below this layer, which cannot import it).
- Hook state (e.g. AdaLoRA's importance scores): nested dicts and lists of tensors and JSON values,
  handled by :func:`encode_tree` / :func:`decode_tree`.
"""

from __future__ import annotations

import numbers
from typing import Any, Protocol

import torch

from nluforge.core.errors import UserError

Tensors = dict[str, torch.Tensor]
_JSON_SCALARS = (bool, int, float, str, type(None))


class OptimizerCodec(Protocol):
    name: str  # recorded in the checkpoint, checked on resume

    def encode(self, state: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
        """``optimizer.state_dict()`` -> (tensors for safetensors, a JSON-able dict)."""
        ...

    def decode(self, tensors: Tensors, meta: dict[str, Any]) -> dict[str, Any]:
        """The inverse: a state dict that ``optimizer.load_state_dict`` accepts."""
        ...


class FlatCodec:
    """torch's optimizer state: ``state[idx][key]`` is a tensor or a JSON value (e.g. a step count)."""

    name = "flat"

    def encode(self, state: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
        tensors: Tensors = {}
        scalars: dict[str, Any] = {}
        for idx, slot in state["state"].items():
            for key, value in slot.items():
                name = f"{idx}.{key}"
                if torch.is_tensor(value):
                    tensors[name] = value
                elif _is_json(value):
                    scalars[name] = value
                else:
                    raise UserError(f"optimizer state '{name}' holds a {type(value).__name__}, which a checkpoint "
                                    "cannot store; register a codec for this optimizer class with "
                                    "nluforge.train.state_codec.register_optimizer_codec")
        return tensors, {"param_groups": state["param_groups"], "scalars": scalars}

    def decode(self, tensors: Tensors, meta: dict[str, Any]) -> dict[str, Any]:
        state: dict[int, dict[str, Any]] = {}
        for name, value in list(tensors.items()) + list(meta["scalars"].items()):
            idx, key = name.split(".", 1)
            state.setdefault(int(idx), {})[key] = value
        return {"state": state, "param_groups": meta["param_groups"]}


FLAT = FlatCodec()
_CODECS: dict[type, OptimizerCodec] = {}


def register_optimizer_codec(cls: type, codec: OptimizerCodec) -> None:
    """Use ``codec`` for optimizers of class ``cls`` and its subclasses."""
    _CODECS[cls] = codec


def codec_for(optimizer: Any) -> OptimizerCodec:
    """The registered codec for this optimizer's class (nearest in its MRO), its ``state_codec``, or FLAT."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the real one
    for cls in type(inner).__mro__:
        if cls in _CODECS:
            return _CODECS[cls]
    return getattr(inner, "state_codec", None) or FLAT


def encode_tree(tree: Any, prefix: str) -> tuple[Tensors, Any]:
    """Nested dicts (str keys) / lists of tensors and JSON values -> (tensors named ``prefix.N``, JSON).

    Each tensor is replaced in the JSON by ``{"__tensor__": name}``.
    """
    tensors: Tensors = {}

    def walk(node: Any) -> Any:
        if torch.is_tensor(node):
            name = f"{prefix}.{len(tensors)}"
            tensors[name] = node
            return {"__tensor__": name}
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                raise TypeError(f"state to checkpoint has a dict with non-string keys: {list(node)[:3]}")
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v) for v in node]
        if _is_json(node):
            return node
        raise TypeError(f"state to checkpoint holds a {type(node).__name__}; use tensors, dicts, lists and numbers")

    return tensors, walk(tree)


def decode_tree(tensors: Tensors, encoded: Any) -> Any:
    if isinstance(encoded, dict):
        if set(encoded) == {"__tensor__"}:
            return tensors[encoded["__tensor__"]]
        return {k: decode_tree(tensors, v) for k, v in encoded.items()}
    if isinstance(encoded, list):
        return [decode_tree(tensors, v) for v in encoded]
    return encoded


def _is_json(value: Any) -> bool:
    if isinstance(value, (*_JSON_SCALARS, numbers.Real)):  # numpy scalars: json.dumps(default=float)
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
