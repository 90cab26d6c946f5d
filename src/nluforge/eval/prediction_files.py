"""Writing ``nluforge predict``'s output: one row per input row, in input order.

Columns: ``index`` (the row's 0-based position among the input's data rows), the input's id column
under its own name when there is one, then ``label`` and one ``p_<label>`` probability per class
(classification) or ``score`` (regression). JSON lines nest the probabilities as
``"probs": {label: p}``. The format follows the output's extension: ``.csv``, ``.tsv`` or ``.jsonl``.

The file is written to a temporary name and renamed at the end, so a failure never leaves a
half-written output; an existing output is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write

OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
DIGITS = 6  # probabilities and scores are rounded to this many decimals


def check_output(output: str | Path, *, inputs: str | Path, overwrite: bool) -> str:
    """The output's format; a bad output path is a one-line error before any work is done."""
    output = Path(output)
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot tell the output format of {output}: name it .csv, .tsv or .jsonl")
    if output.resolve() == Path(inputs).resolve():
        raise UserError(f"--output {output} is the input file; write the predictions elsewhere")
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name ending in .csv, .tsv or .jsonl")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it, or choose another --output")
    if not output.parent.is_dir():
        raise UserError(f"folder {output.parent} does not exist; create it first")
    return fmt


def prediction_rows(logits: np.ndarray, label_names: tuple[str, ...] | None, ids: list[str] | None,
                    id_field: str | None) -> list[dict]:
    """One dict per row: index, [id], label and probabilities (or score), in input order."""
    rows = []
    if label_names is None:  # regression: logits is (N,)
        for i, value in enumerate(np.asarray(logits, dtype=np.float64)):
            rows.append({"index": i, **_id(ids, id_field, i), "score": round(float(value), DIGITS)})
        return rows
    from nluforge.eval.scoring import softmax

    probs = softmax(logits)  # (N, C)
    best = probs.argmax(axis=1)
    for i, (row, k) in enumerate(zip(probs, best, strict=True)):
        rows.append({"index": i, **_id(ids, id_field, i), "label": label_names[k],
                     "probs": {name: round(float(p), DIGITS) for name, p in zip(label_names, row, strict=True)}})
    return rows


def _id(ids: list[str] | None, id_field: str | None, i: int) -> dict:
    if ids is None or not id_field or id_field == "index":
        return {}
    return {id_field: ids[i]}


def write_predictions(output: str | Path, rows: list[dict], fmt: str) -> Path:
    """Write ``rows`` (from :func:`prediction_rows`) atomically as CSV, TSV or JSON lines."""
    if fmt == "jsonl":
        return atomic_write(output, lambda p: _write_jsonl(p, rows))
    return atomic_write(output, lambda p: _write_table(p, rows, "\t" if fmt == "tsv" else ","))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_table(path: Path, rows: list[dict], delimiter: str) -> None:
    flat = [{k: v for k, v in r.items() if k != "probs"}
            | {f"p_{name}": p for name, p in r.get("probs", {}).items()} for r in rows]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]), delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
