"""What every runner backend shares: options, events, a cell's state on disk, and running one cell.

Split from :mod:`nluforge.experiments.runners` so the backends (``processes``, ``ray_runner``) and the
runner import this module instead of each other.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from nluforge.core.errors import UserError
from nluforge.experiments.config import RunConfig
from nluforge.results import RunInfo, RunResult, read_result, write_result
from nluforge.results.store import RESULT_FILE

Backend = Literal["local", "process", "ray"]
State = Literal["completed", "failed", "pending"]
CellFn = Callable[..., Any]  # (cfg, results_dir, *, progress) -> RunResult


# Imported once by the forkserver, so each fresh cell process starts with them loaded (~0.01 s instead
# of ~8 s of imports per cell on a 2-core CPU). The cell function's own module is added to these.
PRELOAD = ("nluforge", "torch", "transformers", "peft", "accelerate")  # nluforge first: it quiets import-time warnings


def default_start_method() -> Literal["forkserver", "spawn"]:
    """forkserver on Linux without CUDA; spawn elsewhere. With CUDA, importing the preloaded libraries
    can initialize it in the server (peft pulls in bitsandbytes, which queries the device), and a
    process forked from a CUDA-initialized one cannot use CUDA ("Cannot re-initialize CUDA in forked
    subprocess"): every cell would fail."""
    import torch

    return "forkserver" if sys.platform.startswith("linux") and not torch.cuda.is_available() else "spawn"


@dataclass
class RunnerOptions:
    """How to run the cells: backend, parallelism and what each cell declares it needs."""

    backend: Backend = "local"
    workers: int = 1  # cells at once (process pool size; CPUs of a local Ray instance / num_cpus)
    num_cpus: float = 1.0  # per cell: Ray resource and torch threads (process/ray backends)
    num_gpus: float = 0.0  # per cell (Ray)
    address: str | None = None  # Ray cluster address ("auto" or host:port); None starts a local one
    start_method: Literal["forkserver", "spawn"] | None = None  # process backend; None: default_start_method()
    preload: tuple[str, ...] = PRELOAD  # forkserver: modules imported once, before any cell

    def __post_init__(self):
        if self.backend not in ("local", "process", "ray"):
            raise UserError(f"unknown backend '{self.backend}'; choose local, process or ray")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.start_method is None:
            self.start_method = default_start_method()


@dataclass
class CellEvent:
    """What the runner reports to its caller (a progress display, a tracker)."""

    kind: Literal["start", "stage", "finish"]
    run_id: str
    stage: str | None = None  # kind == "stage": the pipeline stage that is starting
    result: RunResult | None = None  # kind == "finish"


OnEvent = Callable[[CellEvent], None]


def cell_state(results_dir: str | Path, cfg: RunConfig) -> State:
    """``completed`` / ``failed`` from the cell's ``result.json``; ``pending`` when there is none."""
    path = Path(results_dir) / cfg.run_id() / RESULT_FILE
    if not path.is_file():
        return "pending"
    try:
        return read_result(path).run_info.status
    except UserError:
        return "pending"  # unreadable: redo it rather than trust it


def select(cells: Sequence[RunConfig], results_dir: str | Path, *, retry_failed: bool = False,
           force: bool = False) -> list[RunConfig]:
    """The cells to run now: pending ones, plus failed ones with ``retry_failed``, or all with ``force``."""
    rerun = {"pending", "failed"} if retry_failed else {"pending"}
    return [c for c in cells if force or cell_state(results_dir, c) in rerun]


def clear_run_dir(results_dir: Path, cfg: RunConfig) -> None:
    """Remove the cell's run directory so that it starts clean (an interrupted or forced rerun)."""
    run_dir = results_dir / cfg.run_id()
    if run_dir.exists():
        shutil.rmtree(run_dir)


def stage_reporter(run_id: str, emit: OnEvent) -> Callable[[str], None]:
    return lambda stage: emit(CellEvent("stage", run_id, stage))


def run_in_process(cell_fn: CellFn, cfg: RunConfig, results_dir: Path, progress: Callable[[str], None]) -> None:
    """Clear the cell's run dir and call ``cell_fn``; if it raises, write the failed result for it.

    Runs where the cell runs (this process, a worker process, a Ray worker), right before the cell, so
    a forced rerun keeps each old result until its own cell starts.
    """
    clear_run_dir(results_dir, cfg)
    started = now()
    try:
        cell_fn(cfg, results_dir, progress=progress)
    except Exception as err:  # a bug below run_cell; ordinary errors are recorded by run_cell itself
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        write_failed(results_dir, cfg, f"cell raised {detail}", started)


def finish_cell(cfg: RunConfig, results_dir: Path, missing: str, emit: OnEvent,
                started: str | None = None) -> RunResult:
    """Read the cell's result (writing a failed one if there is none) and report it."""
    if cell_state(results_dir, cfg) == "pending":
        write_failed(results_dir, cfg, missing, started)
    result = read_result(results_dir / cfg.run_id())
    emit(CellEvent("finish", cfg.run_id(), result=result))
    return result


def write_failed(results_dir: Path, cfg: RunConfig, error: str, started: str | None = None) -> RunResult:
    """Record a cell as failed with ``error`` (used when the cell could not record it itself)."""
    finished = now()
    wall = None
    if started:
        wall = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    info = RunInfo(id=cfg.run_id(), slug=cfg.slug(), status="failed", error=error, started=started,
                   finished=finished, wall_time_s=wall)
    result = RunResult(run_info=info, config=cfg.to_dict())
    write_result(results_dir / cfg.run_id(), result)
    return result


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def auto_workers(num_cpus: float = 1.0, num_gpus: float = 0.0, cap: int = 4) -> int:
    """Default cells at once: the usable CPU cores / CPUs per cell, at most ``cap``; 1 when cells use a GPU
    (or one is present: cells would share its memory). The cap bounds host memory (a MiniLM-size cell
    peaks near 2 GB of RSS)."""
    if num_gpus > 0 or _cuda_present():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cap, int(cores // max(1.0, num_cpus))))


def _cuda_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def threads_per_cell(options: RunnerOptions) -> int:
    return max(1, int(options.num_cpus))


def pin_threads(threads: int) -> None:
    """Limit math-library threads in this (worker) process, so N cells on N cores do not oversubscribe.

    ``train.num_threads`` in a cell's config, when set, still wins inside the cell.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
