"""Grid files: one YAML that names every combination to train, compress, attack and measure.

A grid file has this shape (every key but ``version`` optional)::

    version: 1                # grid schema version
    description: "..."        # free text, shown by --dry-run
    base: {RunConfig mapping} # applied to every cell (e.g. data caps, epochs)
    grid:                     # Cartesian product over these axes, in this order
      task: [sst2, {name: rte, data: {max_length: 128}}]
      method: [full, {name: lora, params: {r: 8}, train: {lr: 5e-4}}]
      seed: [1, 2]
    zip:                      # groups of axes that vary together (equal lengths), crossed with the grid
      - {optimizer: [adamw, adamw8bit], train: [{lr: 5e-5}, {lr: 1e-4}]}
    exclude:                  # partial configs; a cell matching every key of a rule is dropped
      - {task: rte, method: lora}
    resources: {num_cpus: 1, num_gpus: 0}   # what one cell needs (Ray backend)

An axis entry becomes a *patch* of the run config: ``task``/``model``/``method``/``optimizer`` take a
name or ``{name, params (method/optimizer only), <any other RunConfig key>}``; ``seed`` and ``name``
take a scalar; ``data``/``train``/``eval``/``privacy`` take a partial mapping (``privacy: null``: not
private); ``compress``/``attack``/``audit``
take a list of steps (``{method: NAME, <options>}``; ``[]`` or ``null``: none; one mapping: one step).
Compress steps are *derived runs*: a cell with M compress steps expands into its trained cell
(``compress: []``) followed by M derived cells, one per step, so N trainings and M steps cost N
trainings (cells differing only in their compress steps share the trained cell). A cell is
``resolve(base, patch_1, ..., patch_k, overrides)``. Two axes that set the same key in one cell are an
error, not a silent order-dependent win. Exclude rules are matched against the resolved config.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nluforge.core.config import build, load_yaml, merge
from nluforge.core.errors import UserError
from nluforge.core.registry import suggest
from nluforge.experiments.config import RunConfig, resolve

GRID_VERSION = 1
TOP_KEYS = ("version", "description", "base", "grid", "zip", "exclude", "resources")
NAMED_AXES = ("task", "model", "method", "optimizer")
SCALAR_AXES = ("seed", "name")
SECTION_AXES = ("data", "train", "eval", "privacy")  # privacy: {method: dp_sgd, params: {...}}; null: none
STEP_AXES = ("compress", "distill", "attack", "audit")
AXES = NAMED_AXES + SCALAR_AXES + SECTION_AXES + STEP_AXES


@dataclass
class Resources:
    """What one cell needs from a Ray cluster (and, for ``num_cpus``, its torch thread count)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self):
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise UserError(f"resources need num_cpus > 0 and num_gpus >= 0, got {self}")


@dataclass(frozen=True)
class Entry:
    """One value of one axis: a label for listings and the config patch it applies."""

    label: str
    patch: dict[str, Any]


@dataclass
class Axis:
    """A grid axis, or a zip group (entries already combined), named as in the file."""

    name: str  # label key: "task", or "zip[0]" for a zip group
    entries: list[Entry]

    @property
    def where(self) -> str:
        """The axis as the user wrote it, for messages: ``grid.task`` or ``zip[0]``."""
        return self.name if self.name.startswith("zip[") else f"grid.{self.name}"


@dataclass(frozen=True)
class Cell:
    """One expanded cell: its resolved config and, per axis, the label of the entry it took."""

    config: RunConfig
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.config.run_id()


