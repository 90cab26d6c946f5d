"""Hessian-aware mixed-precision group-wise quantization (Q-BERT), stored bit-packed.

Paper: Shen, Dong, Ye, Ma, Yao, Gholami, Mahoney & Keutzer 2020, "Q-BERT: Hessian Based Ultra Low
Precision Quantization of BERT" (AAAI, arXiv:1909.05840), section 3.1. For each layer, the top
eigenvalue of the loss Hessian with respect to that layer's weights is found by power iteration on
Hessian-vector products (``Hv = d(g . v)/dw``, one extra backward pass through the gradient). A layer
with a larger eigenvalue is sharper: the loss rises more when its weights move, so it gets more bits.
Q-BERT estimates the eigenvalue on several batches and ranks layers by ``|mean| + std`` of the estimates
(a layer whose eigenvalue varies much over the data is treated as sensitive): we do the same.

Departures from the paper:
- Groups: each encoder block's linear weights form one group (Q-BERT's "layer"), the embedding tables
  one group, any other quantized linear (BERT's pooler) its own group; the classifier stays fp32.
- The bit allocation is automatic, where Q-BERT chose bits by hand from the ranking. With the
  second-order bound ``dL <= 1/2 lambda ||dw||^2``, group ``l`` at ``b`` bits costs
  ``1/2 * Omega_l * ||w_l - Q_b(w_l)||^2`` (the rounding error measured on its own weights). Starting
  from the fewest bits, we repeatedly give more bits to the group whose cost falls most per extra
  weight-bit, while the weight-count-weighted average stays within ``avg_bits``.
- Post-training: no quantization-aware fine-tuning after the allocation (Q-BERT fine-tunes).
- The quantizer is ``groupwise``'s (``nluforge.compress.groupcodec``): runs of ``group_size`` weights,
  asymmetric min-max ranges, fp16 scale and offset, dequantized on load.
- SDPA attention has no double backward on CPU: the estimate runs with eager attention, then the model
  switches back to what it used.

Storage: as ``groupwise`` (``name.qweight`` bit-packed, ``name.scale``, ``name.offset``), with each
weight's bits in the manifest's layout beside the eigenvalues.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.calibration import forward, task_loss
from nluforge.compress.groupcodec import WEIGHTS, dequantize_tensor, load_packed, quantize_tensor, save_packed  # noqa: F401
from nluforge.compress.hessian_mixed.config import HessianMixedConfig
from nluforge.compress.targets import servable_form, weight_targets
from nluforge.core.errors import UserError

STATE = "_nluforge_hessian_mixed"  # model attribute: what save() writes (packed tensors, bits, eigenvalues)


def top_eigenvalue(loss_grads: list[torch.Tensor], params: list[torch.Tensor], iterations: int, tol: float,
                   generator: torch.Generator | None = None) -> float:
    """Top eigenvalue of the Hessian block of ``params``, by power iteration on Hessian-vector products.

    ``loss_grads``: the loss's gradients w.r.t. ``params``, built with ``create_graph=True``.
    """
    v = [torch.randn(p.shape, generator=generator) for p in params]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / norm for x in v]
    eigen = 0.0
    for _ in range(iterations):
        hv = torch.autograd.grad(loss_grads, params, grad_outputs=v, retain_graph=True)  # H v
        new = float(sum((h * x).sum() for h, x in zip(hv, v, strict=True)))  # Rayleigh quotient v'Hv
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        if norm == 0:
            return 0.0
        v = [h / norm for h in hv]
        done = abs(new - eigen) <= tol * (abs(eigen) + 1e-12)
        eigen = new
        if done:
            break
    return eigen


def layer_groups(model: nn.Module, targets: dict[str, nn.Parameter]) -> dict[str, list[str]]:
    """``{group: [weight names]}``: ``embeddings``, ``layer.<i>`` per encoder block, other weights alone."""
    from nluforge.models.arch import arch_of

    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    try:
        arch = arch_of(model)
        prefix = next(n for n, _ in model.named_modules() if n.endswith(f"{arch.base}.{arch.layers}")
                      or n == f"{arch.base}.{arch.layers}") + "."
    except (UserError, StopIteration, AttributeError):
        prefix = None
    groups: dict[str, list[str]] = {}
    for name, weight in targets.items():
        if id(weight) in embedding_ids:
            key = "embeddings"
        elif prefix and name.startswith(prefix):
            key = "layer." + name[len(prefix):].split(".")[0]
        else:
            key = name.removesuffix(".weight")
        groups.setdefault(key, []).append(name)
    return groups


def eigenvalues(model: nn.Module, groups: dict[str, list[torch.Tensor]], calibration, cfg) -> dict[str, list[float]]:
    """Per group, the top Hessian eigenvalue on each calibration batch."""
    # every Hugging Face model inside (a method's wrapper, a peft model or a side network holds them)
    switched = {m: m.config._attn_implementation for m in model.modules()
                if hasattr(m, "set_attn_implementation") and getattr(getattr(m, "config", None), "_attn_implementation",
                                                                     "eager") != "eager"}
    for m in switched:
        m.set_attn_implementation("eager")  # SDPA has no double backward on CPU
    out: dict[str, list[float]] = {g: [] for g in groups}
    params = [p for ps in groups.values() for p in ps]
    grad_was = {p: p.requires_grad for p in model.parameters()}
    gen = torch.Generator().manual_seed(0)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(calibration) * len(groups), desc="hessian eigenvalues", unit="layer", disable=None,
               dynamic_ncols=True)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        for batch in calibration:
            loss = task_loss(forward(model, batch), batch["labels"], reduction="mean")
            grads = dict(zip(map(id, params), torch.autograd.grad(loss, params, create_graph=True, allow_unused=True),
                             strict=True))
            for g, ps in groups.items():
                used = [p for p in ps if grads[id(p)] is not None]  # a weight the forward skips has no curvature
                try:
                    out[g].append(top_eigenvalue([grads[id(p)] for p in used], used, cfg.iterations, cfg.tol, gen)
                                  if used else 0.0)
                except RuntimeError as err:  # an op without a double backward (torch's fused attention on CPU)
                    first = str(err).splitlines()[0]
                    raise UserError(f"hessian_mixed needs Hessian-vector products, but the model's forward has an "
                                    f"op without a second derivative ({first}); use groupwise") from None
                bar.update(1)
    finally:
        bar.close()
        for p, was in grad_was.items():
            p.requires_grad_(was)
        for m, attn in switched.items():
            m.set_attn_implementation(attn)
    return out


def sensitivity(values: list[float]) -> float:
    """Q-BERT's ``|mean| + std`` of a layer's top eigenvalues over batches."""
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean().abs() + (t.std() if len(values) > 1 else 0.0))


def allocate_bits(omega: dict[str, float], errors: dict[str, dict[int, float]], sizes: dict[str, int],
                  avg_bits: float) -> dict[str, int]:
    """Bits per group: start at the fewest, then give more where ``1/2 Omega ||dw||^2`` falls most per
    extra weight-bit, while the weight-count-weighted mean stays <= ``avg_bits``."""
    choices = sorted(next(iter(errors.values())))
    bits = {g: choices[0] for g in omega}
    total = sum(sizes.values())
    budget = avg_bits * total + 1e-6
    while True:
        used = sum(bits[g] * sizes[g] for g in bits)
        best, best_gain = None, 0.0
        for g, b in bits.items():
            if b == choices[-1]:
                continue
            nxt = choices[choices.index(b) + 1]
            extra = (nxt - b) * sizes[g]
            if used + extra > budget:
                continue
            gain = 0.5 * omega[g] * (errors[g][b] - errors[g][nxt]) / extra
            if gain > best_gain:  # a weight without curvature (unused by the forward) gains nothing from bits
                best, best_gain = g, gain
        if best is None:
            return bits
        bits[best] = choices[choices.index(bits[best]) + 1]


def compress(model: nn.Module, cfg: HessianMixedConfig, calibration=None) -> nn.Module:
    """Estimate each group's sharpness on ``calibration``, allocate bits, quantize in place."""
    model = servable_form(model).to("cpu").eval()
    targets = weight_targets(model, embeddings=cfg.embeddings, skip=cfg.skip)
    if not targets:
        raise UserError("hessian_mixed found no nn.Linear or nn.Embedding weight to quantize (check 'skip')")
    names = layer_groups(model, targets)
    eig = eigenvalues(model, {g: [targets[n] for n in ns] for g, ns in names.items()}, calibration, cfg)
    omega = {g: sensitivity(v) for g, v in eig.items()}
    choices = sorted(set(cfg.choices))
    errors: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for g, ns in names.items():
            errors[g] = {b: sum(float((targets[n] - dequantize_tensor(*quantize_tensor(targets[n], b, cfg.group_size),
                                                                      list(targets[n].shape), b, cfg.group_size))
                                      .pow(2).sum()) for n in ns) for b in choices}
    sizes = {g: sum(targets[n].numel() for n in ns) for g, ns in names.items()}
    bits = allocate_bits(omega, errors, sizes, cfg.avg_bits)
    packed, per_weight = {}, {}
    with torch.no_grad():
        for g, ns in names.items():
            for n in ns:
                per_weight[n] = bits[g]
                packed[n] = quantize_tensor(targets[n], bits[g], cfg.group_size)
                targets[n].copy_(dequantize_tensor(*packed[n], list(targets[n].shape), bits[g], cfg.group_size))
    avg = sum(bits[g] * sizes[g] for g in bits) / sum(sizes.values())
    report = {"groups": {g: {"bits": bits[g], "weights": sizes[g], "eigenvalues": [round(x, 6) for x in eig[g]],
                             "sensitivity": round(omega[g], 6)} for g in names},
              "avg_bits": round(avg, 4)}
    setattr(model, STATE, {"packed": packed, "bits": per_weight, "report": report})
    return model


