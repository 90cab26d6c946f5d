"""Run a list of cells into one results directory, idempotently, on one of three backends.

Each cell is ``cell_fn(cfg, results_dir, progress=...)`` (by default the pipeline's ``run_cell``),
which writes ``results_dir/<run_id>/`` with ``result.json`` last and atomically. The runner:

- skips cells whose ``result.json`` says ``completed`` (and ``failed`` ones unless ``retry_failed``;
  everything is rerun with ``force``), and clears a run directory without ``result.json`` (an
  interrupted cell) before redoing it, so killing the runner loses at most the cells in flight;
- records a ``failed`` result itself when a cell dies without writing one (an exception escaping
  ``cell_fn``, a worker process killed by a signal or the OOM killer, a crashed Ray worker);
- backends: ``local`` (sequential, in this process), ``process`` (each cell in a fresh spawned
  process, N at a time, so a segfault or OOM kill cannot poison the next cell), ``ray`` (each cell a
  Ray task with declared CPUs/GPUs; the results dir must be shared by the cluster's nodes).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from nluforge.core.errors import MissingExtraError, UserError
from nluforge.experiments.config import RunConfig
from nluforge.results import RunInfo, RunResult, read_result, write_result
from nluforge.results.store import RESULT_FILE

Backend = Literal["local", "process", "ray"]
State = Literal["completed", "failed", "pending"]
CellFn = Callable[..., Any]  # (cfg, results_dir, *, progress) -> RunResult


@dataclass
class RunnerOptions:
    """How to run the cells: backend, parallelism and what each cell declares it needs."""

    backend: Backend = "local"
    workers: int = 1  # cells at once (process pool size; CPUs of a local Ray instance / num_cpus)
    num_cpus: float = 1.0  # per cell: Ray resource and torch threads (process/ray backends)
    num_gpus: float = 0.0  # per cell (Ray)
    address: str | None = None  # Ray cluster address ("auto" or host:port); None starts a local one

    def __post_init__(self):
        if self.backend not in ("local", "process", "ray"):
            raise UserError(f"unknown backend '{self.backend}'; choose local, process or ray")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")


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


def run_grid(cells: Sequence[RunConfig], results_dir: str | Path, options: RunnerOptions | None = None, *,
             cell_fn: CellFn | None = None, retry_failed: bool = False, force: bool = False,
             on_event: OnEvent | None = None) -> list[RunResult]:
    """Run the cells that need running; return their results, in the order they finished."""
    options = options or RunnerOptions()
    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    todo = select(cells, results_dir, retry_failed=retry_failed, force=force)
    for cfg in todo:
        clear_run_dir(results_dir, cfg)
    cell_fn = cell_fn or _default_cell_fn()
    emit = on_event or (lambda event: None)
    backends = {"local": _run_local, "process": _run_processes, "ray": _run_ray}
    return backends[options.backend](todo, results_dir, cell_fn, emit, options)


def clear_run_dir(results_dir: Path, cfg: RunConfig) -> None:
    """Remove the cell's run directory so that it starts clean (an interrupted or forced rerun)."""
    run_dir = results_dir / cfg.run_id()
    if run_dir.exists():
        shutil.rmtree(run_dir)


def _default_cell_fn() -> CellFn:
    from nluforge.experiments.pipeline import run_cell

    return run_cell


# ---- local ---------------------------------------------------------------------------------------


def _run_local(todo: list[RunConfig], results_dir: Path, cell_fn: CellFn, emit: OnEvent,
               options: RunnerOptions) -> list[RunResult]:
    """One cell after another in this process; an exception escaping a cell is recorded as failed."""
    out = []
    for cfg in todo:
        run_id = cfg.run_id()
        emit(CellEvent("start", run_id))
        run_in_process(cell_fn, cfg, results_dir, lambda stage: emit(CellEvent("stage", run_id, stage)))
        out.append(_finish(cfg, results_dir, "the cell returned without writing result.json", emit))
    return out


def run_in_process(cell_fn: CellFn, cfg: RunConfig, results_dir: Path, progress: Callable[[str], None]) -> None:
    """Call ``cell_fn``; if it raises, write the failed result it could not write itself."""
    started = _now()
    try:
        cell_fn(cfg, results_dir, progress=progress)
    except Exception as err:  # a bug below run_cell; ordinary errors are recorded by run_cell itself
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        write_failed(results_dir, cfg, f"cell raised {detail}", started)


def _finish(cfg: RunConfig, results_dir: Path, missing: str, emit: OnEvent, started: str | None = None) -> RunResult:
    """Read the cell's result (writing a failed one if there is none) and report it."""
    if cell_state(results_dir, cfg) == "pending":
        write_failed(results_dir, cfg, missing, started)
    result = read_result(results_dir / cfg.run_id())
    emit(CellEvent("finish", cfg.run_id(), result=result))
    return result


def write_failed(results_dir: Path, cfg: RunConfig, error: str, started: str | None = None) -> RunResult:
    """Record a cell as failed with ``error`` (used when the cell could not record it itself)."""
    finished = _now()
    wall = None
    if started:
        wall = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    info = RunInfo(id=cfg.run_id(), slug=cfg.slug(), status="failed", error=error, started=started,
                   finished=finished, wall_time_s=wall)
    result = RunResult(run_info=info, config=cfg.to_dict())
    write_result(results_dir / cfg.run_id(), result)
    return result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---- process pool --------------------------------------------------------------------------------


