"""Tasks read from the user's own files (CSV, TSV, JSON lines), for custom tasks and for registered
tasks whose data the user supplies (``load_task("sst2", train_file=...)``).

A custom task's label set is inferred from its train file (from the given files if there is no
train file): integer-valued labels are classes sorted by value, other numbers make a regression
task, anything else is a class name, sorted. The spec is named after the file, with accuracy and
macro-F1 (classification) or Pearson and Spearman (regression). The inferred set is logged, recorded
in ``TaskData.notes`` and visible as ``spec.label_names``.

A trained run records the spec its model was trained for in ``model/task.json``
(:func:`write_task_record`), so a custom-task run can be evaluated later without its train file
(:func:`run_task_spec`). :func:`read_rows` reads the rows of a user's file for ``nluforge eval
--eval-file`` and ``nluforge predict``: text, and optionally label, id and group columns.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split
from nluforge.tasks.spec import TaskSpec, spec_from_mapping
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


# ---------------------------------------------------------------- the spec a run was trained for

TASK_RECORD = "task.json"
_RECORDED = ("name", "text_fields", "label_names", "metrics", "primary_metric", "version")


def write_task_record(folder: str | Path, spec: TaskSpec) -> Path:
    """Record in ``folder/task.json`` what the saved model predicts: its task's name, text fields,
    label names (in class-id order; ``null`` for regression) and metrics."""
    path = Path(folder) / TASK_RECORD
    record = {key: getattr(spec, key) for key in _RECORDED}
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def read_task_record(folder: str | Path) -> TaskSpec | None:
    """The spec recorded by :func:`write_task_record`, or None when the folder has none."""
    path = Path(folder) / TASK_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; retrain the run or restore the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object; retrain the run or restore the file")
    return spec_from_mapping(data, where=str(path))


def run_task_spec(
    model_dir: str | Path,
    *,
    train_file: str | Path | None,
    text_fields: list[str] | None,
    label_field: str | None,
) -> TaskSpec:
    """The spec of a custom-task run, from what the run recorded.

    First ``model/task.json``; for runs saved before it existed, a full model's ``config.json``
    (``id2label``) with the recorded text fields, else the label set inferred again from the
    recorded train file (the same sorted rule as at training time).
    """
    recorded = read_task_record(model_dir)
    if recorded is not None:
        return recorded
    path = Path(train_file) if train_file else None
    labels = _config_label_names(Path(model_dir))
    if labels is not None and text_fields:
        name = task_name_for(path) if path else "custom"
        return _custom_spec(name, list(text_fields), labels, path or Path(model_dir))
    if path is None or not path.is_file():
        raise UserError(
            f"{model_dir} does not record its labels ({TASK_RECORD}) and the run's train file "
            f"{train_file} is gone; restore that file or retrain the run"
        )
    log.info("%s: no %s; label set inferred again from %s", model_dir, TASK_RECORD, path)
    return _infer_spec(read_table(path), text_fields, label_field)


def _config_label_names(model_dir: Path) -> tuple[str, ...] | None:
    """Label names from a saved Hugging Face ``config.json``, unless they are the LABEL_i defaults."""
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label") or {}
    names = tuple(id2label[k] for k in sorted(id2label, key=int))
    if len(names) < 2 or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


# ---------------------------------------------------------------- rows of a user's file


@dataclass
class FileRows:
    """The rows of a user's file, in file order. ``labels`` are normalized label strings (see
    :func:`~nluforge.tasks.tables.normalize_label`); ``labels``/``ids``/``groups`` are None when
    that column was not asked for (``ids``: nor found)."""

    path: Path
    texts: list[tuple[str, ...]]
    labels: list[str] | None
    ids: list[str] | None
    groups: list[str] | None
    id_field: str | None = None

    def __len__(self) -> int:
        return len(self.texts)


ID_FIELDS = ("id", "idx", "index")  # an id column picked up when --id-field is not given
MISSING_GROUP = "(missing)"


def read_rows(
    path: str | Path,
    spec: TaskSpec,
    *,
    text_fields: list[str] | None = None,
    label_field: str | None = None,
    need_labels: bool = False,
    id_field: str | None = None,
    group_field: str | None = None,
) -> FileRows:
    """Read ``path`` (CSV, TSV or JSON lines, optionally gzipped) for a model trained on ``spec``.

    Text columns: ``text_fields``, else the spec's own field names (and their GLUE column names).
    With ``need_labels``, the label column (``label_field``, default ``label``) must exist and be
    filled on every row. Every problem is a one-line UserError naming the file, line or column.
    """
    path = Path(path)
    cand = _candidates(spec, text_fields, label_field)
    table = _read(path, spec, [c for cs in cand.values() for c in cs if isinstance(c, str)])
    if table.header is not None and not table.header:
        raise UserError(f"{path} is empty; point at a file with a header and data rows")
    hint = " (--text-field)"
    text_cols = [column(table, cand[f], f"text field '{f}'{hint}") for f in spec.text_fields]
    label_col = column(table, cand["label"], "the label (--label-field)") if need_labels else None
    group_col = column(table, [group_field], "--group-field") if group_field else None
    if id_field:
        id_col = column(table, [id_field], "--id-field")
    else:
        found = [f for f in ID_FIELDS if table.header and f in table.header]
        id_field = found[0] if found else None
        id_col = table.header.index(id_field) if id_field else None
    texts: list[tuple[str, ...]] = []
    labels: list[str] = []
    ids: list[str] = []
    groups: list[str] = []
    for number, row in table.rows():
        values = [row[i] if i < len(row) else None for i in text_cols]
        if any(v is None for v in values):
            raise UserError(f"{path} line {number} lacks a text value; fill it in or drop the row")
        texts.append(tuple(str(v) for v in values))
        if label_col is not None:
            raw = row[label_col] if label_col < len(row) else None
            key = normalize_label(raw) if raw is not None else ""
            if not key:
                raise UserError(f"{path} line {number} has an empty label; fill it in or drop the row")
            labels.append(key)
        if group_col is not None:
            value = row[group_col] if group_col < len(row) else None
            groups.append(MISSING_GROUP if value is None or str(value).strip() == "" else str(value).strip())
        if id_col is not None:
            ids.append("" if id_col >= len(row) or row[id_col] is None else str(row[id_col]))
    if not texts:
        raise UserError(f"{path} has no data rows; point at a file with examples")
    return FileRows(path, texts, labels if label_col is not None else None,
                    ids if id_col is not None else None, groups if group_col is not None else None, id_field)
