"""Parameter bookkeeping shared by methods, the training loop and checkpoints; sizes on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameter count, each shared tensor counted once.

    peft's ``modules_to_save`` keeps a frozen copy of the head (``original_module``) next to the trained
    one; the copy is never used in the forward pass, so it is not counted.
    """
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or (trainable_only and not p.requires_grad) or ".original_module." in name:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a method trains: trainable parameters, plus buffers it names in
    ``model._nluforge_extra_state`` (state that is learned or sampled but is not a parameter)."""
    state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name in getattr(model, "_nluforge_extra_state", ()):
        state[name] = model.get_buffer(name)
    return state


# --- size on disk ----------------------------------------------------------------------------------

BASE_REF = "base_model.json"  # in a saved folder that holds only trained tensors: which base they apply to
_TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model", "chat_template.jinja", "README.md"}  # README: peft's model card
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.onnx")  # one format is counted: the first found


@dataclass(frozen=True)
class SizeFigures:
    """Sizes in MB (10^6 bytes) of a saved model folder, tokenizer files (every variant ships the same
    tokenizer) and peft's model card excluded.

    ``delta_mb``: what must ship on top of the base model (an adapter, trained biases, a head; for a
    full or compressed model, the whole folder). ``standalone_mb``: the servable model on its own, the
    base's weights and config plus the delta (or the folder, for a full model); None when the base is
    not on this machine. ``base``: the base model the delta applies to (None for a full model).
    """

    delta_mb: float
    standalone_mb: float | None
    base: str | None


def size_figures(model_dir: str | Path, *, base: str | None = None) -> SizeFigures:
    """:class:`SizeFigures` of ``model_dir`` (a run's ``model/``).

    The folder says what it is: ``adapter_config.json`` (peft) or :data:`BASE_REF` (nluforge's trained
    tensors) name the base they apply to; anything else is a complete model. ``base`` overrides the
    recorded base (e.g. the run's ``model: default``, when the recorded path is another machine's).
    """
    model_dir = Path(model_dir)
    delta = _files_mb(p for p in model_dir.rglob("*") if p.is_file() and p.name not in _TOKENIZER_FILES)
    reference = _base_reference(model_dir)
    if reference is None:
        return SizeFigures(round(delta, 3), round(delta, 3), None)
    recorded, complete = reference
    if complete:  # the saved tensors are the whole model (e.g. prompt_based's fully trained MLM)
        return SizeFigures(round(delta, 3), round(delta, 3), None)
    name = base or recorded
    base_dir = _local_model_dir(name) if name else None
    base_mb = _base_weights_mb(base_dir) if base_dir is not None else None
    return SizeFigures(round(delta, 3), round(base_mb + delta, 3) if base_mb is not None else None, name or None)


def _files_mb(files) -> float:
    return sum(p.stat().st_size for p in files) / 1e6


def _base_reference(model_dir: Path) -> tuple[str, bool] | None:
    """(recorded base, whether the saved tensors are the complete model), or None for a full model."""
    for name in ("adapter_config.json", BASE_REF):
        file = model_dir / name
        if file.is_file():
            data = json.loads(file.read_text(encoding="utf-8"))
            return str(data.get("base_model_name_or_path") or ""), bool(data.get("complete", False))
    return None


def _local_model_dir(name: str) -> Path | None:
    """A local folder holding model ``name`` (a path, ``default``, or a hub id in the local cache)."""
    from nluforge.core.errors import UserError
    from nluforge.models.loading import resolve_model

    try:
        resolved = Path(resolve_model(name))
    except UserError:
        return None
    if resolved.is_dir():
        return resolved
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached (or not a hub id): the standalone size is unknown
        return None


def _base_weights_mb(base_dir: Path) -> float | None:
    """The base model's weights (one format) and config.json."""
    for pattern in _WEIGHTS:
        weights = [p for p in base_dir.glob(pattern) if p.is_file()]
        if weights:
            config = [base_dir / "config.json"] if (base_dir / "config.json").is_file() else []
            return _files_mb(weights + config)
    return None
