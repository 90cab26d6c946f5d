"""Post-training structured pruning: Fisher mask search under a cost budget, then mask tuning.

Paper: Kwon, Kim, Mahoney, Hassoun, Keutzer & Gholami 2022, "A Fast Post-Training Pruning Framework for
Transformers" (NeurIPS, arXiv:2204.09656). With a mask variable on every attention head and FFN neuron,
the loss increase of a mask is approximated by the diagonal empirical Fisher information: dropping unit
``i`` costs ``I_ii = sum_n (dL_n/dm_i)^2``. Since all heads cost the same and all neurons cost the same,
the budgeted search (their Algorithm 1) tries every number of kept heads ``h``, fills the rest of the
budget with neurons, keeps the most important ones of each kind, and takes the ``h`` that keeps the most
Fisher importance. Then each pruned layer is "mask-tuned": the kept heads' and neurons' mask values are
solved by least squares so that the layer's output matches the unpruned model's on calibration data,
layer by layer from the input up (each layer sees the already-tuned layers below it).

What we reuse: the Fisher scores and the physical removal of heads and neurons are ``structured``'s
(``nluforge.compress.structured.prune``), so the result is a smaller model saved and reloaded the same way.

Departures from the paper:
- No mask rearrangement (their block-diagonal Fisher refinement of the search); the paper reports it as
  a small gain on top of the search.
- Every layer keeps at least one head and one neuron (``structured`` cannot express an empty layer), so
  the kept cost may exceed the budget by at most one unit per layer.
- Mask tuning reconstructs the output of each pruned projection (the attention output dense and the
  FFN down-projection, before the residual and LayerNorm) and solves the normal equations with a ridge
  term (``damping``) instead of LSMR; tuned mask values are clipped to [-10, 10] (as their implementation
  does) and folded into those projections' weights, and a layer's solve is kept only where it lowers that
  layer's calibration error.
- Costs: FLOPs are multiply-adds per token at ``seq_len`` tokens (a head: its four ``d x d_h``
  projections plus ``2 * seq_len * d_h`` for scores and mixing; a neuron: ``2d``); params count weights
  and biases. Embeddings and the head are not part of the budget.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.calibration import forward
from nluforge.compress.oneshot.config import OneshotConfig
from nluforge.compress.structured import prune as structured
from nluforge.compress.targets import servable_form
from nluforge.core.errors import UserError


def unit_costs(block, cfg: OneshotConfig) -> tuple[float, float]:
    """(cost of one head, cost of one FFN neuron) in the config's unit."""
    d = block.linear(block.arch.attn_out_path).out_features
    dh = block.head_size
    if cfg.constraint == "params":
        return 4 * d * dh + 3 * dh, 2 * d + 1
    return 4 * d * dh + 2 * cfg.seq_len * dh, 2 * d


