"""The ``ray`` backend: each cell a Ray task declaring ``num_cpus``/``num_gpus`` (the ``distributed`` extra).

``address`` connects to a running cluster (``auto`` or ``host:port``); otherwise a local instance is
started with ``workers x num_cpus`` CPUs and stopped at the end. Results land in the same results
directory, which must be shared by the cluster's nodes. A task whose worker crashes is not retried
(``max_retries=0``): its cell gets a failed result naming the Ray error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nluforge.core.errors import MissingExtraError, UserError
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


def run_ray(todo: list[RunConfig], results_dir: Path, cell_fn: CellFn, emit: OnEvent,
            options: RunnerOptions) -> list[RunResult]:
    """Each cell a Ray task declaring ``num_cpus``/``num_gpus``; a crashed task is recorded as failed."""
    ray = import_ray()
    started_here = _init_ray(ray, options)
    try:
        task = ray.remote(num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=0)(_ray_cell)
        refs = {}
        for cfg in todo:
            refs[task.remote(cell_fn, cfg, str(results_dir), threads_per_cell(options))] = (cfg, now())
            emit(CellEvent("start", cfg.run_id()))
        pending, out = list(refs), []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            cfg, started = refs[done[0]]
            out.append(finish_cell(cfg, results_dir, _ray_error(ray, done[0]), emit, started))
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
