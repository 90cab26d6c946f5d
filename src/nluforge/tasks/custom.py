"""Tasks read from the user's own files (CSV, TSV, JSON lines), for custom tasks and for registered
tasks whose data the user supplies (``load_task("sst2", train_file=...)``).

A custom task's label set is inferred from its train file (from the given files if there is no
train file): integer-valued labels are classes sorted by value, other numbers make a regression
task, anything else is a class name, sorted. The spec is named after the file, with accuracy and
macro-F1 (classification) or Pearson and Spearman (regression). The inferred set is logged, recorded
in ``TaskData.notes`` and visible as ``spec.label_names``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split
from nluforge.tasks.spec import TaskSpec
from nluforge.tasks.tables import (
    Table,
    column,
    file_format,
    label_encoder,
    normalize_label,
    read_table,
    to_split,
)

log = logging.getLogger("nluforge.tasks")

# Text columns tried, in order, when a custom task names none: pairs first ("question, sentence"
# must not be read as the single field "sentence").
DEFAULT_TEXT_FIELDS = [
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("text_a", "text_b"),
    ("text",),
    ("sentence",),
]
_GENERIC_STEMS = {"train", "dev", "valid", "val", "validation", "test", "data", "eval"}


def task_name_for(path: Path) -> str:
    """A registry-style name from a file: ``reviews.train.csv`` → ``reviews``; a generic stem
    (``train.csv``) takes its folder's name; fallback ``custom``."""
    stem = path.name.split(".")[0]
    if stem.lower() in _GENERIC_STEMS:
        stem = path.resolve().parent.name
    name = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    return name if name and name[0].isalpha() else "custom"


def _read(path: Path, spec: TaskSpec | None, names: list[str]) -> Table:
    """Read with a header; a header-less GLUE TSV (CoLA) is recognised when no wanted name is in
    the first line and the spec knows the columns by index."""
    table = read_table(path)
    by_index = spec is not None and not spec.source.glue_header
    if by_index and file_format(path) == "tsv" and not set(names) & set(table.header or []):
        table = read_table(path, header=False)
    return table


def _candidates(spec: TaskSpec | None, text_fields: list[str] | None, label_field: str | None):
    """Per canonical field, the columns to look for: the user's names, else canonical then GLUE names."""
    if spec is None:
        return {}
    if text_fields and len(text_fields) != len(spec.text_fields):
        raise UserError(
            f"{spec.name} takes {len(spec.text_fields)} text field(s) "
            f"({', '.join(spec.text_fields)}), got text_fields={list(text_fields)}"
        )
    glue = spec.source.glue_columns
    out: dict[str, list[str | int]] = {}
    for i, field in enumerate([*spec.text_fields, "label"]):
        user = label_field if field == "label" else (text_fields[i] if text_fields else None)
        out[field] = [user] if user else [c for c in (field, glue.get(field)) if c is not None]
    return out


def _detect_text_fields(table: Table) -> list[str]:
    header = table.header or []
    for fields in DEFAULT_TEXT_FIELDS:
        if all(f in header for f in fields):
            return list(fields)
    raise UserError(
        f"cannot tell the text column(s) of {table.path}: pass text_fields (--text-fields), "
        f"e.g. one or two of: {', '.join(header)}"
    )


def infer_labels(table: Table, col: int) -> tuple[str, ...] | None:
    """Label names (sorted) from column ``col`` of ``table``, or None for regression (numbers that
    are not all integers)."""
    keys = []
    for number, row in table.rows():
        key = normalize_label(row[col]) if col < len(row) and row[col] is not None else ""
        if not key:
            raise UserError(f"{table.path} line {number} has an empty label; fill it in or drop the row")
        keys.append(key)
    if not keys:
        raise UserError(f"{table.path} has no data rows; point at a file with examples")
    try:
        numbers = [float(k) for k in keys]
    except ValueError:
        numbers = None
    if numbers is not None and not all(x.is_integer() for x in numbers):
        return None
    names = [str(v) for v in sorted({int(x) for x in numbers})] if numbers is not None else sorted(set(keys))
    if len(names) < 2:
        raise UserError(f"{table.path} has a single label '{names[0]}'; a classifier needs at least two")
    return tuple(names)


def _custom_spec(name: str, text_fields: list[str], labels: tuple[str, ...] | None, path: Path) -> TaskSpec:
    regression = labels is None
    return TaskSpec(
        name=name,
        text_fields=tuple(text_fields),
        label_names=labels,
        metrics=("pearson", "spearman") if regression else ("accuracy", "macro_f1"),
        primary_metric="pearson" if regression else "accuracy",
        summary=f"custom task from {path.name}",
        description=f"Custom task read from {path}; label set inferred from that file.",
    )


def _infer_spec(table: Table, text_fields: list[str] | None, label_field: str | None) -> TaskSpec:
    """A custom task's spec from its (train) file: text columns, label set, metrics."""
    fields = list(text_fields) if text_fields else _detect_text_fields(table)
    if not 1 <= len(fields) <= 2:
        raise UserError(f"text_fields must name 1 or 2 columns, got {fields}")
    labels = infer_labels(table, column(table, [label_field or "label"], "the label"))
    return _custom_spec(task_name_for(table.path), fields, labels, table.path)


def load_files(
    spec: TaskSpec | None,
    files: dict[str, Path],
    *,
    text_fields: list[str] | None = None,
    label_field: str | None = None,
) -> tuple[TaskSpec, dict[str, Split], list[str]]:
    """Read ``files`` (split name → path). ``spec=None`` makes a custom task from them."""
    cand = _candidates(spec, text_fields, label_field)
    wanted = [c for cs in cand.values() for c in cs if isinstance(c, str)]
    tables = {split: _read(Path(p), spec, wanted) for split, p in files.items()}
    notes: list[str] = []
    if spec is None:
        first = tables.get("train") or next(iter(tables.values()))
        spec = _infer_spec(first, text_fields, label_field)
        cand = {f: [f] for f in spec.text_fields} | {"label": [label_field or "label"]}
        kind = "regression (float labels)" if spec.is_regression else f"labels {list(spec.label_names)}"
        notes.append(f"{spec.name}: inferred {kind} from {first.path}")
        log.info(notes[-1])
    encode = label_encoder(spec.label_names, spec.name)
    splits = {}
    for split, table in tables.items():
        text_cols = [column(table, cand[f], f"text field '{f}'") for f in spec.text_fields]
        label_col = column(table, cand["label"], "the label")
        splits[split] = to_split(table, split, text_cols, label_col, encode)
    return spec, splits, notes
