"""Task specs: what a task is (text fields, labels, metrics, splits), read from small YAML files.

Every built-in task is one file in ``specs/`` (lm-evaluation-harness style: data, not code). A variant
reuses its base with ``include: base.yaml`` and overrides top-level keys (a shallow merge: a key given
in the variant replaces the base's value as a whole, ``source`` included).

Label ids equal the Hugging Face ``nyu-mll/glue`` ClassLabel ids, so GLUE TSVs, the Hub and AdvGLUE
(which uses the same ids) agree.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nluforge.core.errors import UserError
from nluforge.core.registry import Registry
from nluforge.tasks.metrics import METRICS

SPECS_DIR = Path(__file__).with_name("specs")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TaskSource:
    """Where a task's examples live, per backend. All optional: a custom task has none of them.

    ``glue_columns`` maps each canonical field (the spec's text fields and ``label``) to its column
    in the GLUE TSV: a header name, or a 0-based index for a header-less file (``glue_header: false``,
    CoLA). ``glue_files`` maps split names to file stems in the task folder (``validation: dev``).
    """

    hub: str | None = None  # "dataset_path:config", e.g. "nyu-mll/glue:sst2"
    glue_dir: str | None = None  # folder under the GLUE root, e.g. "SST-2"
    glue_files: Mapping[str, str] = field(default_factory=dict, hash=False)
    glue_columns: Mapping[str, str | int] = field(default_factory=dict, hash=False)
    glue_header: bool = True
    advglue_key: str | None = None  # key in AdvGLUE's dev.json, e.g. "mnli-mm"


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``label_names is None`` means regression (one output, a float target).

    ``advglue`` names the AdvGLUE evaluation-only sets that probe a model trained on this task
    (empty when there is none); an AdvGLUE spec has ``eval_only=True`` and ``base`` = its GLUE task.
    ``template``/``verbalizer`` are LM-BFF's manual prompts (Gao et al. 2021, Table 1) for
    prompt-based methods: ``{field}`` placeholders and ``{mask}``; one word per label id (regression:
    the words for the low and the high end of the scale). ``extra_templates`` are further patterns
    (PET/LM-BFF-style variants), prompt indices 1, 2, ... after ``template`` (index 0).
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    primary_metric: str
    eval_splits: tuple[str, ...] = ("validation",)
    advglue: tuple[str, ...] = ()
    eval_only: bool = False
    base: str | None = None
    summary: str = ""
    description: str = ""
    version: int = 1
    template: str | None = None
    extra_templates: tuple[str, ...] = ()
    verbalizer: tuple[str, ...] | None = None
    source: TaskSource = field(default_factory=TaskSource)

    def __post_init__(self):
        problem = _problem(self)
        if problem:
            raise UserError(f"task spec '{self.name}': {problem}")

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Model outputs: the number of classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        """For a Hugging Face model config; ``{0: "score"}`` for regression."""
        return {0: "score"} if self.label_names is None else dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}


def _problem(spec: TaskSpec) -> str:
    """The first thing wrong with ``spec``, or ``""``."""
    if not _NAME.match(spec.name):
        return "name must be lowercase letters, digits and '_'"
    if not 1 <= len(spec.text_fields) <= 2:
        return f"text_fields must list 1 or 2 fields, got {list(spec.text_fields)}"
    labels = spec.label_names
    if labels is not None and (len(labels) < 2 or len(set(labels)) != len(labels)):
        return f"label_names must be 2 or more distinct names, got {list(labels)}"
    unknown = [m for m in spec.metrics if m not in METRICS]
    if unknown or not spec.metrics:
        return f"unknown metric {unknown[0] if unknown else '(none)'}; known: {', '.join(METRICS)}"
    if spec.primary_metric not in spec.metrics:
        return f"primary_metric '{spec.primary_metric}' is not in metrics {list(spec.metrics)}"
    if not spec.eval_splits:
        return "eval_splits is empty"
    n_words = 2 if labels is None else len(labels)
    if spec.verbalizer is not None and len(spec.verbalizer) != n_words:
        return f"verbalizer needs {n_words} words, got {list(spec.verbalizer)}"
    if spec.version < 1:
        return f"version must be a positive integer, got {spec.version}"
    if spec.extra_templates and not spec.template:
        return "extra_templates need a template (prompt index 0) first"
    for template in ([spec.template] if spec.template else []) + list(spec.extra_templates):
        problem = _template_problem(template, spec.text_fields)
        if problem:
            return f"template '{template}': {problem}"
    return ""


def _template_problem(template: str, fields: tuple[str, ...]) -> str:
    """A cloze template uses each text field once and ``{mask}`` once, and nothing else."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        return f"not a valid pattern ({err})"
    expected = sorted([*fields, "mask"])
    if sorted(names) != expected:
        return f"must use {', '.join('{' + n + '}' for n in expected)} once each, found {names}"
    return ""


_TUPLE_FIELDS = {"text_fields", "label_names", "metrics", "eval_splits", "advglue", "verbalizer", "extra_templates"}


def spec_from_mapping(data: Mapping[str, Any], where: str = "task spec") -> TaskSpec:
    """Build a :class:`TaskSpec` from a YAML mapping, strictly: unknown keys are errors."""
    known = [f.name for f in dataclasses.fields(TaskSpec)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise UserError(f"{where}: unknown key '{key}'; valid keys: {', '.join(known)}")
        if key in _TUPLE_FIELDS and value is not None:
            value = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        kwargs[key] = value
    source = kwargs.pop("source", None) or {}
    src_known = [f.name for f in dataclasses.fields(TaskSource)]
    for key in source:
        if key not in src_known:
            raise UserError(f"{where}: unknown key 'source.{key}'; valid keys: {', '.join(src_known)}")
    missing = [
        k for k in ("name", "text_fields", "label_names", "metrics", "primary_metric") if k not in kwargs
    ]
    if missing:
        raise UserError(f"{where}: missing key '{missing[0]}'")
    try:
        return TaskSpec(**kwargs, source=TaskSource(**source))
    except TypeError as err:
        raise UserError(f"{where}: {err}") from None


def read_spec_file(path: str | Path, _depth: int = 0) -> dict[str, Any]:
    """Read a spec YAML, resolving ``include:`` (relative to the file) by a shallow merge."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task spec file not found: {path}")
    try:
        data = yaml.load(
            path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping")
    include = data.pop("include", None)
    if include is None:
        return data
    if _depth > 4:
        raise UserError(f"{path}: 'include' nests too deeply")
    return {**read_spec_file(path.parent / include, _depth + 1), **data}


def load_spec(path: str | Path) -> TaskSpec:
    """A :class:`TaskSpec` from a YAML file (a user's own task, or a shipped one)."""
    return spec_from_mapping(read_spec_file(path), where=str(path))


def _builtin_specs() -> list[TaskSpec]:
    specs = [load_spec(p) for p in sorted(SPECS_DIR.glob("*.yaml"))]
    return sorted(specs, key=lambda s: (s.eval_only, s.name))  # GLUE first, then AdvGLUE


TASKS: Registry[TaskSpec] = Registry("task", hint="see `nluforge tasks`")
for _spec in _builtin_specs():
    TASKS.register(_spec.name, _spec, summary=_spec.summary)


def get_task(name: str) -> TaskSpec:
    """The registered spec called ``name`` (case-insensitive); unknown → one-line UserError."""
    return TASKS.get(name)


def advglue_tasks_for(spec: TaskSpec | str) -> list[str]:
    """Names of the AdvGLUE sets that evaluate a model trained on ``spec`` (``[]`` when none)."""
    spec = get_task(spec) if isinstance(spec, str) else spec
    return list(spec.advglue)
