"""Group-wise k-bit weight quantization of a trained encoder, stored bit-packed.

Paper: Shen, Dong, Ye, Ma, Yao, Gholami, Mahoney & Keutzer 2020, "Q-BERT: Hessian Based Ultra Low
Precision Quantization of BERT" (AAAI, arXiv:1909.05840), section 3.2 "group-wise quantization": each
weight matrix is split into groups, each with its own quantization range, so that 2-4-bit weights keep
most of the accuracy that one range per matrix loses.

Departures from the paper:
- Groups are runs of ``group_size`` consecutive weights of the row-major flattened tensor (as GPTQ and
  AWQ's ``g128``), not Q-BERT's groups of output neurons per attention head; with a hidden size that
  ``group_size`` divides, a group is a slice of one output row.
- Asymmetric min-max ranges: a weight ``w`` of a group becomes ``q = round((w - m) / s)`` in
  ``[0, 2^k - 1]`` and comes back as ``m + q * s``. The offset ``m`` is a float (the group's minimum,
  rounded down to fp16), not an integer zero point, so the rounding error is at most ``s / 2`` for
  every weight; ``s`` is rounded up to fp16 so that the group's maximum stays in range.
- Post-training and uniform: no Hessian-based mixed precision (one ``bits`` for every tensor), no
  quantization-aware fine-tuning, activations stay fp32.
- Dequantized on load: the served model holds fp32 weights (CPU has no kernels for packed 2/3-bit
  weights); the saving is on disk and in what ships, not in inference memory or speed.
- A peft model is merged first (as in ``int8_dynamic``); biases and layer norms stay fp32.

Storage: no pickle. ``model.safetensors`` holds, for each quantized weight ``name``,
``name.qweight`` (uint8, the codes bit-packed: ``ceil(numel * bits / 8)`` bytes), ``name.scale`` and
``name.offset`` (fp16, one per group); every other tensor as is. The manifest's layout gives each
quantized weight's shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.groupcodec import (  # noqa: F401 (pack, unpack re-exported)
    WEIGHTS,
    dequantize_tensor,
    load_packed,
    pack,
    quantize_tensor,
    save_packed,
    unpack,
)
from nluforge.compress.groupwise.config import GroupwiseConfig
from nluforge.compress.targets import servable_form, weight_targets
from nluforge.core.errors import UserError

PACKED = "_nluforge_groupwise"  # model attribute: {weight name: (qweight, scale, offset)} until saved


def compress(model: nn.Module, cfg: GroupwiseConfig) -> nn.Module:
    """Quantize every targeted weight in place (the model keeps the dequantized fp32 values)."""
    model = servable_form(model).to("cpu").eval()
    targets = weight_targets(model, embeddings=cfg.embeddings, skip=cfg.skip)
    if not targets:
        raise UserError("groupwise found no nn.Linear or nn.Embedding weight to quantize (check 'skip')")
    packed = {}
    with torch.no_grad():
        for name, weight in targets.items():
            packed[name] = quantize_tensor(weight, cfg.bits, cfg.group_size)
            weight.copy_(dequantize_tensor(*packed[name], list(weight.shape), cfg.bits, cfg.group_size))
    setattr(model, PACKED, packed)
    return model


def save(model: nn.Module, cfg: GroupwiseConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors``; return the layout (each quantized weight's shape) for the manifest."""
    packed = getattr(model, PACKED, None)
    if packed is None:
        raise UserError("groupwise: this model was not compressed by groupwise.compress; compress it first")
    return {"quantized": save_packed(model, packed, folder, "nluforge-groupwise")}


def load(folder: Path, model: nn.Module, cfg: GroupwiseConfig, layout: dict[str, Any]) -> nn.Module:
    """Rebuild the compressed model on ``model`` (the uncompressed structure) from ``folder``."""
    shapes = layout["quantized"]
    model, packed = load_packed(folder, model, shapes, dict.fromkeys(shapes, cfg.bits), cfg.group_size)
    setattr(model, PACKED, packed)
    return model
