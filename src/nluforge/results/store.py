"""The results store: a directory of run directories, each with ``result.json`` written last.

A run directory without ``result.json`` is unfinished; runners redo it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_json
from nluforge.results.schema import RunResult

RESULT_FILE = "result.json"


def write_result(run_dir: str | Path, result: RunResult) -> Path:
    """Write ``result.json`` atomically; call this last, after everything else in the run dir."""
    return atomic_write_json(Path(run_dir) / RESULT_FILE, result.to_dict())


def read_result(path: str | Path) -> RunResult:
    """Read a ``result.json`` (or the run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    if not path.is_file():
        raise UserError(f"no result found at {path}; is this a finished run directory?")
    try:
        return RunResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path} is not a valid nluforge result ({err})") from None


def iter_results(results_dir: str | Path, *, include_failed: bool = True) -> Iterator[tuple[Path, RunResult]]:
    """Yield ``(run_dir, result)`` for every finished run under ``results_dir`` (recursively)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    for path in sorted(root.rglob(RESULT_FILE)):
        result = read_result(path)
        if include_failed or result.run_info.status == "completed":
            yield path.parent, result