def save(model: nn.Module, cfg: HessianMixedConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors``; the layout holds each weight's shape and bits, and the eigenvalues."""
    state = getattr(model, STATE, None)
    if state is None:
        raise UserError("hessian_mixed: this model was not compressed by hessian_mixed.compress; compress it first")
    shapes = save_packed(model, state["packed"], folder, "nluforge-hessian-mixed")
    return {"quantized": {n: {"shape": shapes[n], "bits": b} for n, b in state["bits"].items()}, **state["report"]}


def load(folder: Path, model: nn.Module, cfg: HessianMixedConfig, layout: dict[str, Any]) -> nn.Module:
    """Rebuild the quantized model on ``model`` (the uncompressed structure) from ``folder``."""
    shapes = {n: info["shape"] for n, info in layout["quantized"].items()}
    bits = {n: info["bits"] for n, info in layout["quantized"].items()}
    model, packed = load_packed(folder, model, shapes, bits, cfg.group_size)
    report = {k: v for k, v in layout.items() if k != "quantized"}
    setattr(model, STATE, {"packed": packed, "bits": bits, "report": report})
    return model


def average_bits(layout: dict[str, Any]) -> float:
    """The weight-count-weighted mean bits of a saved layout."""
    items = layout["quantized"].values()
    return sum(math.prod(i["shape"]) * i["bits"] for i in items) / sum(math.prod(i["shape"]) for i in items)