@dataclass
class _Worker:
    process: Any
    conn: Any  # receiving end of the worker's progress pipe (None once closed)
    cfg: RunConfig
    started: str


def _run_processes(todo: list[RunConfig], results_dir: Path, cell_fn: CellFn, emit: OnEvent,
                   options: RunnerOptions) -> list[RunResult]:
    """Each cell in a fresh spawned process, ``options.workers`` at a time."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    threads = _threads_per_cell(options)
    queue, running, out = list(todo), {}, []
    while queue or running:
        while queue and len(running) < options.workers:
            worker = _spawn(ctx, cell_fn, queue.pop(0), results_dir, threads)
            running[worker.process.sentinel] = worker
            emit(CellEvent("start", worker.cfg.run_id()))
        conns = {w.conn: w for w in running.values() if w.conn is not None}
        for ready in wait([*running, *conns]):
            if ready in conns:
                _relay(conns[ready], emit)
            else:
                out.append(_reap(running.pop(ready), results_dir, emit))
    return out


def _spawn(ctx: Any, cell_fn: CellFn, cfg: RunConfig, results_dir: Path, threads: int) -> _Worker:
    recv, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_worker_main, args=(cell_fn, cfg, str(results_dir), send, threads),
                          name=f"nluforge-cell-{cfg.run_id()}")
    process.start()
    send.close()  # the child holds the only write end: EOF tells us it is gone
    return _Worker(process, recv, cfg, _now())


def _relay(worker: _Worker, emit: OnEvent) -> None:
    """Forward a stage name sent by the worker; close the pipe at EOF."""
    if worker.conn is None:
        return
    try:
        emit(CellEvent("stage", worker.cfg.run_id(), worker.conn.recv()))
    except (EOFError, OSError):
        worker.conn.close()
        worker.conn = None


def _reap(worker: _Worker, results_dir: Path, emit: OnEvent) -> RunResult:
    """Join a finished worker; a worker that died without a result gets a failed one naming why."""
    worker.process.join()
    while worker.conn is not None and worker.conn.poll():
        _relay(worker, emit)  # stages sent just before exit, then EOF closes the pipe
    if worker.conn is not None:
        worker.conn.close()
        worker.conn = None
    return _finish(worker.cfg, results_dir, _exit_reason(worker.process.exitcode), emit, worker.started)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker process crashed: killed by signal {name}{hint}, without writing a result"
    return f"worker process crashed: exit code {code}, without writing a result"


def _worker_main(cell_fn: CellFn, cfg: RunConfig, results_dir: str, conn: Any, threads: int) -> None:
    """Entry point of a spawned worker: die with the parent, pin threads, run one cell."""
    _die_with_parent()
    pin_threads(threads)

    def progress(stage: str) -> None:
        try:
            conn.send(stage)
        except OSError:
            pass  # the runner is gone; finish the cell anyway

    run_in_process(cell_fn, cfg, Path(results_dir), progress)
    conn.close()


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the runner dies, so a killed runner leaves no orphan writing results."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _threads_per_cell(options: RunnerOptions) -> int:
    return max(1, int(options.num_cpus))


def pin_threads(threads: int) -> None:
    """Limit math-library threads in this (worker) process, so N cells on N cores do not oversubscribe.

    ``train.num_threads`` in a cell's config, when set, still wins inside the cell.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


# ---- ray -----------------------------------------------------------------------------------------


def _run_ray(todo: list[RunConfig], results_dir: Path, cell_fn: CellFn, emit: OnEvent,
             options: RunnerOptions) -> list[RunResult]:
    """Each cell a Ray task declaring ``num_cpus``/``num_gpus``; a crashed task is recorded as failed."""
    ray = import_ray()
    started_here = _init_ray(ray, options)
    try:
        task = ray.remote(num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=0)(_ray_cell)
        refs = {}
        for cfg in todo:
            refs[task.remote(cell_fn, cfg, str(results_dir), _threads_per_cell(options))] = (cfg, _now())
            emit(CellEvent("start", cfg.run_id()))
        pending, out = list(refs), []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            cfg, started = refs[done[0]]
            out.append(_finish(cfg, results_dir, _ray_error(ray, done[0]), emit, started))
        return out
    finally:
        if started_here:
            ray.shutdown()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "distributed") from None
    return ray


def _init_ray(ray: Any, options: RunnerOptions) -> bool:
    """Connect to ``options.address`` or start a local instance sized for ``workers`` cells."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if options.address:
        kwargs["address"] = options.address
    else:
        kwargs["num_cpus"] = max(1, int(options.workers * options.num_cpus))
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise UserError(f"cannot reach the Ray cluster at '{options.address}': {err}") from None
    return True


def _ray_cell(cell_fn: CellFn, cfg: RunConfig, results_dir: str, threads: int) -> None:
    pin_threads(threads)
    run_in_process(cell_fn, cfg, Path(results_dir), lambda stage: None)


def _ray_error(ray: Any, ref: Any) -> str:
    """Why a task ended without a result (used only when its cell wrote none)."""
    try:
        ray.get(ref)
    except Exception as err:  # RayTaskError, WorkerCrashedError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"ray task crashed: {type(err).__name__}: {first}"
    return "the ray task returned without writing result.json"

