"""Run a list of cells into one results directory, idempotently, on one of three backends.

Each cell is ``cell_fn(cfg, results_dir, progress=...)`` (by default the pipeline's ``run_cell``),
which writes ``results_dir/<run_id>/`` with ``result.json`` last and atomically. The runner:

- skips cells whose ``result.json`` says ``completed`` (and ``failed`` ones unless ``retry_failed``;
  everything is rerun with ``force``), and clears a run directory without ``result.json`` (an
  interrupted cell) before redoing it, so killing the runner loses at most the cells in flight;
- records a ``failed`` result itself when a cell dies without writing one (an exception escaping
  ``cell_fn``, a worker process killed by a signal or the OOM killer, a crashed Ray worker);
- runs trained cells first, then derived ones (one compress step: :mod:`nluforge.experiments.derived`),
  so a derived cell finds its parent finished and never trains it a second time in parallel;
- backends: ``local`` (sequential, in this process), ``process`` (each cell in a fresh process, N at
  a time, so a segfault or OOM kill cannot poison the next cell; :mod:`nluforge.experiments.processes`),
  ``ray`` (each cell a Ray task with declared CPUs/GPUs; :mod:`nluforge.experiments.ray_runner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.experiments.cells import (  # noqa: F401 - the runner's public names live in cells
    PRELOAD,
    Backend,
    CellEvent,
    CellFn,
    OnEvent,
    RunnerOptions,
    State,
    auto_workers,
    cell_state,
    clear_run_dir,
    finish_cell,
    now,
    pin_threads,
    run_in_process,
    select,
    stage_reporter,
    threads_per_cell,
    write_failed,
)
from nluforge.experiments.config import RunConfig
from nluforge.results import RunResult


def run_grid(cells: Sequence[RunConfig], results_dir: str | Path, options: RunnerOptions | None = None, *,
             cell_fn: CellFn | None = None, retry_failed: bool = False, force: bool = False,
             on_event: OnEvent | None = None) -> list[RunResult]:
    """Run the cells that need running; return their results, in the order they finished."""
    options = options or RunnerOptions()
    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    with results_lock(results_dir):
        todo = select(expand_steps(cells), results_dir, retry_failed=retry_failed, force=force)
        cell_fn = cell_fn or _default_cell_fn()
        emit = on_event or (lambda event: None)
        if options.backend == "process":
            from nluforge.experiments.processes import run_processes as backend
        elif options.backend == "ray":
            from nluforge.experiments.ray_runner import run_ray as backend
        else:
            backend = _run_local
        # derived runs (one compress step) wait for their parents: trained cells first, then the children,
        # so a child never trains its parent a second time in parallel with the parent's own cell
        trained = [c for c in todo if c.step() is None]
        children = [c for c in todo if c.step() is not None]
        return [r for wave in (trained, children) if wave
                for r in backend(wave, results_dir, cell_fn, emit, options)]


def expand_steps(cells: Sequence[RunConfig]) -> list[RunConfig]:
    """Configs with several compress steps become their trained cell and one derived cell per step
    (grids are already expanded so; this covers configs built by hand). Order kept, duplicates dropped."""
    out: dict[str, RunConfig] = {}
    for cfg in cells:
        for one in ([cfg.parent(), *cfg.children()] if len(cfg.children()) > 1 else [cfg]):
            out.setdefault(one.run_id(), one)
    return list(out.values())


LOCK_FILE = ".nluforge-runner.lock"


@contextmanager
def results_lock(results_dir: Path):
    """Hold an exclusive lock on ``results_dir`` while a runner uses it.

    Two runners on one directory would both see a cell as pending, and the second would clear the
    first's cell in flight. ``flock`` is released by the kernel when its holder dies (even by
    ``kill -9``), so a crashed runner never leaves a stale lock behind.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (documented)
        yield
        return
    with open(results_dir / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another nluforge runner is using {results_dir}; wait for it to finish "
                            "or give a different --results-dir") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _default_cell_fn() -> CellFn:
    from nluforge.experiments.pipeline import run_cell

    return run_cell


# ---- local ---------------------------------------------------------------------------------------


# ---- local ---------------------------------------------------------------------------------------


def _run_local(todo: list[RunConfig], results_dir: Path, cell_fn: CellFn, emit: OnEvent,
               options: RunnerOptions) -> list[RunResult]:
    """One cell after another in this process; an exception escaping a cell is recorded as failed."""
    out = []
    for cfg in todo:
        emit(CellEvent("start", cfg.run_id()))
        run_in_process(cell_fn, cfg, results_dir, stage_reporter(cfg.run_id(), emit))
        out.append(finish_cell(cfg, results_dir, "the cell returned without writing result.json", emit))
    return out


