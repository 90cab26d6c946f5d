"""Typed steps: a ``{method: name, <options>}`` mapping resolved through its family's registry.

A run config lists compression, attack and audit steps as mappings; :func:`resolve_step` turns one
into a :class:`Step` holding the family's typed config dataclass, built strictly (unknown names and
unknown options are one-line errors with a "did you mean"). Resolving imports only the config
class (registries point at light ``config`` modules), so a bad step fails before torch loads.

The attack, audit and privacy registries live here until their families (``robustness``,
``privacy``) land; a family registers its entries into them, so the pipeline and ``nluforge``
listings need no change then. The compressor registry lives with its family, :mod:`nluforge.compress`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nluforge.core.config import build
from nluforge.core.errors import UserError
from nluforge.core.registry import Registry

ATTACKS: Registry[Any] = Registry("attack")  # filled by nluforge.attack: its error lists the recipes
AUDITS: Registry[Any] = Registry("audit", hint="no audit is available in this version of nluforge")
PRIVACY: Registry[Any] = Registry("privacy method",
                                  hint="no privacy method is available in this version of nluforge")


@dataclass(frozen=True)
class Step:
    """One resolved step: its family, registry name and typed config."""

    kind: str  # "compress" | "attack" | "audit" | "privacy"
    method: str  # the registry name
    config: Any  # the registry entry's config dataclass, built from the step's options

    @property
    def label(self) -> str:
        """``compress:int8_dynamic``: the derived step's name in result.json and the report."""
        return f"{self.kind}:{self.method}"

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


def resolve_step(registry: Registry[Any], kind: str, raw: Any, where: str) -> Step:
    """Resolve ``raw`` (``{method: name, <options>}``) strictly; ``where`` names it in errors."""
    if not isinstance(raw, Mapping):
        raise UserError(f"{where} must be a mapping like {{method: NAME, option: value}}, got {raw!r}")
    options = dict(raw)
    name = options.pop("method", None)
    if not isinstance(name, str) or not name:
        raise UserError(f"{where} needs 'method: NAME' (a {registry.kind}); got {dict(raw)!r}")
    entry = registry.entry(name)  # unknown name: one line with did-you-mean
    config_cls = entry.load()
    return Step(kind, entry.name, build(config_cls, options, where=where))


def resolve_named(registry: Registry[Any], kind: str, name: str | None, params: Mapping[str, Any],
                  where: str) -> Step | None:
    """A section written as ``name`` + ``params`` (``privacy: {method, params}``); None when unset."""
    if name is None:
        if params:
            raise UserError(f"{where}.params is set but {where}.method is not; name the {registry.kind}")
        return None
    return resolve_step(registry, kind, {"method": name, **dict(params)}, where)
