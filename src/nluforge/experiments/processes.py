"""The ``process`` backend: each cell in a fresh process, ``workers`` at a time.

``forkserver`` (the default on Linux without CUDA; see ``cells.default_start_method``): every cell process is forked from a clean server process that
has imported ``options.preload`` (nluforge, torch, transformers, peft, accelerate) and never ran a cell, so a
cell cannot inherit another cell's state, crash or leak, yet skips ~8 s of imports. ``spawn``: a new
interpreter per cell. A cell process that dies without writing ``result.json`` (segfault, OOM kill,
``os._exit``) gets a failed result naming its exit code or signal; a cell process whose runner dies
(``kill -9``) ends at once, so no orphan writes a result behind a rerun's back.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nluforge.experiments.cells import (
    CellEvent,
    CellFn,
    OnEvent,
    RunnerOptions,
    finish_cell,
    now,
    pin_threads,
    run_in_process,
    threads_per_cell,
)
from nluforge.experiments.config import RunConfig
from nluforge.results import RunResult


@dataclass
class _Worker:
    process: Any
    conn: Any  # receiving end of the worker's progress pipe (None once closed)
    cfg: RunConfig
    started: str


def run_processes(todo: list[RunConfig], results_dir: Path, cell_fn: CellFn, emit: OnEvent,
                  options: RunnerOptions) -> list[RunResult]:
    """Run ``todo``, ``options.workers`` cell processes at a time; return results as they finish."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context(options.start_method)
    if options.start_method == "forkserver":  # takes effect when this process first starts the server
        ctx.set_forkserver_preload([*options.preload, cell_fn.__module__])
    threads = threads_per_cell(options)
    queue, running, out = list(todo), {}, []
    while queue or running:
        while queue and len(running) < options.workers:
            worker = _start_worker(ctx, cell_fn, queue.pop(0), results_dir, threads)
            running[worker.process.sentinel] = worker
            emit(CellEvent("start", worker.cfg.run_id()))
        conns = {w.conn: w for w in running.values() if w.conn is not None}
        for ready in wait([*running, *conns]):
            if ready in conns:
                _relay(conns[ready], emit)
            else:
                out.append(_reap(running.pop(ready), results_dir, emit))
    return out


def _start_worker(ctx: Any, cell_fn: CellFn, cfg: RunConfig, results_dir: Path, threads: int) -> _Worker:
    recv, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_worker_main, args=(cell_fn, cfg, str(results_dir), send, threads),
                          name=f"nluforge-cell-{cfg.run_id()}")
    process.start()
    send.close()  # the child holds the only write end: EOF tells us it is gone
    return _Worker(process, recv, cfg, now())


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
    return finish_cell(worker.cfg, results_dir, _exit_reason(worker.process.exitcode), emit, worker.started)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker process crashed: killed by signal {name}{hint}, without writing a result"
    return f"worker process crashed: exit code {code}, without writing a result"


def _worker_main(cell_fn: CellFn, cfg: RunConfig, results_dir: str, conn: Any, threads: int) -> None:
    """Entry point of a cell process: die with the runner, pin threads, run one cell."""
    _exit_when_runner_dies(conn)
    pin_threads(threads)

    def progress(stage: str) -> None:
        try:
            conn.send(stage)
        except OSError:
            pass  # the runner is gone; the watchdog ends this process

    run_in_process(cell_fn, cfg, Path(results_dir), progress)


def _exit_when_runner_dies(conn: Any) -> None:
    """End this process as soon as the runner holding the pipe's read end is gone (e.g. ``kill -9``).

    A cell process's parent may be the forkserver, not the runner, so the parent-death signal would
    not fire; instead a daemon thread polls the pipe's write end, which reports POLLERR once it has no
    reader. Without this, an orphaned cell would finish and write its result while a rerun redoes it.
    """
    import select
    import threading

    if not hasattr(select, "poll"):
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLERR | select.POLLHUP)
        poller.poll()
        os._exit(70)

    threading.Thread(target=watch, name="nluforge-runner-watch", daemon=True).start()
