"""``nluforge bench`` without the shell: pick the grid, expand it, check data, plan and estimate.

The command line (``nluforge.cli.bench``) adds the progress display and the report; everything that
decides *what* runs lives here, so it can be tested and reused without a terminal.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nluforge.core.config import merge, overrides_to_dict
from nluforge.core.errors import UserError
from nluforge.experiments.cells import State, cell_state
from nluforge.experiments.grid import Cell, Grid, load_grid

DATA_DIR_ENV = "NLUFORGE_DATA_DIR"


def default_grid_path() -> Path:
    """The built-in default grid, shipped in the package (``configs/default.yaml`` links to it)."""
    return Path(str(resources.files("nluforge") / "configs" / "default.yaml"))


def bench_cells(grid_path: str | Path | None, *, sets: list[str] | None = None,
                data_dir: str | None = None) -> tuple[Grid, list[Cell]]:
    """Load the grid (default: the built-in one) and expand it with ``--data-dir`` and ``--set``.

    ``data_dir`` is made absolute: it is part of each cell's config (and so of its run id), and the
    same folder given from another working directory must find the same finished cells.
    """
    grid = load_grid(grid_path or default_grid_path())
    data = {"data": {"data_dir": str(Path(data_dir).expanduser().resolve())}} if data_dir else {}
    layer = merge(data, overrides_to_dict(sets or []))
    return grid, grid.cells(layer)


# ---- data --------------------------------------------------------------------------------------


def check_data(cells: list[Cell]) -> None:
    """Load each distinct task source once, before any training, so missing data fails fast.

    With no ``data_dir``, no ``$NLUFORGE_DATA_DIR`` and no files, the tasks layer tries the Hub and
    fails at once when it is unreachable; we add how to point the bench at a local GLUE folder.
    """
    from nluforge.tasks import load_task

    seen: set[tuple[Any, ...]] = set()
    for cell in cells:
        cfg, d = cell.config, cell.config.data
        key = (cfg.task, d.data_dir, d.train_file, d.validation_file, d.test_file)
        if key in seen:
            continue
        seen.add(key)
        try:
            load_task(cfg.task, data_dir=d.data_dir, train_file=d.train_file, validation_file=d.validation_file,
                      test_file=d.test_file, text_fields=d.text_fields, label_field=d.label_field,
                      max_train_samples=1, max_eval_samples=1, seed=cfg.seed)
        except UserError as err:
            hint = ("" if d.data_dir or os.environ.get(DATA_DIR_ENV) or d.train_file else
                    "; point the bench at a local GLUE folder: nluforge bench --data-dir DIR "
                    f"(or {DATA_DIR_ENV}=DIR), DIR holding SST-2/, RTE/, MRPC/ ... with train.tsv and dev.tsv")
            raise UserError(f"no data for task '{cfg.task}': {err}{hint}") from None


# ---- plan and time estimate -----------------------------------------------------------------------


@dataclass
class PlanRow:
    cell: Cell
    state: State
    estimate_s: float  # rough seconds this cell takes (0 for cells that will not run)


@dataclass
class Plan:
    rows: list[PlanRow]
    source: str  # how the estimate was made, in words

    @property
    def todo(self) -> list[PlanRow]:
        return [r for r in self.rows if r.estimate_s > 0]

    @property
    def total_s(self) -> float:
        return sum(r.estimate_s for r in self.rows)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for row in self.rows:
            out[row.state] += 1
        return dict(out)


def make_plan(cells: list[Cell], results_dir: str | Path, *, retry_failed: bool = False,
              force: bool = False) -> Plan:
    """Each cell's state in ``results_dir`` and a rough time estimate for the ones that will run."""
    states = [cell_state(results_dir, c.config) for c in cells]
    runs = [force or s == "pending" or (retry_failed and s == "failed") for s in states]
    observed = _observed(results_dir)
    scale = _calibration(observed)
    rows, from_results = [], 0
    for cell, state, run in zip(cells, states, runs, strict=True):
        seen = observed.get(_group(cell.config.to_dict()))
        if cell.config.step() is not None:  # a derived run: no training, its parent's model re-evaluated
            estimate = derived_seconds(cell.config) * scale
        elif seen:
            from_results += run
            estimate = seen[0] / seen[1] * train_examples(cell.config)
        else:
            estimate = guess_seconds(cell.config) * scale
        rows.append(PlanRow(cell, state, estimate if run else 0.0))
    return Plan(rows, _source(sum(runs), from_results, scale, observed))


