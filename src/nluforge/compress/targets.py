"""What a compressor works on: a run's model in servable form, and the weight tensors it may touch.

Shared by the compressors (each sub-package imports this, never another compressor).
"""

from __future__ import annotations

from torch import nn


def servable_form(model: nn.Module) -> nn.Module:
    """Merge a peft model's adapters into its base weights where peft can; otherwise keep it whole."""
    merge = getattr(model, "merge_and_unload", None)
    if merge is None:
        return model
    try:
        return merge()
    except (AttributeError, ValueError, TypeError, NotImplementedError):  # prompt/prefix tuning: nothing to merge
        return model


def skipped(name: str, skip: list[str]) -> bool:
    """Whether module ``name`` matches a skip entry: the entry's dotted parts appear as a run of the
    name's parts (``classifier`` matches ``classifier``, ``classifier.dense`` and a peft wrapper's
    ``base_model.classifier.modules_to_save.default``)."""
    parts = name.split(".")
    for s in skip:
        want = s.strip(".").split(".")
        if any(parts[i:i + len(want)] == want for i in range(len(parts) - len(want) + 1)):
            return True
    return False


def weight_targets(model: nn.Module, *, embeddings: bool, skip: list[str]) -> dict[str, nn.Parameter]:
    """``{parameter name: weight}`` of every nn.Linear (and nn.Embedding when ``embeddings``) not
    skipped, one name per tensor (a tied weight, e.g. a masked-LM decoder sharing the word embeddings,
    is listed once, under its first name)."""
    kinds = (nn.Linear, nn.Embedding) if embeddings else (nn.Linear,)
    seen: set[int] = set()
    out: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if type(module) not in kinds or skipped(name, skip) or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        out[f"{name}.weight"] = module.weight
    return out


def other_tensors(model: nn.Module, done: dict[str, nn.Parameter]) -> dict[str, object]:
    """The model's state dict without the tensors in ``done`` (nor their tied aliases)."""
    ids = {id(p) for p in done.values()}
    return {k: v.detach() for k, v in model.state_dict(keep_vars=True).items() if id(v) not in ids}


def fill_others(model: nn.Module, done: dict[str, nn.Parameter], tensors: dict, where: str) -> None:
    """Copy ``tensors`` (saved by name from :func:`other_tensors`) into ``model``; a missing, extra or
    misshapen tensor is a UserError naming ``where``."""
    import torch

    from nluforge.core.errors import UserError

    expected = other_tensors(model, done)
    missing = sorted(set(expected) - set(tensors))
    wrong = sorted(k for k, v in tensors.items() if k not in expected or expected[k].shape != v.shape)
    if missing or wrong:
        raise UserError(f"{where} does not match the run's model (missing {missing[:3]}, unexpected or "
                        f"misshapen {wrong[:3]}); recompress the parent run")
    with torch.no_grad():
        for key, value in tensors.items():
            expected[key].copy_(value)