@dataclass
class Grid:
    """A parsed, validated grid file (not yet expanded)."""

    base: dict[str, Any]
    axes: list[Axis]
    exclude: list[dict[str, Any]]
    resources: Resources
    description: str = ""
    source: str = "<grid>"

    def cells(self, overrides: Mapping[str, Any] | None = None) -> list[Cell]:
        return expand(self, overrides)


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid YAML file."""
    return parse_grid(load_yaml(path), source=str(path))


def parse_grid(data: Mapping[str, Any], source: str = "<grid>") -> Grid:
    """Validate a grid mapping strictly; every axis entry is checked against :class:`RunConfig`."""
    _check_keys(data, TOP_KEYS, "")
    version = data.get("version", GRID_VERSION)
    if version != GRID_VERSION:
        raise UserError(f"grid 'version' must be {GRID_VERSION}, got {version!r}")
    base = _mapping(data.get("base"), "base")
    _checked(base, {}, "base")
    product = _mapping(data.get("grid"), "grid")
    _check_keys(product, AXES, "grid")
    axes = [Axis(name, _entries(name, values, f"grid.{name}", base)) for name, values in product.items()]
    axes += _zip_groups(data.get("zip"), base, {a.name for a in axes})
    exclude = _exclude_rules(data.get("exclude"))
    resources = build(Resources, _mapping(data.get("resources"), "resources"), where="resources")
    return Grid(base, axes, exclude, resources, str(data.get("description") or ""), source)


def expand(grid: Grid, overrides: Mapping[str, Any] | None = None) -> list[Cell]:
    """The grid's cells in product order, minus excluded ones; ``overrides`` apply last to each."""
    cells: list[Cell] = []
    seen: dict[str, dict[str, str]] = {}
    trained_ids: set[str] = set()  # trained cells added on behalf of compress steps
    matched = [False] * len(grid.exclude)
    for combo in itertools.product(*(axis.entries for axis in grid.axes)):
        labels = {axis.name: e.label for axis, e in zip(grid.axes, combo, strict=True)}
        where = f"cell {_describe(labels)}"
        patch = _combine([(axis.where, e.patch) for axis, e in zip(grid.axes, combo, strict=True)], where)
        cfg = _checked(grid.base, patch, where, dict(overrides or {}))
        hits = [i for i, rule in enumerate(grid.exclude) if _matches(rule, cfg.to_dict())]
        for i in hits:
            matched[i] = True
        if hits:
            continue
        # cells that differ only in their compress steps share one trained cell
        _add_trained(cells, seen, trained_ids, Cell(cfg.parent(), labels), for_steps=bool(cfg.children()))
        for child in cfg.children():  # one derived run per compress or distill step, after its parent
            _add(cells, seen, Cell(child, {**labels, child.step_kind(): child.step_name()}))
    for i, hit in enumerate(matched):
        if not hit:
            raise UserError(f"exclude[{i}] {grid.exclude[i]} matches no cell; check its keys and values")
    return cells


def _add(cells: list[Cell], seen: dict[str, dict[str, str]], cell: Cell) -> None:
    if cell.run_id in seen:
        raise UserError(f"cells {_describe(seen[cell.run_id])} and {_describe(cell.labels)} resolve to "
                        f"the same run ({cell.run_id}); drop one of the duplicate axis values")
    seen[cell.run_id] = cell.labels
    cells.append(cell)


def _add_trained(cells: list[Cell], seen: dict[str, dict[str, str]], shared: set[str], cell: Cell,
                 for_steps: bool) -> None:
    """A trained cell; one that compress steps need (``for_steps``) may coincide with another cell."""
    if cell.run_id in shared or (for_steps and cell.run_id in seen):
        if not for_steps:
            shared.discard(cell.run_id)  # now named by a cell of its own: a second one is a duplicate
        return
    if for_steps:
        shared.add(cell.run_id)
    _add(cells, seen, cell)


# ---- axes ---------------------------------------------------------------------------------------


def _entries(axis: str, values: Any, where: str, base: dict[str, Any]) -> list[Entry]:
    """Parse one axis' list of values into entries, checking each against the run config."""
    if not isinstance(values, list) or not values:
        raise UserError(f"'{where}' must be a non-empty list of values, got {values!r}")
    entries = [_entry(axis, value, f"{where}[{i}]") for i, value in enumerate(values)]
    for i, entry in enumerate(entries):
        _checked(base, entry.patch, f"{where}[{i}]")
    return entries


def _entry(axis: str, value: Any, where: str) -> Entry:
    if axis in NAMED_AXES:
        return _named_entry(axis, value, where)
    if axis == "privacy" and value is None:  # a non-private cell beside private ones
        return Entry("none", {"privacy": {"method": None, "params": {}}})
    if axis in SECTION_AXES:
        section = _mapping(value, where)
        return Entry(_kv_label(section) or "default", {axis: section})
    if axis in STEP_AXES:
        steps = [] if value is None else [value] if isinstance(value, Mapping) else value
        if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
            raise UserError(f"'{where}' must be a list of step mappings (or null), got {value!r}")
        key = "student" if axis == "distill" else "method"
        return Entry("+".join(str(s.get(key, "?")) for s in steps) or "none", {axis: list(steps)})
    if isinstance(value, (Mapping, list)):
        raise UserError(f"'{where}' must be a single value, got {value!r}")
    return Entry(str(value), {axis: value})


def _named_entry(axis: str, value: Any, where: str) -> Entry:
    """``name`` or ``{name, params, <RunConfig keys>}`` for task/model/method/optimizer axes."""
    if isinstance(value, str):
        return Entry(value, {axis: value})
    entry = _mapping(value, where)
    with_params = axis in ("method", "optimizer")
    allowed = ["name", *(["params"] if with_params else []),
               *(k for k in _run_keys() if k not in (axis, f"{axis}_params"))]
    _check_keys(entry, allowed, where)
    if not isinstance(entry.get("name"), str):
        raise UserError(f"'{where}.name' is required and must be a string, got {entry.get('name')!r}")
    patch = {k: v for k, v in entry.items() if k not in ("name", "params")}
    patch[axis] = entry["name"]
    label = entry["name"]
    if with_params:
        params = _mapping(entry.get("params"), f"{where}.params")
        patch[f"{axis}_params"] = params
        label += f"({_kv_label(params)})" if params else ""
    return Entry(label, patch)


