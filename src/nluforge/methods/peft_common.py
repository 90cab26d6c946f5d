"""What the peft-backed methods (lora, adalora, ia3, prompt_tuning, prefix_tuning) share.

peft (Mangrulkar et al. 2022, https://github.com/huggingface/peft) implements the adapters. This
module does the checks peft does late or with long tracebacks, *before* peft sees the config, so a
bad option is a one-line :class:`UserError` naming the valid choices; and it resolves target names to
the exact module paths that both peft and each method's ``expected_trainable`` formula use.

Target names follow peft's matching rule: ``"value"`` or ``"attention.output.dense"`` match every
module whose dotted path equals the name or ends with ``"." + name``. Only ``nn.Linear`` layers
outside the task head are targets (the head is trained whole, as peft's ``modules_to_save``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nluforge.core.errors import UserError
from nluforge.core.registry import suggest
from nluforge.methods.base import head_modules, peft_deprecation_quiet
from nluforge.models.arch import arch_of


def matches(path: str, target: str) -> bool:
    """peft's rule for a ``target_modules`` list entry."""
    return path == target or path.endswith("." + target)


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` outside the task head, by dotted module path."""
    head = {id(m) for h in head_modules(model) for m in h.modules()}
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in head}


def resolve_targets(model: nn.Module, targets: list[str], method: str) -> dict[str, nn.Linear]:
    """The Linear layers named by ``targets``; a name that matches none is a one-line error."""
    if not targets:
        raise UserError(f"{method}: target_modules is empty; name at least one layer (e.g. query, value)")
    linears = linear_layers(model)
    for target in targets:
        if not any(matches(path, target) for path in linears):
            choices = sorted({path.rsplit(".", 1)[-1] for path in linears})
            raise UserError(
                f"{method}: target module '{target}' does not exist in this {model.config.model_type} model"
                f"{suggest(target, choices)}; valid choices: {', '.join(choices)} "
                f"(or a dotted suffix such as attention.output.dense)"
            )
    return {path: m for path, m in linears.items() if any(matches(path, t) for t in targets)}


def check_rank(targets: dict[str, nn.Linear], r: int, method: str, field: str = "r") -> None:
    """A rank above a targeted layer's smaller side cannot be low-rank: one-line error."""
    path, layer = min(targets.items(), key=lambda kv: min(kv[1].in_features, kv[1].out_features))
    limit = min(layer.in_features, layer.out_features)
    if r > limit:
        raise UserError(
            f"{method}: rank {field}={r} is larger than the hidden size {limit} of '{path}' "
            f"({layer.in_features}->{layer.out_features}); use {field} <= {limit}"
        )


def check_positive(method: str, **values: float) -> None:
    """Config-time range checks shared by every method (called from ``Config.__post_init__``)."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise UserError(f"method_params ({method}).{name} must be positive, got {value}")


def check_dropout(method: str, dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise UserError(f"method_params ({method}).dropout must be in [0, 1), got {dropout}")


def wrap(model: nn.Module, peft_config: Any) -> nn.Module:
    """``get_peft_model`` for sequence classification, with the arch table's head trained and saved.

    peft freezes the base model, adds the adapter, and replaces each head module by a trainable copy
    (``modules_to_save``) that ``save_pretrained`` writes next to the adapter weights.
    """
    from peft import get_peft_model

    head_modules(model)  # a one-line error when the model has no task head
    peft_config.modules_to_save = list(arch_of(model).head)
    with peft_deprecation_quiet():
        return get_peft_model(model, peft_config)


def prompt_dim(model: nn.Module) -> int:
    """Width of the input word embeddings (the hidden size, except e.g. ALBERT's factorised ones)."""
    return model.get_input_embeddings().embedding_dim
