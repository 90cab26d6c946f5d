"""Every section of a run config resolved through its registry into a typed config.

:func:`resolve_sections` is the first thing ``prepare`` does: it imports no model code and no torch,
so an unknown method, optimizer, compressor, attack, audit or privacy method, or an unknown option of
any of them, is a one-line error within a second, before anything loads or is written.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from nluforge.core.errors import UserError
from nluforge.core.registry import suggest
from nluforge.core.steps import ATTACKS, AUDITS, PRIVACY, Step, resolve_named, resolve_step
from nluforge.experiments.config import RunConfig


@dataclass(frozen=True)
class OptimizerChoice:
    """The optimizer's registry name and its options, checked against its factory's keywords."""

    name: str
    params: dict[str, Any]


@dataclass
class Sections:
    """The typed form of a run config's pluggable sections."""

    method: Any  # the method's Config dataclass
    optimizer: OptimizerChoice
    compress: list[Step] = field(default_factory=list)
    attack: list[Step] = field(default_factory=list)
    audit: list[Step] = field(default_factory=list)
    privacy: Step | None = None
    distill: list[Step] = field(default_factory=list)  # Step("distill", student spec, DistillConfig)
    checkpoint_codec: Any = None  # the codec's typed config; None for 'none'


def resolve_sections(cfg: RunConfig) -> Sections:
    """Resolve and validate method, optimizer, compress, attack, audit, privacy and the checkpoint codec."""
    import nluforge.attack

    nluforge.attack.register()  # the attack recipes, into ATTACKS
    import nluforge.privacy  # noqa: F401 - registers dp_sgd and the loss / lira audits
    from nluforge.compress import COMPRESSORS

    # the step sections first: they import no torch, so a bad step fails in well under a second
    compress = [resolve_step(COMPRESSORS, "compress", s, f"compress[{i}]") for i, s in enumerate(cfg.compress)]
    attack = [resolve_step(ATTACKS, "attack", s, f"attack[{i}]") for i, s in enumerate(cfg.attack)]
    audit = [resolve_step(AUDITS, "audit", s, f"audit[{i}]") for i, s in enumerate(cfg.audit)]
    privacy = resolve_named(PRIVACY, "privacy", cfg.privacy.method, cfg.privacy.params, "privacy")
    distill = [resolve_distill(s, f"distill[{i}]") for i, s in enumerate(cfg.distill)]
    from nluforge.methods import method_config
    from nluforge.train.codecs import resolve_codec

    optimizer = resolve_optimizer(cfg.optimizer, cfg.optimizer_params)
    from nluforge.optim import check_combination

    check_combination(optimizer.name, cfg.method, grad_accum=cfg.train.grad_accum, privacy=privacy is not None)
    return Sections(method=method_config(cfg.method, cfg.method_params), optimizer=optimizer,
                    compress=compress, attack=attack, audit=audit, privacy=privacy, distill=distill,
                    checkpoint_codec=resolve_codec(cfg.train.checkpoint_codec, cfg.train.checkpoint_codec_params))


def resolve_distill(raw: Any, where: str) -> Step:
    """A distill step ``{student: SPEC, <options>}`` as a typed :class:`~nluforge.distill.DistillConfig`."""
    from collections.abc import Mapping

    from nluforge.core.config import build
    from nluforge.distill.config import DistillConfig

    if not isinstance(raw, Mapping):
        raise UserError(f"{where} must be a mapping like {{student: layers:3, option: value}}, got {raw!r}")
    config = build(DistillConfig, dict(raw), where=where)
    return Step("distill", config.student, config)


# set by the loop for every optimizer; not the user's to give in optimizer_params
_OPTIMIZER_FIXED = ("model", "lr", "weight_decay")


def resolve_optimizer(name: str, params: dict[str, Any]) -> OptimizerChoice:
    """Check the optimizer's name and that each option is a keyword its factory takes."""
    from nluforge.optim import OPTIMIZERS

    entry = OPTIMIZERS.entry(name)
    factory = entry.load()
    signature = inspect.signature(factory)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    known = [p for p in signature.parameters if p not in _OPTIMIZER_FIXED]
    for key in params:
        if key in _OPTIMIZER_FIXED:
            raise UserError(f"optimizer_params.{key} is set by the run, not by optimizer_params; "
                            "use train.lr / train.weight_decay")
        if key not in known and not takes_any:
            raise UserError(f"unknown option '{key}' for optimizer '{entry.name}'{suggest(key, known)}; "
                            f"valid: {', '.join(known) or '(none)'}")
    return OptimizerChoice(entry.name, dict(params))
