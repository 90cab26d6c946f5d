"""How a classifier reads the encoder: the architecture's [CLS] pooler, or mean / max over tokens.

Sentence-transformers checkpoints are trained to be read through a pooling module named in their
``modules.json`` (all-MiniLM-L6-v2: mean over the attention mask, then L2 normalisation); Reimers &
Gurevych 2019, "Sentence-BERT" (EMNLP), compare the modes and pick mean. A transformers
``*ForSequenceClassification`` model instead feeds its head from [CLS] (BERT: a dense + tanh pooler
that such checkpoints never trained for this use). ``pooling``:

- ``auto``: what the checkpoint says: the mode nluforge recorded when it saved the model
  (``config.nluforge_pooling``), else the sentence-transformers Pooling module's config, else ``cls``;
- ``cls``: the architecture's own pooler (unchanged transformers model);
- ``mean`` / ``max``: over the positions whose attention mask is 1.

Mechanism: two forward hooks, so the model stays the same transformers class with the same state-dict
keys (peft wraps it, ``save_pretrained`` writes it, ``modules_to_save`` deep-copies the hooked head):
a pre-hook on the base encoder (``bert``, ``roberta``...) records the 2-D attention mask it is called
with, and a hook at the architecture table's ``pool_at`` module replaces its output (BERT's pooler) or
its input (heads that read ``features[:, 0]``) by the pooled vector. The mode is written to
``config.nluforge_pooling``; :func:`restore_pooling` re-applies it after ``from_pretrained``.
Departure from sentence-transformers: by default the pooled vector is not L2-normalised inside the
model even when the checkpoint ends with a Normalize module (the probe's logistic regression
standardises features instead, folded exactly into the head; gradient-trained heads were calibrated
on unnormalised features). ``apply_pooling(..., normalize=True)`` adds it; SetFit uses it.

Virtual tokens. Prefix tuning's prefixes are keys and values, not output positions: peft extends the
mask by N ones in front, so the mask's last T columns are the ones that match the T outputs, and only
they are used. Prompt tuning's (and LOPA's) virtual tokens *are* output positions with mask 1, and
they count in the mean: the pooling stays a function of (hidden states, mask) alone, whatever method
inserted the tokens and where (peft before [CLS], LOPA after it), and the prompt is trained with the
head, so what it contributes to the mean is learned. The cost: at initialisation N/(N+T) of the mean
comes from prompt positions, further from what the checkpoint was trained on than a text-only mean.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.models.arch import arch_of

Pooling = Literal["auto", "cls", "mean", "max"]
POOLINGS: tuple[str, ...] = ("auto", "cls", "mean", "max")
CONFIG_KEY = "nluforge_pooling"
NORMALIZE_KEY = "nluforge_pooling_normalize"  # L2-normalise the pooled vector (sentence-transformers' Normalize)

# The attention mask of the encoder call in progress: set by the base encoder's pre-hook, read by the
# pooling hook of the same forward pass (a ContextVar, not a module attribute, so that peft's deep copy
# of a hooked head still reads it).
_MASK: ContextVar[torch.Tensor | None] = ContextVar("nluforge_pool_mask", default=None)
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def check_pooling(value: str) -> str:
    if value not in POOLINGS:
        raise UserError(f"pooling '{value}' is not one of {', '.join(POOLINGS)}")
    return value


def sentence_transformers_pooling(source: str | Path) -> str | None:
    """The pooling mode a sentence-transformers folder declares (modules.json), or None if none."""
    folder = Path(source)
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    try:
        entries = json.loads(modules.read_text())
        entry = next((e for e in entries if e.get("type", "").endswith("models.Pooling")), None)
        if entry is None:
            return None
        config = json.loads((folder / entry.get("path", "") / "config.json").read_text())
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"cannot read the sentence-transformers pooling config in {folder}: {err}; "
                        "set pooling to cls, mean or max explicitly") from None
    on = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
    if len(on) != 1 or on[0] not in _ST_MODES:
        raise UserError(f"{folder} pools with {' + '.join(on) or 'nothing'}; nluforge supports one of cls, mean, "
                        "max: set pooling explicitly")
    return _ST_MODES[on[0]]


def sentence_transformers_normalizes(source: str | Path) -> bool:
    """Whether a sentence-transformers folder ends with a Normalize module (all-MiniLM-L6-v2 does)."""
    modules = Path(source) / "modules.json"
    try:
        entries = json.loads(modules.read_text()) if modules.is_file() else []
    except (OSError, ValueError):
        return False
    return any(str(e.get("type", "")).endswith("models.Normalize") for e in entries)


def resolve_pooling(pooling: str, source: str | Path, config) -> str:
    """``auto`` → the recorded mode, else the sentence-transformers mode, else ``cls``."""
    check_pooling(pooling)
    if pooling != "auto":
        return pooling
    recorded = getattr(config, CONFIG_KEY, None)
    if recorded:
        return check_pooling(recorded)
    return sentence_transformers_pooling(source) or "cls"


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Mean or max of ``hidden`` (B, L, H) over positions where ``mask`` (B, M >= L) is 1: (B, H)."""
    if mask is None:
        mask = hidden.new_ones(hidden.shape[:2])
    if mask.shape[1] < hidden.shape[1] or mask.shape[0] != hidden.shape[0]:
        raise RuntimeError(f"pooling: mask {tuple(mask.shape)} does not cover hidden states {tuple(hidden.shape)}")
    w = mask[:, -hidden.shape[1]:].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1); prefix-tuning columns cut
    if mode == "mean":
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(w == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise ValueError(mode)


def _ours(fn):
    fn._nluforge_pool = True
    return fn


@_ours
def _record_mask(_module, args, kwargs):
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    _MASK.set(mask if mask is not None and mask.dim() == 2 else None)


def _pooled(hidden: torch.Tensor, mode: str, normalize: bool) -> torch.Tensor:
    out = pool(hidden, _MASK.get(), mode)  # (B, H)
    return nn.functional.normalize(out, dim=-1) if normalize else out


def _replace_output(mode: str, normalize: bool):
    @_ours
    def hook(_module, args, _output):
        return _pooled(args[0], mode, normalize)  # (B, H)
    return hook


def _replace_input(mode: str, normalize: bool):
    @_ours
    def hook(_module, args, kwargs):
        return (_pooled(args[0], mode, normalize).unsqueeze(1), *args[1:]), kwargs  # (B, 1, H)
    return hook


def _clear(module: nn.Module) -> None:
    """Remove this module's pooling hooks (found by a marker, so deep copies are cleared too)."""
    for hooks in (module._forward_hooks, module._forward_pre_hooks):
        for key in [k for k, fn in hooks.items() if getattr(fn, "_nluforge_pool", False)]:
            del hooks[key]
            module._forward_hooks_with_kwargs.pop(key, None)
            module._forward_pre_hooks_with_kwargs.pop(key, None)


def apply_pooling(model: nn.Module, mode: str, *, normalize: bool = False) -> nn.Module:
    """Make a ``*ForSequenceClassification`` model's head read ``mode``-pooled features (in place).

    ``mode`` is a resolved mode (cls, mean, max); ``normalize`` L2-normalises the pooled vector (mean
    and max only; SetFit's head reads the normalised embedding its sentence-transformers body gives).
    Calling it again replaces the previous hooks.
    """
    if mode not in ("cls", "mean", "max"):
        raise UserError(f"pooling mode '{mode}' must be resolved to cls, mean or max first")
    arch = arch_of(model)
    for module in model.modules():
        _clear(module)
    model.config.nluforge_pooling = mode
    model.config.nluforge_pooling_normalize = bool(normalize) and mode != "cls"
    if mode == "cls":
        return model
    if arch.pool_at is None:
        raise UserError(f"{model.config.model_type} reads [CLS] inside its forward; only pooling 'cls' works for "
                        "it (or use a BERT, RoBERTa, ELECTRA, DeBERTa or MPNet model)")
    base, target = model.get_submodule(arch.base), model.get_submodule(arch.pool_at)
    base.register_forward_pre_hook(_record_mask, with_kwargs=True)
    if arch.pool_hook == "output":
        target.register_forward_hook(_replace_output(mode, normalize))
    else:
        target.register_forward_pre_hook(_replace_input(mode, normalize), with_kwargs=True)
    return model


def restore_pooling(model: nn.Module) -> nn.Module:
    """Re-apply the pooling recorded in ``model.config`` (after ``from_pretrained`` of a saved model)."""
    config = getattr(model, "config", None)
    mode = getattr(config, CONFIG_KEY, None)
    return apply_pooling(model, mode, normalize=bool(getattr(config, NORMALIZE_KEY, False))) if mode else model


def normalizes(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), NORMALIZE_KEY, False))


def pooling_of(model: nn.Module) -> str:
    """The resolved pooling of a (possibly peft-wrapped) model: cls unless nluforge applied another."""
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "base_model"):
        config = model.base_model.config
    return getattr(config, CONFIG_KEY, None) or "cls"
