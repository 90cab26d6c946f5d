"""Sparse storage for pruned weights: per tensor a bitmask of the nonzeros (``numpy.packbits``, 1 bit a
weight, row-major) and the nonzero values (fp32, row-major), in safetensors. Shared by the unstructured
pruners (``magnitude``, ``random_masks``); the served model is dense again after :func:`load_sparse`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nluforge.compress.targets import fill_others, other_tensors
from nluforge.core.errors import UserError

WEIGHTS = "model.safetensors"


def sparsity_of(targets: dict[str, torch.Tensor]) -> float:
    """The fraction of zeros among ``targets``' entries."""
    zeros = sum(int((w == 0).sum()) for w in targets.values())
    return zeros / sum(w.numel() for w in targets.values())


def save_sparse(model: nn.Module, targets: dict[str, nn.Parameter], folder: Path, fmt: str) -> dict[str, Any]:
    """Write ``model.safetensors`` with ``targets`` as ``name.mask`` + ``name.values``, the rest as is;
    return the layout (each sparse weight's shape, the achieved sparsity) for the manifest."""
    from safetensors.torch import save_file

    tensors = dict(other_tensors(model, targets))
    for name, weight in targets.items():
        w = weight.detach().flatten()
        keep = w != 0  # (n,)
        tensors[f"{name}.mask"] = torch.from_numpy(np.packbits(keep.numpy()))
        tensors[f"{name}.values"] = w[keep]
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(folder / WEIGHTS), metadata={"format": fmt})
    return {"pruned": {name: list(w.shape) for name, w in targets.items()},
            "sparsity": round(sparsity_of(targets), 6)}


def load_sparse(folder: Path, model: nn.Module, layout: dict[str, Any]) -> nn.Module:
    """Fill ``model`` (the unpruned structure) from a folder :func:`save_sparse` wrote."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / WEIGHTS))
    params = dict(model.named_parameters(remove_duplicate=False))
    dense = {}
    try:
        for name, shape in layout["pruned"].items():
            if list(params[name].shape) != shape:
                raise KeyError(f"{name} is {tuple(params[name].shape)} here but {tuple(shape)} in the file")
            n = params[name].numel()
            keep = torch.from_numpy(np.unpackbits(tensors.pop(f"{name}.mask").numpy(), count=n).astype(bool))
            values = tensors.pop(f"{name}.values")
            if int(keep.sum()) != values.numel():
                raise KeyError(f"{name}: {int(keep.sum())} mask bits but {values.numel()} values")
            dense[name] = torch.zeros(n).masked_scatter_(keep, values).view(shape)
    except KeyError as err:
        raise UserError(f"{folder} does not match the run's model structure ({err}); recompress the parent "
                        "run") from None
    done = {name: params[name] for name in dense}
    fill_others(model, done, tensors, str(folder / WEIGHTS))
    with torch.no_grad():
        for name, weight in dense.items():
            done[name].copy_(weight)
    return model
