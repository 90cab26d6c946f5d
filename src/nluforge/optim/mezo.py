"""MeZO: Malladi, Gao, Nichani, Damian, Lee, Chen & Arora 2023, "Fine-Tuning Language Models with Just
Forward Passes" (NeurIPS 2023).

A zeroth-order SGD step from two forward passes (SPSA, Spall 1992): with z ~ N(0, I) over the
trainable parameters θ,

    g = (L(θ + εz) − L(θ − εz)) / 2ε        (a scalar: the projected gradient)
    θ ← θ − η (g z + λ θ)

and the in-place seed trick of the paper's Algorithm 1: z is never stored. Each step draws a seed;
perturbing θ by +εz, then −2εz, then +εz (restoring θ) and the final update each regenerate z from that
seed, one parameter at a time, so memory stays at inference level: no gradients (no parameter ever
gets a ``.grad``), no activations kept for a backward, no optimizer state. ``n_samples`` > 1 is the
paper's n-SPSA: the n projected gradients are estimated at the same θ, then the update averages the
n directions (each z regenerated from its seed; n scalars are all that is kept).

Own implementation (no maintained library provides MeZO; the authors' code is a Trainer fork). It is
a ``torch.optim.Optimizer`` whose ``step(closure)`` calls ``closure()`` (the loss at the current θ,
computed without gradients) for each forward, so the loop's scheduler sets its learning rate as for
any optimizer; :func:`nluforge.train.update_steps.zeroth_order_update_step` runs it in eval mode under
``torch.no_grad`` (the authors' ``zo_forward`` does the same: no dropout, so both forwards see the
same function).

The seed stream: the seed of step t, sample k is a fixed function of (``seed``, t, k), and ``seed``
and t (``zo_step``) live in the parameter groups, so a checkpoint carries them as plain JSON and a
resumed run draws the same directions. The optimizer's ``state`` stays empty.

Departures: weight decay is applied once per step (decoupled, λ per group; the authors' code adds it
inside each sample's update, the same for n = 1) and only to the groups that decay (BERT's rule); the
default learning-rate schedule is the run's (linear warmup/decay), where the paper uses a constant
rate: set ``train.warmup_ratio=0`` and a high ``max_steps`` to approach it. ``prompt_based`` gives the
paper's prompt-based variant: MeZO only sees the method's loss (the verbalizer's masked-LM logits).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nluforge.core.errors import UserError

CHUNK = 2**20  # elements of z drawn at once (4 MiB in fp32): bounds MeZO's only temporary
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)  # odd 64-bit constants (splitmix64)


def seed_for(seed: int, step: int, sample: int) -> int:
    """The seed of z for optimizer step ``step``, SPSA sample ``sample``: a pure function (splitmix64)."""
    x = (seed * _MIX[0] + step * _MIX[1] + sample + 1) & (2**64 - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 31)) & (2**63 - 1)


class MeZO(torch.optim.Optimizer):
    """Zeroth-order SPSA with in-place perturbations. ``step(closure)``; ``closure()`` returns the loss."""

    def __init__(self, params, *, lr: float, eps: float = 1e-3, n_samples: int = 1, seed: int = 0,
                 weight_decay: float = 0.0):
        if eps <= 0 or n_samples < 1:
            raise UserError(f"mezo needs eps > 0 and n_samples >= 1 (got eps={eps}, n_samples={n_samples})")
        defaults = {"lr": lr, "eps": eps, "n_samples": n_samples, "seed": seed, "weight_decay": weight_decay,
                    "zo_step": 0}
        super().__init__(params, defaults)
        self.last_projected_grads: list[float] = []
        self.last_loss: torch.Tensor | None = None

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def _walk(self, seed: int, fn: Callable[[dict, torch.Tensor, torch.Tensor], None]) -> None:
        """Regenerate z from ``seed``, one parameter at a time, in a fixed order, and apply ``fn``.

        A parameter larger than ``CHUNK`` elements gets its z in consecutive chunks of its flattened
        view (``fn`` then sees a flat slice of ``p`` and a z of the slice's length): the one temporary is
        at most ``CHUNK`` elements, not the size of the largest parameter (the word embeddings, half of
        a small encoder). Not in the paper, which draws each parameter's z whole.
        """
        generators: dict[torch.device, torch.Generator] = {}
        for group, p in self._params():
            g = generators.get(p.device)
            if g is None:
                g = generators[p.device] = torch.Generator(device=p.device)
                g.manual_seed(seed)
            if p.numel() <= CHUNK or not p.is_contiguous():
                fn(group, p, torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype))  # like p
                continue
            flat = p.view(-1)
            for start in range(0, flat.numel(), CHUNK):
                part = flat[start:start + CHUNK]
                fn(group, part, torch.randn(part.shape, generator=g, device=p.device, dtype=p.dtype))

    def _perturb(self, seed: int, scale: float) -> None:
        self._walk(seed, lambda group, p, z: p.add_(z, alpha=scale))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("MeZO.step needs a closure that returns the loss (two forwards a sample)")
        head = self.param_groups[0]
        t, n, eps, seed = head["zo_step"], head["n_samples"], head["eps"], head["seed"]
        grads, losses = [], []
        for k in range(n):
            s = seed_for(seed, t, k)
            self._perturb(s, eps)  # θ + εz
            plus = float(closure())
            self._perturb(s, -2 * eps)  # θ − εz
            minus = float(closure())
            self._perturb(s, eps)  # θ (up to float rounding, as in the paper)
            grads.append((plus - minus) / (2 * eps))
            losses.append((plus + minus) / 2)
        for group, p in self._params():  # decoupled weight decay, once per step
            if group["weight_decay"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])
        for k, g in enumerate(grads):
            self._walk(seed_for(seed, t, k), lambda group, p, z, g=g: p.add_(z, alpha=-group["lr"] * g / n))
        for group in self.param_groups:
            group["zo_step"] = t + 1
        self.last_projected_grads = grads
        self.last_loss = torch.tensor(sum(losses) / n)  # the mean of the perturbed losses
        return self.last_loss


def mezo(model: nn.Module, *, lr: float, weight_decay: float, eps: float = 1e-3, n_samples: int = 1,
         seed: int | None = None) -> MeZO:
    """MeZO over the trainable parameters (all of them for ``full``; the adapter's for a peft method).

    ``seed`` (default: torch's initial seed, i.e. the run's seed) starts the stream of directions; eps
    1e-3 is the paper's value.
    """
    from nluforge.optim import _param_groups

    seed = torch.initial_seed() if seed is None else seed
    opt = MeZO(_param_groups(model, weight_decay), lr=lr, eps=eps, n_samples=n_samples, seed=seed)
    opt.nluforge_info = {"backend": "nluforge", "eps": eps, "n_samples": n_samples}
    return opt
