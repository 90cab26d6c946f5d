"""Per-sample clipping and Gaussian noise for DP-SGD (Abadi et al. 2016), on Opacus's per-sample gradients.

Opacus computes what needs the model: per-sample gradients through its ``GradSampleModule`` hooks
(``grad_sample_mode="hooks"``), or per-sample gradient norms without the gradients
(``"ghost"``: ghost clipping, Li et al. 2022, Opacus's ``GradSampleModuleFastGradientClipping``).
Clipping, summing and noise are ours (about 40 lines below) rather than Opacus's ``DPOptimizer``, so
that one code path gives the three clipping styles of Bu et al. 2023 ("Group-wise Clipping for
Differentially Private Optimization"): every trainable tensor belongs to one group, each group g is
clipped to its own threshold C_g per example, and the noise std is sigma * sqrt(sum_g C_g^2) (the
L2 sensitivity of the concatenated clipped gradient). ``flat`` is one group (Opacus's ``DPOptimizer``;
a test checks we give the same clipped sum), ``per_layer`` one group per tensor (Opacus's
``DPPerLayerOptimizer`` with an equal split of the threshold), ``group`` user-defined groups.
Departures: Bu et al. also adapt the thresholds during training; we keep them fixed (no privacy
spent on quantiles). Ghost clipping supports flat clipping only: its second backward pass reweights
each example's loss by one coefficient, which cannot express per-group coefficients.

Opacus needs every input to carry the batch dimension: BERT's default ``position_ids`` and
``token_type_ids`` have batch size 1, which with per-layer clipping silently treats the whole batch as
one sample for those embeddings. :func:`per_example_inputs` passes both per example.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nluforge.core.errors import UserError

Named = list[tuple[str, nn.Parameter]]


def per_example_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model inputs with ``position_ids`` (B, L) and, for models with token types, ``token_type_ids``."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    ids = inputs["input_ids"]  # (B, L)
    b, length = ids.shape
    inputs.setdefault("position_ids", torch.arange(length, device=ids.device).repeat(b, 1))  # (B, L)
    config = getattr(model, "config", None) or getattr(getattr(model, "base_model", None), "config", None)
    if getattr(config, "type_vocab_size", 0) and "token_type_ids" not in inputs:
        inputs["token_type_ids"] = torch.zeros_like(ids)  # (B, L)
    return inputs


def example_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example loss (B,): cross-entropy, or squared error for float labels."""
    logits = model(**per_example_inputs(model, batch)).logits  # (B, C)
    labels = batch["labels"]
    if labels.dtype.is_floating_point:
        return F.mse_loss(logits.squeeze(-1).float(), labels, reduction="none")
    return F.cross_entropy(logits.float(), labels, reduction="none")


