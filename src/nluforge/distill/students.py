"""Students: the teacher's backbone cut to K layers, or another pretrained model with a fresh head.

``layers:K`` copies the teacher (embeddings, the K picked layers in order, pooler and classifier head),
so the student starts from the teacher's own weights, as DistilBERT (Sanh et al. 2019, every other
layer) and TinyBERT's layer mapping (Jiao et al. 2020, layer ``(i+1)·N/K``) do. ``layer_pick``:

- ``first``: layers 0..K-1; ``last``: the top K layers;
- ``every_other``: 0, 2, 4, ... (DistilBERT's initialisation; at most ceil(N/2) layers);
- ``uniform``: ``(i+1)·N/K - 1`` for i < K, the last layer of each of K equal blocks (TinyBERT's
  uniform mapping; the top layer is always kept).
"""

from __future__ import annotations

import copy

from torch import nn

from nluforge.core.errors import UserError
from nluforge.distill.capture import inner_model, layer_list


def pick_layers(n: int, k: int, mode: str) -> list[int]:
    """The teacher layer indices (ascending) a K-layer student keeps out of N."""
    if not 0 < k <= n:
        raise UserError(f"layers:{k} needs 1 <= K <= {n} (the teacher's layer count)")
    if mode == "first":
        return list(range(k))
    if mode == "last":
        return list(range(n - k, n))
    if mode == "every_other":
        if k > (n + 1) // 2:
            raise UserError(f"layer_pick=every_other gives at most {(n + 1) // 2} of {n} layers, not {k}; "
                            "use layer_pick=uniform")
        return list(range(0, 2 * k, 2))
    if mode == "uniform":
        return [(i + 1) * n // k - 1 for i in range(k)]
    raise UserError(f"unknown layer_pick '{mode}'; choose first, every_other, last or uniform")


def plain_teacher(model: nn.Module) -> nn.Module:
    """A copy of the teacher as a plain Hugging Face model: peft adapters merged into the weights."""
    model = copy.deepcopy(model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def cut_layers(teacher: nn.Module, k: int, mode: str) -> tuple[nn.Module, list[int]]:
    """A deep copy of ``teacher`` keeping only the picked layers; returns ``(student, picked)``.

    The student keeps the teacher's class, embeddings, pooler and head; its config says
    ``num_hidden_layers = K`` and records ``nluforge_distill_layers`` (the picked teacher indices).
    """
    from nluforge.models.pooling import restore_pooling

    layers = layer_list(inner_model(teacher))
    picked = pick_layers(len(layers), k, mode)
    student = plain_teacher(teacher)
    kept = nn.ModuleList([layer_list(student)[i] for i in picked])
    for new_index, layer in enumerate(kept):  # attention modules that know their index (caches) get the new one
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    inner = inner_model(student)
    parent_path, _, name = _layers_path(inner).rpartition(".")
    setattr(inner.get_submodule(parent_path), name, kept)
    inner.config.num_hidden_layers = k
    inner.config.nluforge_distill_layers = picked
    restore_pooling(inner)  # the pooling hooks of the copy, re-attached to its own modules
    return student, picked


def _layers_path(model: nn.Module) -> str:
    from nluforge.models.arch import arch_of

    arch = arch_of(model)
    return f"{arch.base}.{arch.layers}"


def hidden_and_heads(model: nn.Module) -> tuple[int, int, int]:
    """(hidden size, attention heads, layers) of a (possibly peft-wrapped) Hugging Face encoder."""
    config = inner_model(model).config
    return config.hidden_size, config.num_attention_heads, config.num_hidden_layers


def check_minilm(teacher: nn.Module, student: nn.Module, heads: int | None) -> int:
    """The relation head count R for MiniLM, or a one-line UserError when the two models cannot be mapped.

    Without ``relation_heads``, R is the teacher's head count and the student must have as many heads
    (MiniLM v1: per-head relations). With R set, both hidden sizes must split into R heads (MiniLMv2).
    """
    t_dim, t_heads, _ = hidden_and_heads(teacher)
    s_dim, s_heads, _ = hidden_and_heads(student)
    wider = f"the student (hidden {s_dim}) is wider than the teacher (hidden {t_dim}) and " if s_dim > t_dim else ""
    if heads is None:
        if s_heads != t_heads:
            raise UserError(f"MiniLM loss: {wider}the student has {s_heads} attention heads, the teacher {t_heads}; "
                            f"set -p relation_heads=R (R dividing both hidden sizes) or -p minilm_weight=0")
        return t_heads
    for who, dim in (("teacher", t_dim), ("student", s_dim)):
        if dim % heads:
            raise UserError(f"MiniLM loss: {wider}the {who}'s hidden size {dim} does not split into "
                            f"relation_heads={heads}; pick R dividing both {t_dim} and {s_dim}, or -p minilm_weight=0")
    return heads
