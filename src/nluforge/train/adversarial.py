"""Adversarial fine-tuning in embedding space, as a ``loss_fn`` for the training loop's seam.

- ``freelb`` (Zhu et al. 2020, "FreeLB: Enhanced Adversarial Training for Natural Language
  Understanding", Alg. 1): K ascent steps on a perturbation ``delta`` of the word embeddings; the
  parameter gradient is the average of the K steps' gradients (the "free" accumulation). Here the K
  losses are summed (divided by K) and returned as one loss, so the loop's single backward yields
  exactly that average and grad accumulation, clipping and DDP work unchanged.
- ``pgd`` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"): K
  ascent steps on ``delta`` with the parameters fixed, then the loss at the final ``delta`` alone.

``delta`` is added to the output of the model's input-embedding module through a forward hook, present
only while this loss runs (evaluation never sees it). The hook keeps one ``delta`` per call in a
forward pass, so a model that embeds several sequences per example (``prompt_based``: one per
pattern, re-assembled from the input ids) is perturbed in each; it reaches ``full``, ``lora`` (peft
wraps the same embedding module) and ``prompt_based`` alike. Departure from FreeLB: ``delta`` is
per call rather than per example when a model embeds several sequences, and the random
initialisation is uniform in [-init_mag, init_mag] / sqrt(T * d) without FreeLB's length masking.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def input_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding module of ``model`` (or of the first submodule that has one)."""
    for m in model.modules():
        get = getattr(m, "get_input_embeddings", None)
        if get is not None:
            try:
                emb = get()
            except (NotImplementedError, AttributeError):
                continue
            if emb is not None:
                return emb
    raise ValueError(f"{type(model).__name__} has no input embeddings to perturb")


class Perturbation:
    """A forward hook adding ``deltas[i]`` to the i-th output of the embedding module in a forward pass."""

    def __init__(self, init_mag: float):
        self.deltas: list[torch.Tensor] = []
        self.calls = 0
        self.init_mag = init_mag

    def __call__(self, module, inputs, output):
        i = self.calls
        self.calls += 1
        if i == len(self.deltas):
            d = torch.zeros_like(output)
            if self.init_mag > 0:
                d.uniform_(-self.init_mag, self.init_mag).div_((output.shape[-2] * output.shape[-1]) ** 0.5)
            self.deltas.append(d.requires_grad_(True))
        return output + self.deltas[i]

    def ascend(self, grads, alpha: float, epsilon: float, norm: str) -> None:
        """One normalised gradient-ascent step per delta, projected back into the epsilon ball."""
        new = []
        for d, g in zip(self.deltas, grads, strict=True):
            g = torch.zeros_like(d) if g is None else g.detach()
            if norm == "l2":
                gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))  # (B, 1, 1)
                d = d.detach() + alpha * g / gn
                if epsilon > 0:
                    dn = d.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1))
                    d = d * (epsilon / dn.clamp_min(1e-12)).clamp(max=1.0)
            else:  # linf
                d = d.detach() + alpha * g.sign()
                if epsilon > 0:
                    d = d.clamp(-epsilon, epsilon)
            new.append(d.requires_grad_(True))
        self.deltas = new


def _task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.dtype.is_floating_point:
        return F.mse_loss(logits.squeeze(-1).float(), labels)
    return F.cross_entropy(logits.float(), labels)


def adversarial_loss(method: str, *, steps: int, alpha: float, epsilon: float, norm: str = "l2",
                     init_mag: float = 0.0) -> Callable:
    """``loss_fn(model, batch) -> (loss, logits)`` for ``method`` in {"freelb", "pgd"}."""

    def loss_fn(model: nn.Module, batch):
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        pert = Perturbation(init_mag)
        handle = input_embeddings(model).register_forward_hook(pert)
        try:
            losses, logits = [], None
            for k in range(steps):
                pert.calls = 0
                logits = model(**inputs).logits  # (B, C)
                loss = _task_loss(logits, labels)
                last = k == steps - 1
                if method == "freelb":
                    losses.append(loss / steps)
                    if not last:
                        grads = torch.autograd.grad(loss, pert.deltas, retain_graph=True, allow_unused=True)
                        pert.ascend(grads, alpha, epsilon, norm)
                else:  # pgd: ascend with the parameters fixed; train on the last delta only
                    if last:
                        losses.append(loss)
                    else:
                        grads = torch.autograd.grad(loss, pert.deltas, allow_unused=True)
                        pert.ascend(grads, alpha, epsilon, norm)
            return torch.stack(losses).sum(), logits
        finally:
            handle.remove()

    return loss_fn
