"""Reading labelled example files (TSV, CSV, JSON lines; each optionally gzipped) into splits.

TSV is read with quoting OFF: each line is split on TAB, nothing else. GLUE's TSVs contain
unbalanced ``"`` characters (MRPC, QNLI, STS-B, RTE, QQP), and a quote-aware reader silently merges
rows or strips quotes (see shared/data/SOURCES.md). Lines are split on ``\\n`` only (``str.splitlines``
would also split on form feeds and U+2028 inside text); a UTF-8 BOM (MRPC's header) is dropped; a
missing final newline (CoLA dev) is fine. CSV follows RFC 4180 quoting, as spreadsheets write it.
Columns are picked by header name, so reduced and full GLUE layouts read alike.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split

FORMATS = {
    ".tsv": "tsv",
    ".txt": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


@dataclass
class Table:
    """One file, read lazily: :meth:`rows` streams it, so a 300 MB GLUE MNLI train file is never
    held whole in memory. ``header`` is None for a header-less TSV."""

    path: Path
    fmt: str
    header: list[str] | None

    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        """``(line, fields)`` per data row; ``line`` is 1-based, where the row starts."""
        records = _records(self.path, self.fmt)
        if self.header is not None and self.fmt != "jsonl":  # JSON lines: the keys are the header
            next(records, None)
        width = len(self.header) if self.header is not None else None
        for number, fields in records:
            if isinstance(fields, dict):
                yield number, [fields.get(k) for k in self.header or []]
                continue
            width = width or len(fields)  # header-less: the first row sets the width
            if len(fields) != width:
                sep = "TAB-separated fields" if self.fmt == "tsv" else "fields"
                raise UserError(
                    f"{self.path} line {number} has {len(fields)} {sep}, expected {width}; "
                    "fix that line (a separator or line break inside a text field?)"
                )
            yield number, fields


def file_format(path: Path) -> str:
    """``tsv``, ``csv`` or ``jsonl``, from the name (a ``.gz`` suffix is looked through)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise UserError(f"cannot tell the format of {path}: name it .tsv, .csv or .jsonl (optionally .gz)")
    return fmt


def _open(path: Path) -> IO[str]:
    """Text in UTF-8 (BOM dropped), gunzipped for ``.gz``; lines end at ``\\n`` only."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="\n")
    return open(path, encoding="utf-8-sig", newline="\n")


def _records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """Every non-empty record of the file as ``(line, fields or dict)``, read errors made one-line."""
    try:
        with _open(path) as f:
            yield from {"tsv": _tsv_records, "csv": _csv_records, "jsonl": _jsonl_records}[fmt](path, f)
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8") from None
    except (OSError, EOFError) as err:  # a corrupt or truncated .gz
        raise UserError(f"cannot read {path}: {err}") from None


def _tsv_records(path: Path, f: IO[str]) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(f, start=1):
        line = line.removesuffix("\n").removesuffix("\r")
        if line:
            yield number, line.split("\t")


def _csv_records(path: Path, f: IO[str]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(f)
    start = 1
    try:
        for fields in reader:
            if fields:
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as err:
        raise UserError(f"{path} line {reader.line_num} is not valid CSV: {err}") from None


def _jsonl_records(path: Path, f: IO[str]) -> Iterator[tuple[int, Any]]:
    lines = ((n, line) for n, line in enumerate(f, start=1) if line.strip())
    first = next(lines, None)
    if first is None:
        return
    if first[1].lstrip().startswith("["):  # a .json file holding one list of objects
        objects = [(first[0], obj) for obj in _json(path, first[1] + f.read(), first[0])]
    else:
        objects = ((n, _json(path, line, n)) for n, line in itertools.chain([first], lines))
    for number, obj in objects:
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def _json(path: Path, text: str, number: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} line {number + err.lineno - 1} is not valid JSON: {err.msg}") from None


def read_table(path: str | Path, *, header: bool = True) -> Table:
    """Open ``path`` by its format and read its header (``header=False``: a header-less TSV, as
    GLUE's CoLA). JSON lines take the first object's keys as the header."""
    path = Path(path)
    fmt = file_format(path)
    if fmt != "tsv":
        header = True
    first = next(_records(path, fmt), None) if header else None
    if isinstance(first, tuple) and isinstance(first[1], dict):
        names = list(first[1])
    else:
        names = [str(f).strip() for f in first[1]] if first else []
    return Table(path, fmt, names if header else None)


def read_text(path: Path) -> str:
    """The whole file's text (small files: AdvGLUE's dev.json)."""
    try:
        with _open(path) as f:
            return f.read()
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8") from None
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def column(table: Table, candidates: list[str | int], needed_for: str) -> int:
    """Index of the first candidate column present: a header name, or an index for a header-less
    file. Missing → UserError naming the column and the file."""
    for cand in candidates:
        if isinstance(cand, int) and table.header is None:
            return cand
        if isinstance(cand, str) and table.header is not None and cand in table.header:
            return table.header.index(cand)
    names = [c for c in candidates if isinstance(c, str)]
    want = f"column '{names[0]}'" if names else f"column {candidates[0]}"
    have = f"; its columns are: {', '.join(table.header)}" if table.header else ""
    raise UserError(f"{table.path} has no {want} (needed for {needed_for}){have}")


def to_split(
    table: Table, name: str, text_cols: list[int], label_col: int, encode: Callable[[Any], Any]
) -> Split:
    """Build a :class:`Split` from ``table``; ``encode(raw)`` maps a raw label to an id or a float
    and raises ``ValueError(reason)`` for a bad one (reported with the file and line)."""
    texts, labels = [], []
    width = max([*text_cols, label_col]) + 1
    for number, row in table.rows():
        if len(row) < width or any(row[i] is None for i in (*text_cols, label_col)):
            raise UserError(
                f"{table.path} line {number} lacks a text or label value; fill it in or drop the row"
            )
        try:
            labels.append(encode(row[label_col]))
        except ValueError as err:
            raise UserError(f"{err} at {table.path} line {number}") from None
        texts.append(tuple(str(row[i]) for i in text_cols))
    if not texts:
        raise UserError(
            f"split '{name}' is empty: {table.path} has no data rows; point at a file with examples"
        )
    return Split(name, texts, labels, str(table.path))


def normalize_label(raw: Any) -> str:
    """A label as a string key: integer-valued numbers as ``"1"`` (so ``1``, ``"1"``, ``1.0`` agree)."""
    text = str(raw).strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else text


def label_encoder(label_names: tuple[str, ...] | None, task: str) -> Callable[[Any], Any]:
    """Raw label → class id (by name, or by id as in GLUE's ``0``/``1`` columns) or float score."""
    if label_names is None:

        def encode_score(raw: Any) -> float:
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"label '{raw}' is not a number (task {task} is regression)") from None

        return encode_score
    ids = {normalize_label(name): i for i, name in enumerate(label_names)}
    if not any(key.lstrip("-").isdigit() for key in ids):  # names are words: also accept ids
        ids |= {str(i): i for i in range(len(label_names))}

    def encode_class(raw: Any) -> int:
        key = normalize_label(raw)
        if key not in ids:
            raise ValueError(f"label '{raw}' is not a label of {task} ({', '.join(label_names)})")
        return ids[key]

    return encode_class
