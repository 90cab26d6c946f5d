"""Structured pruning: remove whole attention heads and FFN neurons, ranked by their Fisher importance.

Paper: Kwon, Kim, Mahoney, Hassoun, Keutzer & Gholami 2022, "A Fast Post-Training Pruning Framework for
Transformers" (NeurIPS, arXiv:2204.09656). A mask variable ``m`` multiplies each head's output and
each FFN neuron's activation; its importance is the diagonal empirical Fisher information
``sum_i (dL_i / dm)^2`` over labelled calibration examples, at ``m = 1``. The least important heads and
neurons are removed; the model needs no retraining. The head mask and its gradient are Michel, Levy &
Neubig 2019, "Are Sixteen Heads Really Better than One?" (NeurIPS), whose importance is ``|dL/dm|``.

Departures from the paper:
- No FLOPs- or latency-constrained mask search: the user gives the fraction of heads and of neurons to
  remove, and each kind is ranked by its Fisher score over all layers together (Michel et al.'s global
  ranking). Every layer keeps at least one head and one neuron (a layer without either is not a
  module the architectures here can express).
- No mask rearrangement (their block-diagonal Fisher step) and no mask tuning (their least-squares
  rescaling of the kept heads and neurons): the kept weights are unchanged.
- Heads are removed by slicing the query/key/value rows and the attention output's columns: transformers
  5 has no ``prune_heads`` and its configs no ``pruned_heads``. The FFN keeps a different number of
  neurons per layer, which a config's single ``intermediate_size`` cannot say, so the pruned model is
  not a ``from_pretrained`` folder: ``model.safetensors`` holds the sliced tensors and the manifest's
  layout the kept head and neuron indices of each layer; :func:`load` slices a fresh model the same
  way and fills it in.
- Only plain Hugging Face encoders whose attention and FFN projections are ``nn.Linear`` and whose
  attention reads the head count from its input (BERT, RoBERTa, ELECTRA in transformers 5; the table in
  ``nluforge.models.arch``): a method that wraps those modules (DyLoRA, prefix tuning, adapters inside
  the projections, an unmerged peft prompt) is refused with a UserError. LoRA/IA3 are merged first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.calibration import forward, task_loss
from nluforge.compress.structured.config import StructuredConfig
from nluforge.compress.targets import fill_others, servable_form
from nluforge.core.errors import UserError

WEIGHTS = "model.safetensors"


class _Block:
    """One encoder layer's prunable modules, found through the architecture table."""

    def __init__(self, layer: nn.Module, arch, where: str):
        self.layer, self.arch = layer, arch
        self.attn = layer.get_submodule(arch.self_attn_path)
        for path in (f"{arch.self_attn_path}.{arch.query}", f"{arch.self_attn_path}.{arch.key}",
                     f"{arch.self_attn_path}.{arch.value}", arch.attn_out_path, arch.ffn_in_path, arch.ffn_out_path):
            module = layer.get_submodule(path)
            if type(module) is not nn.Linear:
                raise UserError(f"structured pruning needs plain nn.Linear projections, but {where}.{path} is a "
                                f"{type(module).__name__} (the run's method wraps it); use groupwise or magnitude")
        self.head_size = getattr(self.attn, "attention_head_size", None)
        if not isinstance(self.head_size, int):
            raise UserError(f"structured pruning: {where}.{arch.self_attn_path} is a {type(self.attn).__name__} "
                            "without attention_head_size; its heads cannot be sliced")

    def linear(self, path: str) -> nn.Linear:
        return self.layer.get_submodule(path)

    @property
    def heads(self) -> int:
        return self.linear(self.arch.attn_out_path).in_features // self.head_size

    @property
    def neurons(self) -> int:
        return self.linear(self.arch.ffn_in_path).out_features

    def prune(self, keep_heads: list[int], keep_neurons: list[int]) -> None:
        """Keep only the listed heads and FFN neurons (indices into the current ones, ascending)."""
        a, d = self.arch, self.head_size
        cols = torch.tensor([h * d + j for h in keep_heads for j in range(d)], dtype=torch.long)
        for name in (a.query, a.key, a.value):
            self._slice(f"{a.self_attn_path}.{name}", cols, dim=0)
        self._slice(a.attn_out_path, cols, dim=1)
        self.attn.num_attention_heads, self.attn.all_head_size = len(keep_heads), len(keep_heads) * d
        neurons = torch.tensor(keep_neurons, dtype=torch.long)
        self._slice(a.ffn_in_path, neurons, dim=0)
        self._slice(a.ffn_out_path, neurons, dim=1)

    def _slice(self, path: str, index: torch.Tensor, dim: int) -> None:
        old = self.linear(path)
        new = nn.Linear(old.in_features if dim == 0 else len(index), len(index) if dim == 0 else old.out_features,
                        bias=old.bias is not None)
        with torch.no_grad():
            new.weight.copy_(old.weight.index_select(dim, index))
            if old.bias is not None:
                new.bias.copy_(old.bias if dim == 1 else old.bias[index])
        parent, _, child = path.rpartition(".")
        setattr(self.layer.get_submodule(parent) if parent else self.layer, child, new)


def blocks(model: nn.Module) -> list[_Block]:
    """The encoder layers of ``model`` as :class:`_Block` s; a UserError where it cannot be pruned."""
    from transformers import PreTrainedModel

    from nluforge.models.arch import arch_of

    if not isinstance(model, PreTrainedModel):
        raise UserError(f"structured pruning needs a plain Hugging Face model, got a {type(model).__name__} "
                        "(a peft prompt or a method's own wrapper); use groupwise or magnitude")
    arch = arch_of(model)
    if arch.self_attn_path is None:
        raise UserError(f"structured pruning does not support {model.config.model_type}: its attention is not "
                        "a set of per-head query/key/value projections here")
    layers = getattr(model, arch.base).get_submodule(arch.layers)
    return [_Block(layer, arch, f"{arch.base}.{arch.layers}.{i}") for i, layer in enumerate(layers)]


