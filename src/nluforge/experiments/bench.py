"""``nluforge bench`` without the shell: pick the grid, expand it, check data, plan and estimate.

The command line (``nluforge.cli.bench``) adds the progress display and the report; everything that
decides *what* runs lives here, so it can be tested and reused without a terminal.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nluforge.core.config import merge, overrides_to_dict
from nluforge.core.errors import UserError
from nluforge.experiments.calibrate import Calibration, calibrate
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
#
# Every figure comes from the calibration (nluforge.experiments.calibrate): throughput measured on this
# machine for each trained cell of the grid. What a cell does, and what each part costs:
#   trained:  setup + train examples / train_eps + model selection evals + evaluation splits / eval_eps
#             + latency + save [+ the task's frozen-embedding baselines, once per task and training subset]
#   derived:  setup (loading the parent) + compress + evaluation splits / the child's eval_eps + latency + save
#   both:     + each attack step: examples x temperatures x queries per example x seconds per query (a child's
#             queries at its own measured speed: the parent's seconds per query x parent eval_eps / child eval_eps)


@dataclass
class PlanRow:
    cell: Cell
    state: State
    estimate_s: float  # seconds this cell should take (0 for cells that will not run)
    parts: dict[str, float]  # the estimate's parts (seconds), whether or not the cell runs


@dataclass
class Plan:
    rows: list[PlanRow]
    source: str  # how the estimate was made, in words
    workers: int = 1

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


def make_plan(cells: list[Cell], results_dir: str | Path, calibrations: dict[str, Calibration], *,
              retry_failed: bool = False, force: bool = False) -> Plan:
    """Each cell's state in ``results_dir`` and its estimate from ``calibrations`` (see :func:`calibrate`)."""
    states = [cell_state(results_dir, c.config) for c in cells]
    runs = [force or s == "pending" or (retry_failed and s == "failed") for s in states]
    estimates = estimate_cells([c.config for c in cells], calibrations, runs)
    rows = [PlanRow(cell, state, sum(parts.values()) if run else 0.0, parts)
            for cell, state, run, parts in zip(cells, states, runs, estimates, strict=True)]
    measured = sum(not c.cached and c.error is None for c in calibrations.values())
    took = sum(c.seconds for c in calibrations.values() if not c.cached)
    source = (f"measured: calibration of {len(calibrations)} trained cell(s) on this machine "
              f"({measured} measured now in {format_seconds(took)}, {len(calibrations) - measured} from the cache)")
    return Plan(rows, source)


def estimate_cells(configs: list[Any], calibrations: dict[str, Calibration],
                   runs: list[bool] | None = None) -> list[dict[str, float]]:
    """The estimate's parts for each config; the baselines go to the first running cell of each regime."""
    runs = runs if runs is not None else [True] * len(configs)
    regimes_done = {_regime(c) for c, run in zip(configs, runs, strict=True) if not run}
    out = []
    for cfg, run in zip(configs, runs, strict=True):
        parts = cell_parts(cfg, calibrations[cfg.parent().run_id()])
        regime = _regime(cfg)
        if cfg.step() is None and cfg.eval.baselines and run and regime not in regimes_done:
            regimes_done.add(regime)
            parts["baselines"] = baseline_seconds(cfg, calibrations[cfg.parent().run_id()])
        out.append(parts)
    return out


def _regime(cfg: Any) -> tuple[Any, ...]:
    """What the frozen-embedding baselines' cache is keyed by (experiments/baselines.py), roughly."""
    d = cfg.data
    return cfg.task, cfg.model, cfg.pooling, d.max_length, d.max_train_samples, d.k_shot, d.data_dir, cfg.seed


def train_examples(cfg: Any, cal: Calibration) -> float:
    """Training examples the cell will see (examples x epochs, or steps x batch)."""
    t = cfg.train
    if t.max_steps:
        return float(t.max_steps * t.batch_size * t.grad_accum)
    return train_size(cfg, cal) * t.epochs


def train_size(cfg: Any, cal: Calibration) -> int:
    d = cfg.data
    if d.k_shot:
        return min(d.k_shot * cal.num_labels, cal.train_size)
    return min(d.max_train_samples or cal.train_size, cal.train_size)


def cell_parts(cfg: Any, cal: Calibration) -> dict[str, float]:
    """Seconds per part of one cell (trained or derived) from its parent's calibration."""
    evals = sum(cal.eval_sizes.values())
    step = cfg.step()
    if step is not None:
        child = cal.children[f"compress:{step.get('method')}"]
        return {"setup": cal.setup_s, "compress": child.compress_s, "eval": evals / child.eval_eps,
                "latency": child.latency_s, "save": child.save_s,
                **attack_parts(cfg, cal, speedup=child.eval_eps / cal.eval_eps)}
    t = cfg.train
    if t.eval_every:
        steps = math.ceil(train_examples(cfg, cal) / (t.batch_size * t.grad_accum))
        selections = math.ceil(steps / t.eval_every)
    else:
        selections = t.max_steps and 1 or t.epochs
    first = next(iter(cal.eval_sizes.values()), 0)
    return {"setup": cal.setup_s, "train": train_examples(cfg, cal) / cal.train_eps,
            "select": selections * first / cal.eval_eps, "eval": evals / cal.eval_eps,
            "latency": cal.latency_s, "save": cal.save_s, **attack_parts(cfg, cal)}


