"""Resumable training checkpoints, in safetensors and JSON (never pickle), written atomically.

Layout under ``checkpoints/``::

    step-000200/  weights.safetensors  optimizer.safetensors  state.json  [hooks.safetensors]
    latest        the name of the newest complete step directory (replaced atomically)
    best.safetensors   the best evaluated weights so far

A step directory is written under a temporary name and renamed when complete, and ``latest`` moves
only after that, so a ``kill -9`` at any moment leaves the previous checkpoint intact.

``state.json`` holds the loop state (:class:`~nluforge.train.loop.LoopState` as JSON), the optimizer's
plain values (split from its tensors by the optimizer's codec, see :mod:`~nluforge.train.state_codec`),
the scheduler state, the non-tensor RNG states and the JSON half of the hooks' state; tensors of the
hooks' state (AdaLoRA's importance scores) go to ``hooks.safetensors``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write, atomic_write_text
from nluforge.models.params import trainable_state
from nluforge.train.state_codec import codec_for, decode_tree, encode_tree

LATEST = "latest"
BEST = "best.safetensors"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    cpu: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory (bitsandbytes shares one quantization map between
        # parameters): each gets its own copy, and loads as its own tensor
        cpu[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata={"format": "pt"}))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"checkpoint file {path} is corrupt ({err}); delete {path.parent} "
                        "or rerun without --resume") from None


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    plain = {"python": _jsonable(random.getstate()),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = plain["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = plain["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


def _jsonable(obj: Any) -> Any:
    return [_jsonable(x) for x in obj] if isinstance(obj, (tuple, list)) else obj


def save_checkpoint(ckpt_dir: Path, step: int, model: nn.Module, optimizer, scheduler, trainer: dict,
                    hooks: Any = None) -> Path:
    """Write ``step-NNNNNN/`` completely, point ``latest`` at it, and drop older step dirs.

    ``trainer`` is the loop state as JSON; ``hooks`` is saved when it has a ``state_dict``.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = ckpt_dir / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(trainable_state(model), tmp / "weights.safetensors")
    codec = codec_for(optimizer)
    opt_tensors, opt_meta = codec.encode(optimizer.state_dict())
    rng_tensors, rng_plain = rng_state()
    _save_tensors(opt_tensors | rng_tensors, tmp / "optimizer.safetensors")
    state = {"trainer": trainer, "optimizer": opt_meta, "optimizer_codec": codec.name, "rng": rng_plain,
             "scheduler": scheduler.state_dict() if scheduler is not None else None}
    hooks_state = getattr(hooks, "state_dict", None)
    if hooks_state is not None:
        hook_tensors, state["hooks"] = encode_tree(hooks_state(), "hooks")
        _save_tensors(hook_tensors, tmp / "hooks.safetensors")
    atomic_write_text(tmp / "state.json", json.dumps(state, default=float))
    final = ckpt_dir / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(ckpt_dir / LATEST, name)
    for old in ckpt_dir.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer, scheduler, hooks: Any = None) -> dict | None:
    """Restore the latest checkpoint into the given objects; return the loop state as JSON (or None)."""
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    step_dir = ckpt_dir / pointer.read_text().strip()
    try:
        state = json.loads((step_dir / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint {step_dir} is corrupt ({err}); delete it or rerun without --resume") from None
    codec = codec_for(optimizer)
    if state.get("optimizer_codec", "flat") != codec.name:
        raise UserError(f"checkpoint {step_dir} holds optimizer state in the '{state.get('optimizer_codec')}' format, "
                        f"this optimizer uses '{codec.name}'; was it made with another optimizer?")
    load_hooks = getattr(hooks, "load_state_dict", None)
    if load_hooks is not None and "hooks" not in state:
        raise UserError(f"checkpoint {step_dir} has no state for this method's training hooks; "
                        "was it made with another method? Rerun without --resume")
    load_weights(model, step_dir / "weights.safetensors")
    tensors = _load_tensors(step_dir / "optimizer.safetensors")
    opt = {k: v for k, v in tensors.items() if not k.startswith("rng.")}
    optimizer.load_state_dict(codec.decode(opt, state["optimizer"]))
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
    if load_hooks is not None:
        load_hooks(decode_tree(_load_tensors(step_dir / "hooks.safetensors"), state["hooks"]))
    return state["trainer"]


def save_weights(model: nn.Module, path: Path) -> None:
    _save_tensors(trainable_state(model), path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy saved trainable tensors into ``model`` in place (shapes and names must match)."""
    saved = _load_tensors(path)
    own = trainable_state(model)
    if set(saved) != set(own):
        extra = sorted(set(saved) ^ set(own))[:1]
        raise UserError(f"checkpoint {path} does not match this model/method (tensor {extra[0]}); "
                        "was it made with another config?")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor)