def search(head_scores: list[torch.Tensor], neuron_scores: list[torch.Tensor], head_cost: float,
           neuron_cost: float, keep_fraction: float) -> tuple[int, int]:
    """Kwon et al.'s Algorithm 1: the (heads, neurons) counts that keep the most Fisher importance
    within ``keep_fraction`` of the total cost."""
    heads = torch.sort(torch.cat(head_scores), descending=True).values
    neurons = torch.sort(torch.cat(neuron_scores), descending=True).values
    budget = keep_fraction * (len(heads) * head_cost + len(neurons) * neuron_cost)
    head_sum = torch.cat([torch.zeros(1), heads.double().cumsum(0)])
    neuron_sum = torch.cat([torch.zeros(1), neurons.double().cumsum(0)])
    best, best_value = (0, 0), -1.0
    for h in range(len(heads) + 1):
        left = budget - h * head_cost
        if left < 0:
            break
        n = min(int(left // neuron_cost), len(neurons))
        value = float(head_sum[h] + neuron_sum[n])
        if value > best_value:
            best, best_value = (h, n), value
    return best


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def _capture(model: nn.Module, linear: nn.Linear, calibration, *, output: bool, stop: bool) -> list[torch.Tensor]:
    """Per batch, the real tokens' input (or output) of ``linear``: (tokens, features)."""
    seen: list[torch.Tensor] = []
    keep: list[torch.Tensor] = []

    def hook(module, args, out):
        x = out if output else args[0]
        seen.append(x.detach()[keep[-1]])  # (tokens, features)
        if stop:
            raise _Stop

    handle = linear.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for batch in calibration:
                keep.append(batch["attention_mask"].bool() if "attention_mask" in batch
                            else torch.ones_like(batch["input_ids"], dtype=torch.bool))
                try:
                    forward(model, batch)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return seen


def _solve(gram: torch.Tensor, cross: torch.Tensor, target_sq: float, damping: float) -> tuple[torch.Tensor, float, float]:
    """argmin_m ||A m - b||^2 from ``A'A``, ``A'b`` and ``b'b``; returns (m, error at m=1, error at m)."""
    def err(m):
        return float(m @ gram @ m - 2 * cross @ m + target_sq)

    ones = torch.ones(len(cross), dtype=gram.dtype)
    ridge = damping * gram.diagonal().mean().clamp(min=1e-12)
    m = torch.linalg.solve(gram + ridge * torch.eye(len(cross), dtype=gram.dtype), cross).clamp(-10, 10)
    before, after = err(ones), err(m)
    return (m, before, after) if after < before else (ones, before, before)


def _tune_linear(model, teacher_out: list[torch.Tensor], linear: nn.Linear, units: int, calibration, damping: float):
    """Solve one pruned projection's per-unit scales (``units`` groups of its input columns) and fold them in."""
    inputs = _capture(model, linear, calibration, output=False, stop=True)
    w = linear.weight.detach().double()  # (d, units * width)
    d, width = w.shape[0], w.shape[1] // units
    bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros(d, dtype=torch.float64)
    gram = torch.zeros(units, units, dtype=torch.float64)
    cross = torch.zeros(units, dtype=torch.float64)
    target_sq = 0.0
    wu = w.view(d, units, width)  # (d, U, width)
    for x, y in zip(inputs, teacher_out, strict=True):
        b = y.double() - bias  # (T, d)
        xu = x.double().view(len(x), units, width)  # (T, U, width)
        if width == 1:  # neurons: G = (X'X) * (W'W), c = diag(X' B W)
            xs = xu[..., 0]
            gram += (xs.T @ xs) * (wu[..., 0].T @ wu[..., 0])
            cross += ((xs.T @ b) * wu[..., 0].T).sum(1)
        else:  # heads: per-head contributions (U, T, d)
            contrib = torch.einsum("tuj,duj->utd", xu, wu)
            gram += torch.einsum("utd,vtd->uv", contrib, contrib)
            cross += torch.einsum("utd,td->u", contrib, b)
        target_sq += float((b * b).sum())
    m, before, after = _solve(gram, cross, target_sq, damping)
    with torch.no_grad():
        linear.weight.mul_(m.float().repeat_interleave(width)[None, :])
    return {"error_before": round(before / max(target_sq, 1e-12), 6), "error_after": round(after / max(target_sq, 1e-12), 6)}


def reconstruct(model: nn.Module, teacher: nn.Module, layers, calibration, damping: float) -> list[dict[str, Any]]:
    """Mask tuning, layer by layer from the input up; per layer the relative output error before/after."""
    t_layers = structured.blocks(teacher)
    report = []
    for block, t_block in zip(layers, t_layers, strict=True):
        row = {}
        for kind, path, units in (("attention", block.arch.attn_out_path, block.heads),
                                  ("ffn", block.arch.ffn_out_path, block.neurons)):
            target = _capture(teacher, t_block.linear(path), calibration, output=True, stop=True)
            row[kind] = _tune_linear(model, target, block.linear(path), units, calibration, damping)
        report.append(row)
    return report


def compress(model: nn.Module, cfg: OneshotConfig, calibration=None) -> nn.Module:
    """Search the mask on ``calibration`` (labelled batches), remove the pruned units, tune the rest."""
    model = servable_form(model).to("cpu").eval()
    layers = structured.blocks(model)
    teacher = copy.deepcopy(model) if cfg.reconstruct else None
    head_scores, neuron_scores = structured.fisher_scores(model, layers, calibration)
    head_cost, neuron_cost = unit_costs(layers[0], cfg)
    n_heads, n_neurons = search(head_scores, neuron_scores, head_cost, neuron_cost, 1 - cfg.sparsity)
    total_heads, total_neurons = sum(map(len, head_scores)), sum(map(len, neuron_scores))
    keep_heads = structured.keep_most_important(head_scores, 1 - n_heads / total_heads)
    keep_neurons = structured.keep_most_important(neuron_scores, 1 - n_neurons / total_neurons)
    for block, heads, neurons in zip(layers, keep_heads, keep_neurons, strict=True):
        block.prune(heads, neurons)
    errors = reconstruct(model, teacher, layers, calibration, cfg.damping) if teacher is not None else []
    kept = sum(map(len, keep_heads)) * head_cost + sum(map(len, keep_neurons)) * neuron_cost
    model._nluforge_structured = {"heads": keep_heads, "neurons": keep_neurons}  # what structured.save records
    model._nluforge_oneshot = {"kept_cost_fraction": round(kept / (total_heads * head_cost + total_neurons * neuron_cost), 6),
                               "kept_heads": sum(map(len, keep_heads)), "kept_neurons": sum(map(len, keep_neurons)),
                               "reconstruction": errors}
    return model


def save(model: nn.Module, cfg: OneshotConfig, folder: Path) -> dict[str, Any]:
    """``structured``'s format (sliced tensors + kept indices), with the search and tuning figures."""
    if getattr(model, "_nluforge_structured", None) is None:
        raise UserError("oneshot: this model was not pruned by oneshot.compress; compress it first")
    return {**structured.save(model, cfg, folder), **getattr(model, "_nluforge_oneshot", {})}


def load(folder: Path, model: nn.Module, cfg: OneshotConfig, layout: dict[str, Any]) -> nn.Module:
    """Slice ``model`` as recorded and fill it from ``folder`` (``structured``'s loader)."""
    return structured.load(folder, model, cfg, layout)
