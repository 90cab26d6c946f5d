"""Runners: resume after kill -9, failed cells, --retry-failed/--force, process and Ray backends.

These tests use a fake cell function (module-level, so spawned processes and Ray workers can import
it) that writes deterministic results in milliseconds; ``test_runners_real.py`` runs real tiny cells.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nluforge.experiments.config import resolve
from nluforge.experiments.runners import RunnerOptions, cell_state, run_grid, select
from nluforge.results import RunInfo, RunResult, iter_results, write_result

TESTS = Path(__file__).resolve().parent


def fake_cell(cfg, results_dir, *, progress=None):
    """Write a deterministic result; ``method_params`` steer it (crash, raise, fail).

    ``$FAKE_CELL_SLEEP`` (JSON seed -> seconds) slows cells down without changing their config.
    """
    opts = cfg.method_params
    run_dir = Path(results_dir) / cfg.run_id()
    run_dir.mkdir(parents=True)  # the runner must have cleared any leftover
    (run_dir / "log.jsonl").write_text("started\n")
    for stage in ("load", "train", "evaluate"):
        if progress:
            progress(stage)
    time.sleep(json.loads(os.environ.get("FAKE_CELL_SLEEP", "{}")).get(str(cfg.seed), 0))
    mode = opts.get("mode", "ok")
    if mode == "exit":
        os._exit(3)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "raise":
        raise RuntimeError("boom in the cell")
    failed = mode == "fail" and not Path(opts.get("unless", "/nonexistent")).exists()
    info = RunInfo(id=cfg.run_id(), slug=cfg.slug(), status="failed" if failed else "completed",
                   error="task data broke" if failed else None, started="t0", finished="t1", wall_time_s=1.0)
    counts = Path(results_dir) / "_counts"
    counts.mkdir(exist_ok=True)
    with open(counts / cfg.run_id(), "a") as fh:
        fh.write("finished\n")
    result = RunResult(info, cfg.to_dict(), metrics={"trained": {"validation": {"accuracy": cfg.seed / 10}}})
    write_result(run_dir, result)
    return result


def make_cells(n: int = 4, **params):
    """``n`` cells differing by seed; ``params`` (per-seed dicts allowed) go to method_params."""
    cells = []
    for seed in range(1, n + 1):
        p = {k: (v.get(seed, "ok" if k == "mode" else 0) if isinstance(v, dict) else v) for k, v in params.items()}
        cells.append(resolve({"seed": seed, "method_params": p}))
    return cells


def counts(results_dir: Path) -> dict[str, int]:
    folder = results_dir / "_counts"
    return {p.name: len(p.read_text().splitlines()) for p in folder.iterdir()} if folder.is_dir() else {}


def statuses(results_dir: Path) -> dict[str, str]:
    return {d.name: r.run_info.status for d, r in iter_results(results_dir)}


def test_local_runs_every_cell_and_resume_skips_finished(tmp_path):
    cells = make_cells(3)
    events = []
    run_grid(cells, tmp_path, cell_fn=fake_cell, on_event=lambda e: events.append((e.kind, e.stage)))
    assert statuses(tmp_path) == {c.run_id(): "completed" for c in cells}
    assert events[:5] == [("start", None), ("stage", "load"), ("stage", "train"), ("stage", "evaluate"),
                          ("finish", None)]
    assert run_grid(cells, tmp_path, cell_fn=fake_cell) == []  # nothing left to do
    assert set(counts(tmp_path).values()) == {1}
    run_grid(cells, tmp_path, cell_fn=fake_cell, force=True)
    assert set(counts(tmp_path).values()) == {2}


def test_failed_cell_is_recorded_grid_goes_on_and_retry_failed_reruns_it(tmp_path):
    marker = tmp_path / "fixed"
    cells = make_cells(4, mode={2: "fail", 3: "raise"}, unless=str(marker))
    results = run_grid(cells, tmp_path / "r", cell_fn=fake_cell)
    assert [r.run_info.status for r in results] == ["completed", "failed", "failed", "completed"]
    assert results[1].run_info.error == "task data broke"
    assert "RuntimeError: boom in the cell" in results[2].run_info.error
    assert [c.run_id() for c in select(cells, tmp_path / "r")] == []
    assert run_grid(cells, tmp_path / "r", cell_fn=fake_cell) == []  # failed cells are not retried
    marker.touch()
    rerun = run_grid(cells, tmp_path / "r", cell_fn=fake_cell, retry_failed=True)
    assert [r.run_info.id for r in rerun] == [cells[1].run_id(), cells[2].run_id()]
    assert rerun[0].run_info.status == "completed" and rerun[1].run_info.status == "failed"


def test_unfinished_run_dir_is_cleared_and_redone(tmp_path):
    cells = make_cells(1)
    stale = tmp_path / cells[0].run_id()
    stale.mkdir(parents=True)
    (stale / "junk.bin").write_text("half a model")
    assert cell_state(tmp_path, cells[0]) == "pending"
    run_grid(cells, tmp_path, cell_fn=fake_cell)
    assert not (stale / "junk.bin").exists() and cell_state(tmp_path, cells[0]) == "completed"


RUNNER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_runners import fake_cell, make_cells
from nluforge.experiments.runners import RunnerOptions, run_grid
options = RunnerOptions({backend!r}, workers=2, start_method={start_method!r}, preload=())
run_grid(make_cells(4), {results!r}, options, cell_fn=fake_cell)
"""