def clip_groups(model: nn.Module, style: str, groups: str | list[str] | None, block_path: str | None) -> list[Named]:
    """The clipping groups of the trainable parameters: one (flat), one per tensor (per_layer), or by pattern."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UserError("DP training found no trainable parameters")
    if style == "flat":
        return [named]
    if style == "per_layer":
        return [[item] for item in named]
    if groups == "blocks":
        if block_path is None:
            raise UserError("privacy groups 'blocks' needs the architecture's layer path; give a list of patterns")
        patterns = [rf"(^|\.){re.escape(block_path)}\.{i}\." for i in range(_count_blocks(named, block_path))]
    else:
        patterns = list(groups or [])
    out: list[Named] = [[] for _ in patterns] + [[]]
    for name, p in named:
        hit = next((i for i, pat in enumerate(patterns) if re.search(pat, name)), len(patterns))
        out[hit].append((name, p))
    empty = [patterns[i] for i, g in enumerate(out[:-1]) if not g]
    if empty:
        raise UserError(f"privacy group pattern(s) {empty} match no trainable parameter; check the names "
                        f"(e.g. {named[0][0]})")
    return [g for g in out if g]


def _count_blocks(named: Named, block_path: str) -> int:
    found = [int(m.group(2)) for n, _ in named if (m := re.search(rf"(^|\.){re.escape(block_path)}\.(\d+)\.", n))]
    return max(found) + 1 if found else 0


def thresholds(groups: list[Named], max_grad_norm: float, given: list[float] | None) -> list[float]:
    """Per-group thresholds: the given list, or ``max_grad_norm / sqrt(G)`` each (total bound ``max_grad_norm``)."""
    if given is not None:
        if len(given) != len(groups):
            raise UserError(f"privacy group_max_grad_norm has {len(given)} values for {len(groups)} groups "
                            "(the patterns plus one for unmatched parameters, when any)")
        return [float(c) for c in given]
    return [max_grad_norm / math.sqrt(len(groups))] * len(groups)


@dataclass
class ClipStats:
    """Per-example pre-clipping norms of the last chunk, per group (G, B): for tests and logs."""

    norms: torch.Tensor | None = None


class PrivateGradients:
    """Accumulates the clipped per-example gradient sum over a logical batch, then adds noise.

    ``accumulate(batch)`` runs forward/backward on one physical chunk; ``release(step)`` writes
    ``(sum + N(0, sigma^2 sum C_g^2)) / expected_batch_size`` into ``p.grad`` (also for an empty batch:
    a noise-only step, which the accounting counts). Noise comes from a generator seeded by
    ``(seed, step)``, so a resumed run draws the same noise.
    """

    def __init__(self, model: nn.Module, groups: list[Named], limits: list[float], *, noise_multiplier: float,
                 expected_batch_size: float, mode: str, seed: int,
                 loss_fn: Callable[[nn.Module, dict], torch.Tensor] = example_losses):
        from opacus import GradSampleModule
        from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
            GradSampleModuleFastGradientClipping,
        )

        self.model, self.groups, self.limits, self.mode = model, groups, limits, mode
        self.sigma, self.expected, self.seed, self.loss_fn = noise_multiplier, expected_batch_size, seed, loss_fn
        self.params = [p for g in groups for _, p in g]
        if mode == "ghost":
            self.gsm = GradSampleModuleFastGradientClipping(model, batch_first=True, loss_reduction="sum",
                                                            strict=False, max_grad_norm=limits[0],
                                                            use_ghost_clipping=True)
        else:
            self.gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=False)
        self.summed = [torch.zeros_like(p) for p in self.params]
        # Opacus's hooks on the first layer fire with no input requiring grad: expected, not a problem
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        self.stats = ClipStats()

    def accumulate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Add this chunk's clipped per-example gradients to the sum; returns the chunk's mean loss."""
        losses = self.loss_fn(self.model, batch)  # (B,)
        if self.mode == "ghost":
            losses.sum().backward(retain_graph=True)  # hooks: per-example norms only (no per-example grads)
            # a parameter outside the forward path (BERT's pooler under mean pooling) has no norm: zero
            norms = torch.stack([p._norm_sample for p in self.params
                                 if getattr(p, "_norm_sample", None) is not None]).norm(dim=0)  # (B,)
            coef = (self.limits[0] / (norms + 1e-6)).clamp(max=1.0)  # (B,)
            self._zero()
            self.gsm.disable_hooks()
            (coef.detach() * losses).sum().backward()  # p.grad = sum_i coef_i g_i
            self.gsm.enable_hooks()
            for acc, p in zip(self.summed, self.params, strict=True):
                if p.grad is not None:
                    acc.add_(p.grad)
            self.stats.norms = norms[None].detach()
        else:
            losses.sum().backward()
            self._clip_and_add()
        self._zero()
        return losses.detach().mean()

    def _clip_and_add(self) -> None:
        i, group_norms = 0, []
        for group, limit in zip(self.groups, self.limits, strict=True):
            b = next(p.grad_sample.shape[0] for p in self.params if p.grad_sample is not None)
            # a parameter outside the forward path (BERT's pooler under mean pooling) has none: zeros
            gs = [p.grad_sample if p.grad_sample is not None else p.new_zeros((b, *p.shape))
                  for _, p in group]  # each (B, *p.shape)
            for g in gs:
                if g.shape[0] != b:  # the DEPENDENCIES.md trap: a (1, ...) grad sample
                    raise RuntimeError("a per-sample gradient lacks the batch dimension; DP would be void")
            norms = torch.stack([g.reshape(g.shape[0], -1).norm(dim=1) for g in gs]).norm(dim=0)  # (B,)
            coef = (limit / (norms + 1e-6)).clamp(max=1.0)  # (B,)
            for g in gs:
                self.summed[i].add_(torch.einsum("b,b...->...", coef, g))
                i += 1
            group_norms.append(norms.detach())
        self.stats.norms = torch.stack(group_norms)  # (G, B)

    def _zero(self) -> None:
        for p in self.params:
            p.grad = None
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
        # A module that runs in the forward but whose output the loss never uses (BERT's pooler under
        # mean pooling) gets no backward: Opacus would keep its captured inputs and forward count for
        # ever (a leak with hooks; with ghost clipping the next chunk reads as parameter tying and fails)
        for module in self.model.modules():
            if getattr(module, "activations", None):
                module.activations.clear()
        for p in self.params:
            if getattr(p, "_forward_counter", 0):
                p._forward_counter = 0

    def release(self, step: int) -> None:
        """Noise the sum, average over the expected batch size into ``p.grad``, reset the sum."""
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + step)
        std = self.sigma * math.sqrt(sum(c * c for c in self.limits))
        for acc, p in zip(self.summed, self.params, strict=True):
            noise = torch.randn(acc.shape, generator=gen).to(acc.device) * std
            p.grad = (acc + noise) / self.expected
            acc.zero_()

    def close(self) -> None:
        """Remove Opacus's hooks and per-sample attributes: the model is a plain model again."""
        self._zero()
        self.gsm.remove_hooks()
        for p in self.params:
            for attr in ("_norm_sample", "_forward_counter"):
                if hasattr(p, attr):
                    delattr(p, attr)
