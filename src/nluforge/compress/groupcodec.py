"""Group-wise k-bit codes: quantize a tensor in groups (a scale and offset each) and bit-pack the codes.

Shared by the group-wise quantizers (``groupwise``: one ``bits`` for every tensor; ``hessian_mixed``:
bits per layer). The scheme and its departures from Q-BERT are described in
``nluforge.compress.groupwise.quantize``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from nluforge.compress.targets import fill_others, other_tensors, servable_form
from nluforge.core.errors import UserError

WEIGHTS = "model.safetensors"
PARTS = ("qweight", "scale", "offset")


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``codes`` (N,) ints in [0, 2^bits) → (ceil(N * bits / 8),) uint8, bits little-endian per code."""
    shifts = torch.arange(bits, dtype=torch.int32)
    stream = ((codes.to(torch.int32)[:, None] >> shifts) & 1).flatten().to(torch.uint8)  # (N * bits,)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).view(-1, 8)  # (bytes, 8)
    return (stream << torch.arange(8, dtype=torch.uint8)).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` codes, (n,) int32."""
    stream = (packed.to(torch.int32)[:, None] >> torch.arange(8, dtype=torch.int32)) & 1  # (bytes, 8)
    stream = stream.flatten()[: n * bits].view(n, bits)
    return (stream << torch.arange(bits, dtype=torch.int32)).sum(dim=1, dtype=torch.int32)


def _fp16_toward(x: torch.Tensor, direction: float) -> torch.Tensor:
    """``x`` (fp32) in fp16, rounded toward ``direction`` (-inf: down, +inf: up)."""
    h = x.half()
    off = (h.float() > x) if direction < 0 else (h.float() < x)
    return torch.where(off, torch.nextafter(h, torch.full_like(h, direction)), h)


def quantize_tensor(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, ...]:
    """``w`` (any shape) → (qweight packed uint8, scale (G,) fp16, offset (G,) fp16)."""
    levels = 2**bits - 1
    flat = w.detach().float().flatten()
    pad = -flat.numel() % group_size
    groups = torch.cat([flat, flat[-1:].expand(pad)]).view(-1, group_size)  # (G, g), last padded with a copy
    offset = _fp16_toward(groups.amin(dim=1), -math.inf)  # (G,)
    span = (groups.amax(dim=1) - offset.float()).clamp(min=2**-14 * levels)
    scale = _fp16_toward(span / levels, math.inf)  # (G,)
    codes = torch.round((groups - offset.float()[:, None]) / scale.float()[:, None]).clamp(0, levels)
    return pack(codes.flatten()[: flat.numel()], bits), scale, offset


def dequantize_tensor(qweight: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, shape: list[int],
                      bits: int, group_size: int) -> torch.Tensor:
    """The fp32 weights (``shape``) that :func:`quantize_tensor`'s output stands for."""
    n = math.prod(shape)
    codes = unpack(qweight, bits, n).float()
    group = torch.arange(n) // group_size  # (n,)
    return (offset.float()[group] + codes * scale.float()[group]).view(shape)


def save_packed(model: nn.Module, packed: dict[str, tuple[torch.Tensor, ...]], folder: Path, fmt: str) -> dict[str, list[int]]:
    """Write ``folder/model.safetensors``: ``name.qweight/.scale/.offset`` for each packed weight, every
    other tensor as is. Returns each packed weight's shape, for the manifest's layout."""
    from safetensors.torch import save_file

    params = dict(model.named_parameters(remove_duplicate=False))
    done = {name: params[name] for name in packed}
    tensors = dict(other_tensors(model, done))
    for name, parts in packed.items():
        tensors |= {f"{name}.{part}": t for part, t in zip(PARTS, parts, strict=True)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(folder / WEIGHTS), metadata={"format": fmt})
    return {name: list(params[name].shape) for name in packed}


def load_packed(folder: Path, model: nn.Module, shapes: dict[str, list[int]], bits: dict[str, int],
                group_size: int) -> tuple[nn.Module, dict[str, tuple[torch.Tensor, ...]]]:
    """Rebuild ``model`` (the uncompressed structure) from :func:`save_packed`'s file: the packed weights
    dequantized with their ``bits``, every other tensor filled in. Returns the model and the packed codes."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / WEIGHTS))
    model = servable_form(model).to("cpu").eval()
    params = dict(model.named_parameters(remove_duplicate=False))
    packed, done = {}, {}
    try:
        for name, shape in shapes.items():
            if list(params[name].shape) != list(shape):
                raise KeyError(f"{name} is {tuple(params[name].shape)} here but {tuple(shape)} in the file")
            packed[name] = tuple(tensors.pop(f"{name}.{part}") for part in PARTS)
            done[name] = params[name]
    except KeyError as err:
        raise UserError(f"{folder} does not match the run's model structure ({err}); recompress the parent "
                        "run") from None
    fill_others(model, done, tensors, str(folder / WEIGHTS))
    with torch.no_grad():
        for name, parts in packed.items():
            done[name].copy_(dequantize_tensor(*parts, list(shapes[name]), bits[name], group_size))
    return model, packed