def _zip_groups(groups: Any, base: dict[str, Any], taken: set[str]) -> list[Axis]:
    """Each zip group becomes one axis whose i-th entry combines the i-th entries of its axes."""
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise UserError(f"'zip' must be a list of groups (mappings of axis: [values]), got {groups!r}")
    out: list[Axis] = []
    for g, group in enumerate(groups):
        where = f"zip[{g}]"
        group = _mapping(group, where)
        _check_keys(group, AXES, where)
        names = list(group)
        if not names:
            raise UserError(f"'{where}' names no axis")
        for name in names:
            if name in taken:
                raise UserError(f"axis '{name}' appears twice ('{where}.{name}' and an earlier grid/zip)")
            taken.add(name)
        parsed = {n: _entries(n, group[n], f"{where}.{n}", base) for n in names}
        lengths = {n: len(v) for n, v in parsed.items()}
        if len(set(lengths.values())) > 1:
            raise UserError(f"'{where}' axes must have equal lengths, got {lengths}")
        entries = []
        for i in range(len(parsed[names[0]])):
            parts = [(f"{where}.{n}", parsed[n][i].patch) for n in names]
            label = ",".join(f"{n}={parsed[n][i].label}" for n in names)
            entries.append(Entry(label, _combine(parts, f"{where}[{i}]")))
        out.append(Axis(where, entries))
    return out


def _exclude_rules(rules: Any) -> list[dict[str, Any]]:
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise UserError(f"'exclude' must be a list of partial configs, got {rules!r}")
    out = []
    for i, rule in enumerate(rules):
        rule = _mapping(rule, f"exclude[{i}]")
        if not rule:
            raise UserError(f"exclude[{i}] is empty and would drop every cell")
        _check_rule_keys(rule, RunConfig, f"exclude[{i}]")
        out.append(rule)
    return out


# ---- matching, merging, checking -----------------------------------------------------------------


def _matches(rule: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """A rule matches when each of its keys matches: mappings by subset, scalars by (coerced) value."""
    for key, want in rule.items():
        have = actual.get(key)
        if isinstance(want, Mapping):
            if not isinstance(have, Mapping) or not _matches(want, have):
                return False
        elif not _same(want, have):
            return False
    return True


def _same(want: Any, have: Any) -> bool:
    if isinstance(have, float) and isinstance(want, (str, int)) and not isinstance(want, bool):
        try:
            return float(want) == have  # YAML reads 5e-4 as a string
        except ValueError:
            return False
    return want == have


def _combine(parts: list[tuple[str, dict[str, Any]]], where: str) -> dict[str, Any]:
    """Merge axis patches, refusing two axes that set the same key (the result would hang on order)."""
    owners: dict[str, str] = {}
    for axis, patch in parts:
        for leaf in _leaves(patch):
            if leaf in owners:
                raise UserError(f"{where}: '{owners[leaf]}' and '{axis}' both set '{leaf}'; "
                                "set it in one place (or use a zip group)")
            owners[leaf] = axis
    return merge(*(patch for _, patch in parts))


def _leaves(patch: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in patch.items():
        path = f"{prefix}{key}"
        out += _leaves(value, f"{path}.") if isinstance(value, Mapping) and value else [path]
    return out


def _checked(base: dict[str, Any], patch: dict[str, Any], where: str,
             overrides: dict[str, Any] | None = None) -> RunConfig:
    """Resolve ``base < patch < overrides`` strictly, and every section through its registry."""
    from nluforge.experiments.sections import resolve_sections

    try:
        cfg = resolve(base, patch, overrides)
        resolve_sections(cfg)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    return cfg


def _check_keys(data: Mapping[str, Any], allowed: Any, where: str) -> None:
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            raise UserError(f"unknown key '{name}'{suggest(str(key), allowed)}; "
                            f"valid keys: {', '.join(allowed)}")


def _check_rule_keys(rule: Mapping[str, Any], cls: type, where: str) -> None:
    """Exclude rules use run-config keys; nested sections are checked against their dataclass."""
    _check_keys(rule, [f.name for f in fields(cls)], where)
    hints = typing.get_type_hints(cls)
    for key, value in rule.items():
        sub = hints[key]
        if isinstance(value, Mapping) and hasattr(sub, "__dataclass_fields__"):
            _check_rule_keys(value, sub, f"{where}.{key}")


def _run_keys() -> list[str]:
    return [f.name for f in fields(RunConfig) if f.name != "version"]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"'{where}' must be a mapping, got {value!r}")
    return dict(value)


def _kv_label(mapping: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in mapping.items())


def _describe(labels: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items()) or "(base)"