def fisher_scores(model: nn.Module, layers: list[_Block], calibration) -> tuple[list[torch.Tensor], ...]:
    """Per layer, (heads,) and (neurons,) Fisher scores ``sum_i (dL_i/dm)^2`` over the calibration batches.

    The masks carry a batch dimension, (B, 1, heads) and (B, 1, neurons), so one backward pass of the
    summed loss gives every example's own gradient (example ``i`` only reaches row ``i``).
    """
    head_scores = [torch.zeros(b.heads) for b in layers]
    neuron_scores = [torch.zeros(b.neurons) for b in layers]
    masks: dict[str, list[torch.Tensor]] = {"heads": [], "neurons": []}

    def head_hook(i):
        def hook(module, args):  # args[0]: the heads' concatenated outputs (B, T, heads * d)
            x = args[0]
            return (x.unflatten(-1, (layers[i].heads, -1)) * masks["heads"][i][..., None]).flatten(-2),
        return hook

    def neuron_hook(i):
        return lambda module, args: (args[0] * masks["neurons"][i],)  # (B, T, neurons) * (B, 1, neurons)

    handles = [h for i, b in enumerate(layers) for h in (
        b.linear(b.arch.attn_out_path).register_forward_pre_hook(head_hook(i)),
        b.linear(b.arch.ffn_out_path).register_forward_pre_hook(neuron_hook(i)))]
    grad_was = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in grad_was:
            p.requires_grad_(False)
        for batch in calibration:
            n = batch["input_ids"].shape[0]
            masks["heads"] = [torch.ones(n, 1, b.heads, requires_grad=True) for b in layers]
            masks["neurons"] = [torch.ones(n, 1, b.neurons, requires_grad=True) for b in layers]
            loss = task_loss(forward(model, batch), batch["labels"])  # summed: each example its own gradient
            grads = torch.autograd.grad(loss, [*masks["heads"], *masks["neurons"]])
            for i in range(len(layers)):
                head_scores[i] += grads[i].pow(2).sum(dim=(0, 1))
                neuron_scores[i] += grads[len(layers) + i].pow(2).sum(dim=(0, 1))
    finally:
        for h in handles:
            h.remove()
        for p, was in grad_was.items():
            p.requires_grad_(was)
    return head_scores, neuron_scores


def keep_most_important(scores: list[torch.Tensor], fraction: float) -> list[list[int]]:
    """Drop ``round(fraction * total)`` of the lowest-scoring units over all layers, keeping >= 1 per layer."""
    flat = torch.cat(scores)
    layer_of = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)])
    unit_of = torch.cat([torch.arange(len(s)) for s in scores])
    left = [len(s) for s in scores]
    dropped: set[tuple[int, int]] = set()
    budget = round(fraction * flat.numel())
    for j in torch.argsort(flat, stable=True).tolist():
        if len(dropped) == budget:
            break
        i = int(layer_of[j])
        if left[i] > 1:
            left[i] -= 1
            dropped.add((i, int(unit_of[j])))
    return [[u for u in range(len(s)) if (i, u) not in dropped] for i, s in enumerate(scores)]


def compress(model: nn.Module, cfg: StructuredConfig, calibration=None) -> nn.Module:
    """Score heads and neurons on ``calibration`` (labelled batches), then remove the least important."""
    model = servable_form(model).to("cpu").eval()
    layers = blocks(model)
    head_scores, neuron_scores = fisher_scores(model, layers, calibration)
    keep_heads = keep_most_important(head_scores, cfg.heads)
    keep_neurons = keep_most_important(neuron_scores, cfg.neurons)
    for block, heads, neurons in zip(layers, keep_heads, keep_neurons, strict=True):
        block.prune(heads, neurons)
    model._nluforge_structured = {"heads": keep_heads, "neurons": keep_neurons}  # the layout save records
    return model


def save(model: nn.Module, cfg: StructuredConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors`` (the sliced model's tensors); the layout holds the kept indices."""
    from safetensors.torch import save_file

    from nluforge.compress.targets import other_tensors

    layout = getattr(model, "_nluforge_structured", None)
    if layout is None:
        raise UserError("structured: this model was not pruned by structured.compress; compress it first")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in other_tensors(model, {}).items()}, str(folder / WEIGHTS),
              metadata={"format": "nluforge-structured"})
    return {**layout, "head_size": blocks(model)[0].head_size}


def load(folder: Path, model: nn.Module, cfg: StructuredConfig, layout: dict[str, Any]) -> nn.Module:
    """Slice ``model`` (the unpruned structure) as recorded in ``layout``, then fill it from ``folder``."""
    from safetensors.torch import load_file

    model = servable_form(model).to("cpu").eval()
    layers = blocks(model)
    if len(layers) != len(layout["heads"]) or layers[0].head_size != layout["head_size"]:
        raise UserError(f"{folder} does not match the run's model structure ({len(layout['heads'])} layers of head "
                        f"size {layout['head_size']} in the file); recompress the parent run")
    for block, heads, neurons in zip(layers, layout["heads"], layout["neurons"], strict=True):
        if max(heads) >= block.heads or max(neurons) >= block.neurons:
            raise UserError(f"{folder} keeps heads or neurons this model does not have; recompress the parent run")
        block.prune(heads, neurons)
    fill_others(model, {}, load_file(str(folder / WEIGHTS)), str(folder / WEIGHTS))
    model._nluforge_structured = {"heads": layout["heads"], "neurons": layout["neurons"]}
    return model