@pytest.mark.parametrize("backend, start_method", [("local", "spawn"), ("process", "forkserver"),
                                                   ("process", "spawn")])
def test_resume_after_kill_9_loses_only_cells_in_flight(tmp_path, backend, start_method):
    results = tmp_path / "results"
    script = RUNNER_SCRIPT.format(tests=str(TESTS), results=str(results), backend=backend,
                                  start_method=start_method)
    sleeps = json.dumps({"1": 0.2, "2": 2.5, "3": 2.5, "4": 2.5})  # one finishes, others in flight
    env = {**os.environ, "PYTHONPATH": str(TESTS), "FAKE_CELL_SLEEP": sleeps}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(results.glob("*/result.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if backend == "process":
        time.sleep(3.0)  # a worker orphaned by the kill would have finished its cell by now
    before = {p.parent.name: p.read_bytes() for p in results.glob("*/result.json")}
    assert 1 <= len(before) < 4
    assert any(not (d / "result.json").exists() for d in results.iterdir() if d.name != "_counts")
    cells = make_cells(4)
    run_grid(cells, results, cell_fn=fake_cell)
    after = {p.parent.name: p.read_bytes() for p in results.glob("*/result.json")}
    assert sorted(after) == sorted(c.run_id() for c in cells)
    assert all(after[k] == v for k, v in before.items())  # finished results untouched
    assert counts(results) == {c.run_id(): 1 for c in cells}  # no cell finished twice


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_process_backend_runs_cells_and_records_crashed_workers(tmp_path, start_method):
    cells = make_cells(4, mode={2: "exit", 3: "kill"})
    events = []
    options = RunnerOptions("process", workers=2, start_method=start_method, preload=())
    results = run_grid(cells, tmp_path, options, cell_fn=fake_cell,
                       on_event=lambda e: events.append((e.kind, e.run_id, e.stage)))
    by_id = {r.run_info.id: r.run_info for r in results}
    assert by_id[cells[0].run_id()].status == by_id[cells[3].run_id()].status == "completed"
    assert by_id[cells[1].run_id()].status == "failed"
    assert "exit code 3" in by_id[cells[1].run_id()].error
    assert "signal SIGKILL" in by_id[cells[2].run_id()].error
    assert by_id[cells[2].run_id()].wall_time_s is not None
    stages = [s for kind, rid, s in events if kind == "stage" and rid == cells[0].run_id()]
    assert stages == ["load", "train", "evaluate"]
    assert statuses(tmp_path) == {rid: info.status for rid, info in by_id.items()}


def test_ray_backend_runs_cells_and_records_a_crash(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    cells = make_cells(4, mode={4: "exit"})
    results = run_grid(cells, tmp_path, RunnerOptions("ray", workers=2, num_cpus=1), cell_fn=fake_cell)
    status = {r.run_info.id: r.run_info for r in results}
    assert [status[c.run_id()].status for c in cells] == ["completed"] * 3 + ["failed"]
    assert "crashed" in status[cells[3].run_id()].error
    assert json.loads((tmp_path / cells[0].run_id() / "result.json").read_text())["run_info"]["status"] == "completed"


def test_ray_missing_gives_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(Exception, match=r"pip install 'nluforge\[distributed\]'"):
        run_grid(make_cells(1), tmp_path, RunnerOptions("ray"), cell_fn=fake_cell)


def test_a_second_runner_on_the_same_results_dir_is_refused(tmp_path):
    from nluforge.core.errors import UserError
    from nluforge.experiments.runners import results_lock

    tmp_path.mkdir(exist_ok=True)
    with results_lock(tmp_path):  # stands in for a runner that is still going
        with pytest.raises(UserError, match="another nluforge runner"):
            run_grid(make_cells(2), tmp_path, cell_fn=fake_cell)
        assert counts(tmp_path) == {}
    run_grid(make_cells(2), tmp_path, cell_fn=fake_cell)  # released: the next runner proceeds
    assert len(counts(tmp_path)) == 2


def test_the_process_backend_spawns_where_cuda_is_available(monkeypatch):
    """A forkserver whose preloaded libraries initialised CUDA forks children that cannot use it: on an
    H200 every cell failed with "Cannot re-initialize CUDA in forked subprocess". With CUDA the default
    start method is spawn; without it, forkserver (fast: the preloaded imports are shared)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert RunnerOptions("process").start_method == "spawn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert RunnerOptions("process").start_method == ("forkserver" if sys.platform.startswith("linux") else "spawn")
    assert RunnerOptions("process", start_method="spawn").start_method == "spawn"  # an explicit choice stays
