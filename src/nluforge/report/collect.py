"""Read a results directory into flat run records, one per ``result.json``.

The report is built from these files alone (DESIGN: "the report is built from those files alone"):
``result.json``, and beside it ``predictions.jsonl`` (per-example predictions, for baselines, intervals
and paired tests) and ``evals/*.json`` (later evaluations). A corrupt result among good ones is skipped
with a warning; a directory that is missing, empty, or holds nothing readable is a one-line
:class:`UserError`. An unreadable predictions or evals file only costs that run its intervals or that
evaluation, with a warning.

The additive fields of the shared contracts (``run_info.parent``/``step``, ``cost.delta_size_mb``/
``standalone_size_mb``) are read from the raw JSON, so results written before and after the schema
gained them both read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nluforge.core.errors import UserError
from nluforge.report.metrics import BASELINES_STAGE, dev_metrics, dev_splits, robust_metrics
from nluforge.report.stats import Eval
from nluforge.report.variants import variant_key
from nluforge.results.schema import Cost, RunInfo, RunResult
from nluforge.results.store import RESULT_FILE

PREDICTIONS_FILE = "predictions.jsonl"
EVALS_DIR = "evals"

Warn = Callable[[str], None]


@dataclass(frozen=True)
class RunRecord:
    """One run, reduced to what the report compares. Metric values are fractions in [0, 1]."""

    path: Path  # the result.json
    run_id: str
    task: str
    key: str  # the variant (see variants.variant_key)
    config: dict[str, Any]
    seed: int | None
    status: str  # "completed" | "failed"
    error: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # clean dev metrics by name
    robust: dict[str, float] = field(default_factory=dict)  # "AdvGLUE acc", "robust acc"
    cost: Cost = field(default_factory=Cost)
    costs: dict[str, float] = field(default_factory=dict)  # every numeric cost field, contract ones too
    parent: str | None = None  # the parent run's directory name (a derived run)
    step: str | None = None  # "compress:int8_dynamic"
    predictions: dict[str, Eval] = field(default_factory=dict)  # dev-metric suffix ("" first) -> preds
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # split -> name -> m
    baselines_fit: int | None = None  # training examples the baselines were fitted on, when fewer than the run's
    evals: list[dict[str, Any]] = field(default_factory=list)  # RUN/evals/*.json records

    @property
    def dir_name(self) -> str:
        return self.path.parent.name


def _numeric_costs(raw: dict[str, Any]) -> dict[str, float]:
    """Numeric cost fields; ``standalone_size_mb`` falls back to ``model_size_mb`` (older results)."""
    out = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if "standalone_size_mb" not in out and "model_size_mb" in out:
        out["standalone_size_mb"] = out["model_size_mb"]
    return out


def to_record(path: Path, result: RunResult, raw: dict[str, Any] | None = None) -> RunRecord:
    """Flatten a :class:`RunResult`; raises ValueError/TypeError/AttributeError on a malformed one.

    ``raw`` is the JSON it was read from, for the fields the schema may not know yet.
    """
    raw = raw or result.to_dict()
    info, config = raw.get("run_info") or {}, dict(result.config)
    task = str(config.get("task") or "unknown")
    seed = config.get("seed")
    baselines = result.metrics.get(BASELINES_STAGE) or {}
    fit = (result.meta or {}).get(BASELINES_STAGE) or {}
    capped = isinstance(fit.get("train_examples"), int) and fit["train_examples"] < (fit.get("train_total") or 0)
    return RunRecord(
        path=path,
        run_id=result.run_info.id,
        task=task,
        key=variant_key(config),
        config=config,
        seed=int(seed) if seed is not None else None,
        status=result.run_info.status,
        error=result.run_info.error,
        metrics=dev_metrics(result.metrics),
        robust=robust_metrics(result.metrics, task),
        cost=result.cost,
        costs=_numeric_costs(raw.get("cost") or {}),
        parent=str(info["parent"]) if info.get("parent") else None,
        step=str(info["step"]) if info.get("step") else None,
        baselines=baselines if isinstance(baselines, dict) else {},
        baselines_fit=fit["train_examples"] if capped else None,
    )


def _parse(path: Path) -> tuple[RunResult, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        known = {k: v for k, v in (raw.get("run_info") or {}).items() if k in RunInfo.__dataclass_fields__}
        return RunResult.from_dict({**raw, "run_info": known}), raw
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path} is not a valid nluforge result ({err})") from None


def _read(path: Path) -> RunRecord:
    """Read one result file; every way it can be malformed becomes a UserError naming the file."""
    result, raw = _parse(path)
    try:
        return to_record(path, result, raw)
    except (AttributeError, TypeError, ValueError) as err:
        raise UserError(f"{path} is not a valid nluforge result ({err})") from None


def read_predictions(path: Path) -> dict[str, Eval]:
    """``predictions.jsonl`` -> dev split suffix -> labels and predictions, in ``idx`` order."""
    lines = [
        (n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
    ]
    try:  # one parse of the whole file: much faster than a json.loads per line
        parsed = json.loads("[" + ",".join(line for _, line in lines) + "]")
    except json.JSONDecodeError:
        parsed = None
    rows: dict[str, list[tuple[int, Any, Any]]] = {}
    for i, (number, line) in enumerate(lines):
        try:
            row = parsed[i] if parsed is not None else json.loads(line)
            rows.setdefault(str(row["split"]), []).append((int(row["idx"]), row["label"], row["prediction"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"line {number}: {err}") from None
    out = {}
    for split, suffix in dev_splits(rows):
        ordered = sorted(rows[split], key=lambda r: r[0])
        labels, preds = np.array([r[1] for r in ordered]), np.array([r[2] for r in ordered])
        if labels.dtype.kind not in "iufb" or preds.dtype.kind not in "iufb":
            raise ValueError(f"split {split}: labels and predictions must be numbers")
        out[suffix] = Eval(labels, preds)
    return out


def read_evals(run_dir: Path) -> list[dict[str, Any]]:
    """The later evaluations of a run (``evals/*.json``), by name; each must have name, n and metrics."""
    out = []
    for path in sorted((run_dir / EVALS_DIR).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict) or "n" not in record:
            raise ValueError(f"{path.name} lacks n or metrics")
        record.setdefault("name", path.stem)
        out.append(record)
    return out


def _attach(record: RunRecord, on_warning: Warn) -> RunRecord:
    """Read the run's predictions and later evaluations; a bad file is a warning, not a lost run."""
    run_dir = record.path.parent
    if (run_dir / PREDICTIONS_FILE).is_file():
        try:
            record.predictions.update(read_predictions(run_dir / PREDICTIONS_FILE))
        except (OSError, ValueError) as err:
            on_warning(f"ignored {run_dir / PREDICTIONS_FILE}: {err} (no intervals from it)")
    if (run_dir / EVALS_DIR).is_dir():
        try:
            record.evals.extend(read_evals(run_dir))
        except (OSError, ValueError) as err:
            on_warning(f"ignored the evaluations in {run_dir / EVALS_DIR}: {err}")
    return record


SHADOWS_DIR = "shadows"  # LiRA shadow runs live under RUN/shadows/: not variants of their own


def is_shadow(path: Path, root: Path) -> bool:
    """A result.json of a LiRA shadow run (under ``RUN/shadows/`` of an audited run)."""
    parts = path.relative_to(root).parts
    return any(p == SHADOWS_DIR and (root.joinpath(*parts[:i]) / "audit_split.json").is_file()
               for i, p in enumerate(parts))


def collect_runs(results_dir: str | Path, on_warning: Warn) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """Every readable run under ``results_dir`` (recursively), and the ``(path, reason)`` of skipped files."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    paths = [p for p in sorted(root.rglob(RESULT_FILE)) if not is_shadow(p, root)]  # LiRA shadows: not variants
    if not paths:
        raise UserError(
            f"no results in {root}: no {RESULT_FILE} found (run `nluforge bench` or `nluforge train` first)"
        )
    runs: list[RunRecord] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            runs.append(_attach(_read(path), on_warning))
        except UserError as err:
            skipped.append((path, str(err)))
            on_warning(f"skipped an unreadable result: {err}")
    if not runs:
        more = f" ({len(skipped)} files, none readable)" if len(skipped) > 1 else ""
        raise UserError(f"{skipped[0][1]}{more}")
    return runs, skipped
