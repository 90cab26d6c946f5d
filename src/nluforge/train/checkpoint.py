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

With a checkpoint codec (``train.checkpoint_codec``, :mod:`nluforge.train.codecs`) a step directory
holds ``weights.<codec>.safetensors`` (compressed blobs) instead of ``weights.safetensors``, and
``state.json`` records the codec's settings, the per-tensor widths, the SHA-256 of each file and the
checkpoint it is a delta against (``reference``). Every step directory in the chain of ``latest`` is
kept (older ones are removed only when no longer referenced), a new one is written under a
temporary name, and ``latest`` moves last: a ``kill -9`` mid-write leaves the previous chain whole.
"""

from __future__ import annotations

import hashlib
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
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


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
                    hooks: Any = None, codec: Any = None, calib_loss: Any = None) -> Path:
    """Write ``step-NNNNNN/`` completely, point ``latest`` at it, and drop step dirs it does not need.

    ``trainer`` is the loop state as JSON; ``hooks`` is saved when it has a ``state_dict``. With a
    ``codec`` (:mod:`nluforge.train.codecs`), weights and optimizer state go through it;
    ``calib_loss()`` is the loss its sensitivity search measures.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = ckpt_dir / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt_codec = codec_for(optimizer)
    opt_tensors, opt_meta = opt_codec.encode(optimizer.state_dict())
    rng_tensors, rng_plain = rng_state()
    state = {"trainer": trainer, "optimizer": opt_meta, "optimizer_codec": opt_codec.name, "rng": rng_plain,
             "scheduler": scheduler.state_dict() if scheduler is not None else None}
    recon = None
    if codec is None:
        _save_tensors(trainable_state(model), tmp / WEIGHTS)
        _save_tensors(opt_tensors | rng_tensors, tmp / OPTIMIZER)
    else:
        weights = trainable_state(model)
        blobs, weights_meta, recon = codec.encode_weights(weights, calib_loss)
        weights_file = f"weights.{codec.name}.safetensors"
        _save_tensors(blobs, tmp / weights_file)
        opt_blobs, opt_codec_meta = codec.encode_optimizer(opt_tensors)
        _save_tensors(opt_blobs | rng_tensors, tmp / OPTIMIZER)
        state["checkpoint_codec"] = {
            **codec.settings(), "weights_file": weights_file, "weights": weights_meta,
            "optimizer": opt_codec_meta, "files": {f: _digest(tmp / f) for f in (weights_file, OPTIMIZER)},
            "sizes": {"weights_bytes": (tmp / weights_file).stat().st_size,
                      "optimizer_bytes": (tmp / OPTIMIZER).stat().st_size,
                      "fp32_weights_bytes": _nbytes(weights), "fp32_optimizer_bytes": _nbytes(opt_tensors)}}
    hooks_state = getattr(hooks, "state_dict", None)
    if hooks_state is not None:
        hook_tensors, state["hooks"] = encode_tree(hooks_state(), "hooks")
        _save_tensors(hook_tensors, tmp / "hooks.safetensors")
    atomic_write_text(tmp / STATE, json.dumps(state, default=float))
    final = ckpt_dir / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(ckpt_dir / LATEST, name)
    if codec is not None:
        codec.commit(name, recon)
    keep = set(chain(ckpt_dir, name))
    for old in ckpt_dir.glob("step-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state(step_dir: Path) -> dict[str, Any]:
    """A step directory's ``state.json``, or a one-line error naming it."""
    try:
        return json.loads((step_dir / STATE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint {step_dir} is corrupt or incomplete ({err}); delete it or rerun "
                        "without --resume") from None


def chain(ckpt_dir: Path, name: str) -> list[str]:
    """``name`` and the checkpoints it is a delta against, newest first (a plain checkpoint ends it)."""
    names = [name]
    while True:
        codec_state = read_state(ckpt_dir / names[-1]).get("checkpoint_codec")
        ref = codec_state["weights"]["reference"] if codec_state else None
        if ref is None:
            return names
        if not (ckpt_dir / ref / STATE).is_file():
            raise UserError(f"checkpoint {ckpt_dir / names[-1]} is a delta against {ref}, which is missing or "
                            "incomplete; the chain cannot be restored: delete the checkpoints or rerun without --resume")
        names.append(ref)


def restore_weights(ckpt_dir: Path, model: nn.Module, name: str | None = None) -> dict[str, torch.Tensor]:
    """Load the weights of checkpoint ``name`` (default: ``latest``) into ``model``, decoding its chain.

    The model must hold its *initial* weights (as built before training) when the chain starts from
    them; a mismatch is an error, never a silently different model. Returns the restored tensors.
    """
    name = name or (ckpt_dir / LATEST).read_text().strip()
    links = chain(ckpt_dir, name)
    own = trainable_state(model)
    reference = {k: v.detach().to("cpu").clone() for k, v in own.items()}
    for link in reversed(links):
        step_dir = ckpt_dir / link
        codec_state = read_state(step_dir).get("checkpoint_codec")
        if codec_state is None:
            reference = _load_tensors(step_dir / WEIGHTS)
            continue
        codec = _codec_of(codec_state, step_dir)
        if codec_state["weights"]["reference"] is None:
            codec.attach(reference)
            if codec.base_hash != codec_state["weights"]["base_hash"]:
                raise UserError(f"checkpoint {step_dir} was encoded against other initial weights (another model, "
                                "method or seed); restore it with the run's own config")
        blobs = _verified(step_dir, codec_state["weights_file"], codec_state)
        reference = codec.decode_weights(blobs, codec_state["weights"], reference, str(step_dir / codec_state["weights_file"]))
    _copy_into(model, reference, ckpt_dir / name)
    return reference


def _codec_of(codec_state: dict[str, Any], step_dir: Path):
    from nluforge.train.codecs import make_codec

    return make_codec(codec_state["codec"], codec_state["params"])


def _verified(step_dir: Path, file: str, codec_state: dict[str, Any]) -> dict[str, torch.Tensor]:
    path = step_dir / file
    if not path.is_file() or _digest(path) != codec_state["files"][file]:
        raise UserError(f"compressed checkpoint file {path} is missing or corrupt (its SHA-256 does not match "
                        "state.json); delete the checkpoint folder or rerun without --resume")
    return _load_tensors(path)


def load_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer, scheduler, hooks: Any = None,
                    codec: Any = None) -> dict | None:
    """Restore the latest checkpoint into the given objects; return the loop state as JSON (or None).

    With a ``codec`` (this run's, attached to the initial weights), later checkpoints delta against the
    restored weights.
    """
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    step_dir = ckpt_dir / name
    state = read_state(step_dir)
    opt_codec = codec_for(optimizer)
    if state.get("optimizer_codec", "flat") != opt_codec.name:
        raise UserError(f"checkpoint {step_dir} holds optimizer state in the '{state.get('optimizer_codec')}' format, "
                        f"this optimizer uses '{opt_codec.name}'; was it made with another optimizer?")
    load_hooks = getattr(hooks, "load_state_dict", None)
    if load_hooks is not None and "hooks" not in state:
        raise UserError(f"checkpoint {step_dir} has no state for this method's training hooks; "
                        "was it made with another method? Rerun without --resume")
    codec_state = state.get("checkpoint_codec")
    restored = restore_weights(ckpt_dir, model, name)
    if codec is not None:
        codec.commit(name, restored)
        if codec_state is not None and codec_state["codec"] == codec.name:
            codec.resume_search(codec_state["weights"])
    if codec_state is None:
        tensors = _load_tensors(step_dir / OPTIMIZER)
        opt: dict[str, torch.Tensor] | None = {k: v for k, v in tensors.items() if not k.startswith("rng.")}
    else:
        tensors = _verified(step_dir, OPTIMIZER, codec_state)
        blobs = {k: v for k, v in tensors.items() if not k.startswith("rng.")}
        opt = _codec_of(codec_state, step_dir).decode_optimizer(blobs, codec_state["optimizer"],
                                                                str(step_dir / OPTIMIZER))
    if opt is not None:
        optimizer.load_state_dict(opt_codec.decode(opt, state["optimizer"]))
    elif "param_groups" in state["optimizer"]:  # dropped: fresh moments, the saved groups (lr, ...)
        optimizer.load_state_dict({"state": {}, "param_groups": state["optimizer"]["param_groups"]})
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
    _copy_into(model, _load_tensors(path), path)


def _copy_into(model: nn.Module, saved: dict[str, torch.Tensor], path: Path) -> None:
    own = trainable_state(model)
    if set(saved) != set(own):
        extra = sorted(set(saved) ^ set(own))[:1]
        raise UserError(f"checkpoint {path} does not match this model/method (tensor {extra[0]}); "
                        "was it made with another config?")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor)