def attack_parts(cfg: Any, cal: Calibration, speedup: float = 1.0) -> dict[str, float]:
    """``{"attack": seconds}`` for the cell's attack steps (none, or a regression task: no part)."""
    found = [cal.attacks[key] for step in cfg.attack if (key := f"attack:{step.get('method')}") in cal.attacks]
    return {"attack": sum(a.seconds for a in found) / speedup} if found else {}


def baseline_seconds(cfg: Any, cal: Calibration) -> float:
    """Frozen-embedding baselines: encode the training subset (capped) and the evaluation splits with the
    base encoder, at this cell's measured evaluation speed (the same network's forward pass)."""
    from nluforge.experiments.baselines import MAX_TRAIN

    return (min(train_size(cfg, cal), MAX_TRAIN) + sum(cal.eval_sizes.values())) / cal.eval_eps


def run_calibration(cells: list[Cell], results_dir: str | Path, *, threads: int, recalibrate: bool = False,
                    measure=None, on_cell=None) -> dict[str, Calibration]:
    """:func:`nluforge.experiments.calibrate.calibrate` over a grid's cells."""
    return calibrate([c.config for c in cells], results_dir, threads=threads, recalibrate=recalibrate,
                     measure=measure, on_cell=on_cell)


# ---- --time-budget ----------------------------------------------------------------------------------
#
# The rules (README, "the main job"): the grid's per-task training cap (data.max_train_samples) says
# what each task needs relative to the others; the budget scales every task's cap by ONE factor, so a
# task keeps its share. Each task's size stays within [FLOOR_FRACTION x its cap, its full training set];
# a task that hits a bound is held there and the others share what is left (the factor is the largest
# that fits, found by bisection: the total is monotone in it). Sizes are rounded down to whole batches.
# The total is the sum of the cells' estimates divided by the workers that run them at once, i.e. the
# wall time of the cells. A budget below the floors' total is an error that names that minimum.

FLOOR_FRACTION = 0.5  # below half its cap, the default grid's tasks fall back towards chance (README)


@dataclass
class TaskSize:
    task: str
    n: int  # the chosen training subset
    cap: int  # the grid's cap (the task's weight)
    floor: int
    ceiling: int
    estimate_s: float  # the task's cells, wall time with the workers


@dataclass
class Budgeted:
    cells: list[Cell]
    sizes: list[TaskSize]
    budget_s: float
    total_s: float
    factor: float  # chosen size / the grid's cap

    def describe(self) -> list[str]:
        lines = [f"--time-budget {format_seconds(self.budget_s)}: each task's training subset is its grid cap "
                 f"x {self.factor:.2f} (one factor for all tasks, so each keeps its share), held within "
                 f"[{FLOOR_FRACTION:g} x cap, the full training set], in whole batches; "
                 f"estimated cells {format_seconds(self.total_s)}"]
        for s in self.sizes:
            bound = " (at its floor)" if s.n == s.floor else " (the whole training set)" if s.n == s.ceiling else ""
            lines.append(f"  {s.task}: n={s.n}{bound} (cap {s.cap}), ~{s.estimate_s / 60:.1f} min")
        return lines


