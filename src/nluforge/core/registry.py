"""A tiny, single-source registry with lazy entries and "did you mean" suggestions.

Every family (tasks, methods, optimizers, compressors, attacks, runners) keeps one :class:`Registry`.
Heavy backends register lazily as ``"package.module:attr"`` strings, so listing names never imports
them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nluforge.core.errors import UserError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name.lower(), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class Entry(Generic[T]):
    name: str
    target: T | str  # the object, or "module:attr" resolved on first use
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> T:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            self.target = obj
        return self.target  # type: ignore[return-value]


class Registry(Generic[T]):
    """Names → objects. ``kind`` is used in messages ("unknown method 'x'")."""

    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind
        self.hint = hint  # e.g. "see `nluforge methods`"
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, target: T | str | None = None, *, summary: str = "", **meta: Any):
        """Register ``target`` under ``name``; usable as a decorator when ``target`` is omitted."""
        if name != name.lower():
            raise ValueError(f"registry names are lowercase: {name!r}")

        def add(obj: T | str) -> T | str:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, summary, dict(meta))
            return obj

        return add(target) if target is not None else add

    def entry(self, name: str) -> Entry[T]:
        key = name.lower()
        if key not in self._entries:
            hint = f"; {self.hint}" if self.hint else f"; known: {', '.join(self.names())}"
            raise UserError(f"unknown {self.kind} '{name}'{suggest(key, self.names())}{hint}")
        return self._entries[key]

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries
