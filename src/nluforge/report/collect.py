"""Read a results directory into flat run records, one per ``result.json``.

The report is built from these files alone (DESIGN: "the report is built from those files alone").
A corrupt file among good ones is skipped with a warning; a directory that is missing, empty, or holds
nothing readable is a one-line :class:`UserError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.report.metrics import dev_metrics, robust_metrics
from nluforge.report.variants import variant_key
from nluforge.results.schema import Cost, RunResult
from nluforge.results.store import RESULT_FILE, read_result

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


def to_record(path: Path, result: RunResult) -> RunRecord:
    """Flatten a :class:`RunResult`; raises ValueError/TypeError/AttributeError on a malformed one."""
    config = dict(result.config)
    task = str(config.get("task") or "unknown")
    seed = config.get("seed")
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
    )


def _read(path: Path) -> RunRecord:
    """Read one result file; every way it can be malformed becomes a UserError naming the file."""
    result = read_result(path)
    try:
        return to_record(path, result)
    except (AttributeError, TypeError, ValueError) as err:
        raise UserError(f"{path} is not a valid nluforge result ({err})") from None


def collect_runs(results_dir: str | Path, on_warning: Warn) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """Every readable run under ``results_dir`` (recursively), and the ``(path, reason)`` of skipped files."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    paths = sorted(root.rglob(RESULT_FILE))
    if not paths:
        raise UserError(
            f"no results in {root}: no {RESULT_FILE} found (run `nluforge bench` or `nluforge train` first)"
        )
    runs: list[RunRecord] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            runs.append(_read(path))
        except UserError as err:
            skipped.append((path, str(err)))
            on_warning(f"skipped an unreadable result: {err}")
    if not runs:
        more = f" ({len(skipped)} files, none readable)" if len(skipped) > 1 else ""
        raise UserError(f"{skipped[0][1]}{more}")
    return runs, skipped