def parse_duration(text: str) -> float:
    """``600``, ``600s``, ``10m``, ``1h``, ``1h30m`` -> seconds; a UserError naming the accepted forms."""
    import re

    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*",
                         text or "")
    if not text or not match or not any(match.groups()):
        raise UserError(f"--time-budget '{text}' is not a duration; write e.g. 600s, 10m, 1h or 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise UserError(f"--time-budget '{text}' must be more than 0; write e.g. 10m")
    return seconds


def size_to_budget(cells: list[Cell], calibrations: dict[str, Calibration], budget_s: float, *,
                   workers: int = 1) -> Budgeted:
    """Choose each task's ``data.max_train_samples`` so the cells' estimated wall time fits ``budget_s``."""
    workers = max(1, workers)
    tasks: dict[str, list[int]] = defaultdict(list)  # task -> indexes of its sized cells
    for i, cell in enumerate(cells):
        if not cell.config.data.k_shot and not cell.config.train.max_steps:
            tasks[cell.config.task].append(i)
    bounds = {}
    for task, idx in tasks.items():
        cals = [calibrations[cells[i].config.parent().run_id()] for i in idx]
        full = min(c.train_size for c in cals)
        cap = min(max(cells[i].config.data.max_train_samples or full for i in idx), full)
        batch = max(cells[i].config.train.batch_size for i in idx)
        floor = min(full, max(batch, _whole(FLOOR_FRACTION * cap, batch)))
        bounds[task] = (cap, floor, full, batch)

    def sized(factor: float) -> dict[str, int]:
        return {t: min(ceil, max(floor, _whole(factor * cap, batch))) for t, (cap, floor, ceil, batch) in bounds.items()}

    def apply(sizes: dict[str, int]) -> list[Cell]:
        return [Cell(_with_size(c.config, sizes[c.config.task]), dict(c.labels))
                if i in tasks.get(c.config.task, ()) else c for i, c in enumerate(cells)]

    def total(sizes: dict[str, int]) -> tuple[float, list[dict[str, float]], list[Cell]]:
        sized_cells = apply(sizes)
        parts = estimate_cells([c.config for c in sized_cells], _rekeyed(sized_cells, cells, calibrations))
        return sum(sum(p.values()) for p in parts) / workers, parts, sized_cells

    floors = {t: b[1] for t, b in bounds.items()}
    least, _, _ = total(floors)
    if least > budget_s:
        raise UserError(f"--time-budget {format_seconds(budget_s)} is too small for this grid: even the "
                        f"smallest training subsets ({', '.join(f'{t} n={n}' for t, n in floors.items())}) "
                        f"need ~{format_seconds(least)} of cells here; give at least --time-budget "
                        f"{math.ceil(least / 60)}m, or a grid with fewer cells")
    lo, hi = 0.0, 1.0
    while total(sized(hi))[0] <= budget_s and any(sized(hi)[t] < b[2] for t, b in bounds.items()):
        lo, hi = hi, hi * 2
    if total(sized(hi))[0] <= budget_s:
        lo = hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(sized(mid))[0] <= budget_s else (lo, mid)
    sizes = sized(lo)
    spent, parts, sized_cells = total(sizes)
    per_task = defaultdict(float)
    for cell, p in zip(sized_cells, parts, strict=True):
        per_task[cell.config.task] += sum(p.values()) / workers
    rows = [TaskSize(t, sizes[t], b[0], b[1], b[2], per_task[t]) for t, b in bounds.items()]
    return Budgeted(sized_cells, rows, budget_s, spent, lo)


def _whole(n: float, batch: int) -> int:
    return int(n // batch * batch)


def _with_size(cfg: Any, n: int) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_train_samples=n))


def _rekeyed(new: list[Cell], old: list[Cell], calibrations: dict[str, Calibration]) -> dict[str, Calibration]:
    """The calibrations under the resized cells' parent ids (the training size is not part of the key);
    only those, so the plan counts each calibrated cell once (and its seconds once)."""
    out: dict[str, Calibration] = {}
    for a, b in zip(new, old, strict=True):
        out[a.config.parent().run_id()] = calibrations[b.config.parent().run_id()]
    return out


def write_budget(results_dir: str | Path, grid: Grid, budgeted: Budgeted) -> tuple[Path, Path]:
    """The chosen sizes beside the results: ``bench-budget.json`` (sizes, estimates, rules) and
    ``grid.resolved.yaml`` (the grid with those sizes, to rerun as it is)."""
    import yaml

    from nluforge.core.io import atomic_write_json, atomic_write_text

    results_dir = Path(results_dir)
    data = yaml.safe_load(Path(grid.source).read_text()) if Path(grid.source).is_file() else {}
    sizes = {s.task: s.n for s in budgeted.sizes}
    _set_sizes(data, sizes)
    header = (f"# {grid.source} as `nluforge bench --time-budget {format_seconds(budgeted.budget_s)}` sized it "
              f"(bench-budget.json says how); rerun it with: nluforge bench {results_dir / 'grid.resolved.yaml'}\n")
    grid_path = atomic_write_text(results_dir / "grid.resolved.yaml", header + yaml.safe_dump(data, sort_keys=False))
    info = {"budget_s": budgeted.budget_s, "estimated_total_s": round(budgeted.total_s, 1),
            "factor": round(budgeted.factor, 4), "floor_fraction": FLOOR_FRACTION, "grid": grid.source,
            "rules": budgeted.describe()[0],
            "tasks": {s.task: {"max_train_samples": s.n, "grid_cap": s.cap, "floor": s.floor,
                               "ceiling": s.ceiling, "estimate_s": round(s.estimate_s, 1)} for s in budgeted.sizes}}
    return atomic_write_json(results_dir / "bench-budget.json", info), grid_path


def _set_sizes(data: dict[str, Any], sizes: dict[str, int]) -> None:
    """Put each task's size where the grid names the task: its task-axis entry, else the base."""
    base = data.setdefault("base", {}) or {}
    data["base"] = base
    axis = (data.get("grid") or {}).get("task")
    placed = set()
    if isinstance(axis, list):
        for i, entry in enumerate(axis):
            name = entry if isinstance(entry, str) else entry.get("name")
            if name in sizes:
                entry = {"name": entry} if isinstance(entry, str) else entry
                entry.setdefault("data", {})["max_train_samples"] = sizes[name]
                axis[i] = entry
                placed.add(name)
    for task, n in sizes.items():
        if task not in placed:
            base.setdefault("data", {})["max_train_samples"] = n


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
