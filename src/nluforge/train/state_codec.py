"""How training state that is not a flat dict of tensors goes into a checkpoint (safetensors + JSON).

Checkpoints never pickle, so every piece of state is split into tensors (safetensors) and plain
values (JSON), and rebuilt from the two on resume.

- Optimizer state: an :class:`OptimizerCodec` per optimizer class. The default, :data:`FLAT`, stores
  each parameter's slot ``{idx}.{key}`` as a tensor or a JSON value, which covers torch's optimizers.
  An optimizer whose state holds objects (GaLore keeps a projector object per parameter) registers a
  codec with :func:`register_optimizer_codec`, or carries one as the class attribute ``state_codec``
  (for optimizers defined below this layer, which cannot import it). Third-party classes are matched
  by their qualified name (:data:`_CODECS_BY_NAME`), so nothing here imports their libraries:
  bitsandbytes' 8-bit optimizers keep nested dicts (:data:`TREE`), galore-torch keeps a
  ``GaLoreProjector`` per projected matrix (:data:`GALORE`), torchao's 8-bit state is a tensor
  subclass that safetensors cannot store (a one-line error at the first checkpoint).
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


class TreeCodec:
    """Any optimizer state of nested dicts/lists of tensors and JSON values (bitsandbytes' 8-bit state)."""

    name = "tree"

    def encode(self, state: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
        slots = {str(idx): self.to_tree(slot) for idx, slot in state["state"].items()}
        tensors, tree = encode_tree(slots, "opt")
        return tensors, {"param_groups": state["param_groups"], "tree": tree}

    def decode(self, tensors: Tensors, meta: dict[str, Any]) -> dict[str, Any]:
        slots = decode_tree(tensors, meta["tree"])
        return {"state": {int(idx): self.from_tree(slot) for idx, slot in slots.items()},
                "param_groups": meta["param_groups"]}

    def to_tree(self, slot: dict[str, Any]) -> dict[str, Any]:
        return slot

    def from_tree(self, slot: dict[str, Any]) -> dict[str, Any]:
        return slot


_PROJECTOR = "__galore_projector__"
_PROJECTOR_FIELDS = ("rank", "verbose", "update_proj_gap", "scale", "proj_type")


def _strided(t: Any) -> Any:
    """A tensor view as its whole storage plus shape/stride/offset, so it comes back with the same layout."""
    if isinstance(t, (list, tuple)):
        return [_strided(x) for x in t]
    if not torch.is_tensor(t):
        return t
    flat = torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage())
    return {"storage": flat, "shape": list(t.shape), "stride": list(t.stride()), "offset": t.storage_offset()}


def _unstrided(d: Any) -> Any:
    if isinstance(d, list):
        return [_unstrided(x) for x in d]
    if not isinstance(d, dict):
        return d
    return d["storage"].as_strided(d["shape"], d["stride"], d["offset"])


class GaLoreCodec(TreeCodec):
    """galore-torch: each projected parameter's ``projector`` (a ``GaLoreProjector``) as its settings and
    its projection matrix (two for ``proj_type="full"``), rebuilt on resume.

    The matrix is a slice of the SVD's output (e.g. ``U[:, :r]``); it is stored with its storage, shape
    and strides and rebuilt as the same view, because a matmul with a differently laid out copy rounds
    differently and a resumed run would drift from an uninterrupted one.
    """

    name = "galore"

    def to_tree(self, slot: dict[str, Any]) -> dict[str, Any]:
        proj = slot.get("projector")
        if proj is None:
            return slot
        fields = {k: getattr(proj, k) for k in _PROJECTOR_FIELDS}
        return {**slot, "projector": {_PROJECTOR: {**fields, "ortho_matrix": _strided(proj.ortho_matrix)}}}

    def from_tree(self, slot: dict[str, Any]) -> dict[str, Any]:
        proj = slot.get("projector")
        if not isinstance(proj, dict) or _PROJECTOR not in proj:
            return slot
        from galore_torch.galore_projector import GaLoreProjector

        fields = dict(proj[_PROJECTOR])
        matrix = _unstrided(fields.pop("ortho_matrix"))
        projector = GaLoreProjector(**fields)
        projector.ortho_matrix = matrix
        return {**slot, "projector": projector}


class UnsupportedCodec:
    """For a state no checkpoint can hold: a one-line error at the first checkpoint, naming the fix."""

    def __init__(self, name: str, why: str):
        self.name, self.why = name, why

    def encode(self, state: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
        raise UserError(self.why)

    def decode(self, tensors: Tensors, meta: dict[str, Any]) -> dict[str, Any]:
        raise UserError(self.why)


TREE, GALORE = TreeCodec(), GaLoreCodec()
_CODECS: dict[type, OptimizerCodec] = {}
# third-party optimizer classes by "module.QualName" (matched along the MRO), so nothing here imports them
_CODECS_BY_NAME: dict[str, OptimizerCodec] = {
    "bitsandbytes.optim.optimizer.Optimizer8bit": TREE,
    "galore_torch.adamw.AdamW": GALORE,
    "galore_torch.adamw8bit.AdamW8bit": GALORE,
    "galore_torch.adafactor.Adafactor": GALORE,
    "torchao.optim.adam._AdamBase": UnsupportedCodec(
        "torchao-8bit", "torchao's 8-bit optimizer state is a tensor subclass a safetensors checkpoint cannot "
        "hold; use adamw8bit backend=bitsandbytes, or train.checkpoint_every=0 and one epoch"),
}


def register_optimizer_codec(cls: type, codec: OptimizerCodec) -> None:
    """Use ``codec`` for optimizers of class ``cls`` and its subclasses."""
    _CODECS[cls] = codec


def codec_for(optimizer: Any) -> OptimizerCodec:
    """The registered codec for this optimizer's class (nearest in its MRO), its ``state_codec``, or FLAT."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the real one
    for cls in type(inner).__mro__:
        if cls in _CODECS:
            return _CODECS[cls]
        by_name = _CODECS_BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if by_name is not None:
            return by_name
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
