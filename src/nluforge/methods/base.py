"""What every method shares: freezing helpers, parameter counting, step hooks, save and load.

Saved formats (always safetensors, never pickle):

- a peft model: ``save_pretrained`` adapter folder, loadable with plain ``peft.PeftModel.from_pretrained``;
- a Hugging Face model whose every parameter is trained (full fine-tuning): a ``save_pretrained`` folder;
- anything else (BitFit, the own methods' wrappers): only what the method trains, never a copy of the
  frozen base: ``method_state.safetensors`` with the trainable tensors (and the buffers the method
  registers in ``_nluforge_extra_state``), plus ``base_model.json`` naming the base model they apply to
  (``base_model_name_or_path``, peft's key). :func:`load` re-applies ``adapt`` to the freshly loaded
  base model and copies that state in, so the reloaded model's logits are the saved model's.

:func:`nluforge.models.params.size_figures` reads these folders for the delta and standalone sizes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.models.params import BASE_REF, count_params, trainable_state

METHOD_STATE = "method_state.safetensors"


@dataclass
class TrainHooks:
    """Per-step callbacks a method may need; ``step`` counts optimizer steps from 0."""

    before_forward: Callable[[int], None] | None = None  # e.g. DyLoRA samples this step's rank
    after_backward: Callable[[int], None] | None = None  # gradients ready, before clipping and the step
    after_step: Callable[[int], None] | None = None  # after optimizer.step, before zero_grad (AdaLoRA)
    on_train_end: Callable[[], None] | None = None
    # State the hooks keep between steps (nested dicts/lists of tensors and JSON values), saved in
    # training checkpoints and restored on resume, so a resumed run continues exactly (AdaLoRA).
    state_dict: Callable[[], dict[str, Any]] | None = None
    load_state_dict: Callable[[dict[str, Any]], None] | None = None


@dataclass
class PrefitResult:
    """What a method's ``prefit`` (its own training, run instead of the gradient loop) reports."""

    train_time_s: float
    examples: int  # training examples used
    steps: int = 0  # optimizer steps, if the method takes any (SetFit's contrastive phase)
    summary: dict[str, Any] | None = None  # method-specific facts for result.meta


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(params: Iterable[nn.Parameter]) -> None:
    for p in params:
        p.requires_grad_(True)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The task head(s) of a Hugging Face classifier, from the architecture table."""
    from nluforge.models.arch import arch_of

    names = arch_of(model).head
    found = [getattr(model, n) for n in names if hasattr(model, n)]
    if not found:
        raise UserError(f"found no task head ({', '.join(names)}) on {type(model).__name__}")
    return found


def head_param_count(model: nn.Module) -> int:
    return sum(count_params(m) for m in head_modules(model))


def unfreeze_head(model: nn.Module) -> None:
    for m in head_modules(model):
        unfreeze(m.parameters())


def is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a core dependency
        return False
    return isinstance(model, PeftModel)


def save(model: nn.Module, path: str | Path) -> None:
    """Save ``model`` to folder ``path`` in the format described in the module docstring."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    from transformers import PreTrainedModel

    trains_all = all(p.requires_grad for p in model.parameters())
    if is_peft(model) or (isinstance(model, PreTrainedModel) and trains_all):
        model.save_pretrained(path, safe_serialization=True)
        return
    save_state(model, path)


def save_state(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The trained tensors, and a reference to the base model they apply to."""
    import json

    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in trainable_state(model).items()}
    save_file(state, str(path / METHOD_STATE), metadata={"format": "pt", **(metadata or {})})
    config = getattr(model, "config", None)
    reference = {"base_model_name_or_path": getattr(config, "_name_or_path", "") or None,
                 "complete": all(p.requires_grad for p in model.parameters()),  # the state is the whole model
                 "saved_params": sum(v.numel() for v in state.values()), "total_params": count_params(model)}
    (path / BASE_REF).write_text(json.dumps(reference, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def peft_deprecation_quiet():
    """peft 0.21 calls ``is_gradient_checkpointing``, a transformers 5 API deprecated for v6: its
    FutureWarning is not the user's to act on (building and loading peft models both trigger it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load(path: str | Path, base_model: nn.Module, cfg: Any, adapt_fn: Callable[..., nn.Module], **context: Any):
    """Inverse of :func:`save`: ``base_model`` is the freshly loaded pretrained model."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        from nluforge.models.loading import quiet_transformers

        with peft_deprecation_quiet(), quiet_transformers():
            return PeftModel.from_pretrained(base_model, path)
    if (path / METHOD_STATE).is_file():
        model = adapt_fn(base_model, cfg, **context)
        load_state(model, path / METHOD_STATE)
        return model
    if (path / "config.json").is_file():
        from nluforge.models.loading import quiet_transformers
        from nluforge.models.pooling import restore_pooling

        with quiet_transformers():
            return restore_pooling(type(base_model).from_pretrained(path))  # the pooling recorded in config.json
    raise UserError(f"{path} holds no saved model (no adapter_config.json, {METHOD_STATE} or config.json)")


def load_state(model: nn.Module, file: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise UserError(f"cannot read checkpoint {file}: {err}; it may be corrupt, retrain the run") from None
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    missing = [k for k in state if k not in own]
    if missing:
        raise UserError(f"checkpoint {file} does not match the model (unknown tensor {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            if own[name].shape != tensor.shape:
                raise UserError(f"checkpoint {file}: {name} has shape {tuple(tensor.shape)}, "
                                f"the model expects {tuple(own[name].shape)}")
            own[name].copy_(tensor)


class MethodWrapper(nn.Module):
    """A plain ``nn.Module`` around a Hugging Face model, for methods that add modules of their own.

    Being a plain module, it is saved as :data:`METHOD_STATE` by :func:`save`; ``config`` stays reachable
    so :func:`nluforge.models.arch.arch_of` works on the wrapper. ``forward`` passes through; methods that
    compute logits differently override it.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