def _source(n_run: int, from_results: int, scale: float, observed: dict) -> str:
    guessed = n_run - from_results
    parts = []
    if from_results:
        parts.append(f"{from_results} from finished results of the same task/model/method")
    if guessed:
        calibrated = f", scaled x{scale:.2f} to match finished results" if observed else ""
        parts.append(f"{guessed} from a built-in guess (train examples x epochs at a per-method "
                     f"examples/s for this kind of CPU{calibrated})")
    return "; ".join(parts) or "nothing to run"


# Rough facts for the guess: GLUE train sizes, mean tokens per training example, dev + AdvGLUE sizes.
_TRAIN_SIZE = {"sst2": 67349, "cola": 8551, "mrpc": 3668, "stsb": 5749, "qnli": 104743, "rte": 2490,
               "wnli": 635, "qqp": 363846, "mnli": 392702}
_TOKENS = {"sst2": 14, "cola": 11, "mrpc": 53, "stsb": 31, "qnli": 50, "rte": 70, "wnli": 38,
           "qqp": 30, "mnli": 40}
_EVAL_SIZE = {"sst2": 872 + 148, "cola": 1043, "mrpc": 408, "stsb": 1500, "qnli": 5463 + 148,
              "rte": 277 + 81, "wnli": 71, "qqp": 40430 + 78, "mnli": 19647 + 283}
_FIXED_S = 10.0  # loading, saving, latency measurement


def train_examples(cfg: Any) -> float:
    """Training examples the cell will see (examples x epochs, or steps x batch)."""
    d, t = cfg.data, cfg.train
    n = d.k_shot * 3 if d.k_shot else min(d.max_train_samples or 10**9, _TRAIN_SIZE.get(cfg.task, 10000))
    if t.max_steps:
        return float(t.max_steps * t.batch_size * t.grad_accum)
    return n * t.epochs


def guess_seconds(cfg: Any) -> float:
    """Full fine-tuning of the default model on one 2-core CPU: ~(10 + 0.7·tokens) ms per example."""
    per_example = _per_example(cfg)
    evals = min(_EVAL_SIZE.get(cfg.task, 1000), (cfg.data.max_eval_samples or 10**9) + 300)
    return train_examples(cfg) * per_example + evals * per_example / 3 + _FIXED_S


def _relative_speed(method: str) -> float:
    """The method's training speed relative to full fine-tuning, from its registry entry (1.0 if unknown)."""
    from nluforge.methods import METHODS

    try:
        return METHODS.entry(method).meta.get("relative_speed", 1.0)
    except UserError:
        return 1.0


def derived_seconds(cfg: Any) -> float:
    """A derived (compressed) run: load, compress, evaluate and measure; no training."""
    return guess_seconds(cfg) - train_examples(cfg) * _per_example(cfg)


def _per_example(cfg: Any) -> float:
    tokens = min(_TOKENS.get(cfg.task, 40), cfg.data.max_length)
    return (0.010 + 0.0007 * tokens) / _relative_speed(cfg.method)


def _group(config: dict[str, Any]) -> tuple[str, str, str]:
    return config.get("task", ""), config.get("model", ""), config.get("method", "")


def _observed(results_dir: str | Path) -> dict[tuple[str, str, str], tuple[float, float, float]]:
    """Per (task, model, method): (sum of wall seconds, sum of train examples, sum of guesses)."""
    from nluforge.experiments.config import resolve
    from nluforge.results import iter_results

    if not Path(results_dir).is_dir():
        return {}
    out: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for _, result in iter_results(results_dir, include_failed=False):
        info, cost = result.run_info, result.cost
        if info.parent or not (info.wall_time_s and cost.train_examples):  # derived runs do not train
            continue
        try:
            guess = guess_seconds(resolve(result.config))
        except UserError:  # a result from an older config version
            continue
        acc = out[_group(result.config)]
        acc[0] += info.wall_time_s
        acc[1] += cost.train_examples
        acc[2] += guess
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def _calibration(observed: dict[tuple[str, str, str], tuple[float, float, float]]) -> float:
    """Observed / guessed time over all finished results: how fast this machine really is."""
    wall = sum(v[0] for v in observed.values())
    guess = sum(v[2] for v in observed.values())
    return wall / guess if guess else 1.0


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
