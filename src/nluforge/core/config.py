"""Typed, strict configuration.

Configs are dataclasses. :func:`build` turns a user mapping (YAML or command line) into one, and
rejects unknown keys and ill-typed values with a one-line :class:`UserError` that uses the user's
spelling of the key. The merge rule is written once, in :func:`merge`: defaults < YAML < overrides.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nluforge.core.errors import UserError
from nluforge.core.registry import suggest

C = TypeVar("C")


def _adapter(tp: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def build(cls: type[C], data: Mapping[str, Any] | None, where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, strictly. ``where`` prefixes key names in errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            raise UserError(
                f"unknown key '{prefix}{key}'{suggest(key, list(fields))}; "
                f"valid keys: {', '.join(fields)}"
            )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            kwargs[name] = build(tp, value, f"{prefix}{name}")
            continue
        try:
            kwargs[name] = _adapter(tp).validate_python(value, strict=False)
        except Exception as err:  # pydantic.ValidationError; keep its first line only
            lines = [s.strip() for s in str(err).splitlines()[1:]]
            reasons = [s for s in lines if s and not s.startswith("For further information")]
            detail = reasons[-1].split(" [type=")[0] if reasons else str(err)
            raise UserError(f"bad value for '{prefix}{name}': {value!r} ({detail})") from None
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise UserError(f"invalid {where or cls.__name__} config: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-safe dict of a config dataclass."""
    return _plain(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg) else _plain(cfg)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge mappings left to right: later layers win (defaults < YAML < command line)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping at the top level, not {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value read as YAML: ``lr=1e-4``, ``targets=[query,value]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override '{text}' must look like key=value (e.g. train.lr=1e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def overrides_to_dict(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out