def describe_checkpoints(ckpt_dir: Path) -> list[dict[str, Any]]:
    """One record per step directory (oldest first): step, sizes in MB, codec settings, widths, chain."""
    pointer = ckpt_dir / LATEST
    latest = pointer.read_text().strip() if pointer.is_file() else None
    rows = []
    for step_dir in sorted(ckpt_dir.glob("step-*")):
        state = read_state(step_dir)
        codec_state = state.get("checkpoint_codec")
        files = {p.name: p.stat().st_size for p in step_dir.iterdir() if p.is_file()}
        row: dict[str, Any] = {"name": step_dir.name, "step": int(step_dir.name.split("-")[1]),
                               "latest": step_dir.name == latest, "total_mb": sum(files.values()) / 2**20}
        if codec_state is None:
            row |= {"codec": "none", "weights_mb": files.get(WEIGHTS, 0) / 2**20,
                    "optimizer_mb": files.get(OPTIMIZER, 0) / 2**20, "fp32_weights_mb": files.get(WEIGHTS, 0) / 2**20,
                    "bits": {"32": None}, "reference": None, "optimizer_mode": "lossless", "settings": {}}
        else:
            sizes = codec_state["sizes"]
            row |= {"codec": codec_state["codec"], "weights_mb": sizes["weights_bytes"] / 2**20,
                    "optimizer_mb": sizes["optimizer_bytes"] / 2**20,
                    "fp32_weights_mb": sizes["fp32_weights_bytes"] / 2**20,
                    "fp32_optimizer_mb": sizes["fp32_optimizer_bytes"] / 2**20,
                    "bits": codec_state["weights"]["bits_histogram"],
                    "reference": codec_state["weights"]["reference"] or "initial",
                    "optimizer_mode": codec_state["optimizer"]["mode"], "settings": codec_state["params"],
                    "searched": bool(codec_state["weights"]["search"].get("measured"))}
        rows.append(row)
    return rows
