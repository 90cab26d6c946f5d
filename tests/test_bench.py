"""``nluforge bench``: dry run, fail-fast data check, user errors, and a real tiny grid end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_runners_real import make_tiny_glue, tiny_base
from typer.testing import CliRunner

from nluforge.cli.app import _load_commands, app
from nluforge.experiments.bench import bench_cells, make_plan
from nluforge.results import Cost, RunInfo, RunResult, iter_results, write_result

_load_commands()
CLI = [sys.executable, "-c", "from nluforge.cli import main; main()"]


def write_grid(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def finished(results: Path, cfg, wall: float = 30.0) -> None:
    info = RunInfo(id=cfg.run_id(), slug=cfg.slug(), status="completed", wall_time_s=wall)
    write_result(results / cfg.run_id(), RunResult(info, cfg.to_dict(), cost=Cost(train_examples=200)))


def test_dry_run_lists_cells_states_count_and_estimate(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", {
        "base": {"data": {"max_train_samples": 200}},
        "grid": {"task": ["sst2", "rte"], "method": ["full", {"name": "lora", "params": {"r": 4}}]}})
    _, cells = bench_cells(grid)
    finished(tmp_path / "results", cells[0].config)
    result = CliRunner().invoke(app, ["bench", str(grid), "--results-dir", str(tmp_path / "results"), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    for cell in cells:
        assert cell.run_id in out
    assert "r=4" in out and "done" in out
    assert "4 cells: 1 done, 0 failed, 3 pending; 3 would run" in out
    assert "estimated time: ~" in out
    assert "3 from a built-in guess" in " ".join(out.split())
    assert "scaled x" in " ".join(out.split())  # calibrated by the finished cell
    assert not (tmp_path / "results" / cells[1].run_id).exists()  # a dry run writes nothing


def test_plan_estimate_uses_finished_results(tmp_path):
    _, cells = bench_cells(write_grid(tmp_path / "g.yaml", {
        "base": {"data": {"max_train_samples": 200}}, "grid": {"seed": [1, 2]}}))
    finished(tmp_path, cells[0].config, wall=50.0)
    plan = make_plan(cells, tmp_path)
    assert [r.state for r in plan.rows] == ["completed", "pending"]
    assert plan.rows[1].estimate_s == pytest.approx(50.0)  # same task/model/method, same examples
    assert make_plan(cells, tmp_path, force=True).rows[0].estimate_s == pytest.approx(50.0)


def test_guess_reads_each_method_speed_from_its_registry_entry(monkeypatch):
    """The built-in guess divides the per-example time by the method's ``relative_speed``."""
    from nluforge.experiments.bench import _FIXED_S, guess_seconds
    from nluforge.experiments.config import resolve
    from nluforge.methods import METHODS

    cfg = resolve({"task": "sst2", "method": "lst", "data": {"max_train_samples": 1000}})
    meta = METHODS.entry("lst").meta
    monkeypatch.setitem(meta, "relative_speed", 1.0)
    slow = guess_seconds(cfg) - _FIXED_S
    monkeypatch.setitem(meta, "relative_speed", 4.0)
    assert guess_seconds(cfg) - _FIXED_S == pytest.approx(slow / 4)


def test_no_data_fails_fast_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NLUFORGE_DATA_DIR"}
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    start = time.monotonic()
    proc = cli("bench", "--results-dir", str(tmp_path / "results"), env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no data for task 'sst2'")
    assert "--data-dir DIR" in lines[0] and "NLUFORGE_DATA_DIR" in lines[0]
    assert time.monotonic() - start < 60  # imports and one Hub refusal, no training
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("content, message", [
    ("grid: {task: [sst2\n", "is not valid YAML at line"),
    ("grid: {methd: [full]}\n", "unknown key 'grid.methd' (did you mean 'method'?)"),
])
def test_bad_grid_file_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    proc = cli("bench", str(path), "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and proc.stderr.startswith("error: ")


def test_unknown_backend_is_a_user_error(tmp_path):
    proc = cli("bench", "--backend", "slurm", "--dry-run", "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown backend 'slurm'" in proc.stderr


# ---- real tiny cells ----------------------------------------------------------------------------

@pytest.fixture
def tiny_grid(tmp_path, tiny_model_dir):
    """A GLUE-layout folder with a tiny SST-2, and a 2-cell grid on a tiny random BERT."""
    data_dir = make_tiny_glue(tmp_path / "glue")
    base = tiny_base(tiny_model_dir(), data_dir)
    del base["data"]["data_dir"]  # given with --data-dir
    grid = write_grid(tmp_path / "tiny.yaml", {"base": base, "grid": {"method": ["full", "bitfit"]}})
    return grid, data_dir


def test_bench_runs_real_tiny_cells_resumes_logs_to_mlflow_and_reports(tmp_path, tiny_grid):
    grid, data_dir = tiny_grid
    results = tmp_path / "results"
    args = ["bench", str(grid), "--results-dir", str(results), "--data-dir", str(data_dir)]
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = CliRunner().invoke(app, [*args, "--mlflow", tracking])
    assert run.exit_code == 0, run.output
    found = {d.name: r for d, r in iter_results(results)}
    assert len(found) == 2 and {r.run_info.status for r in found.values()} == {"completed"}
    for run_dir in found:
        assert {"config.yaml", "model", "log.jsonl", "result.json"} <= {p.name for p in (results / run_dir).iterdir()}
    assert (results / "report" / "report.html").is_file()
    before = {k: (results / k / "result.json").read_bytes() for k in found}
    again = CliRunner().invoke(app, [*args, "--no-report", "--mlflow", tracking])
    assert again.exit_code == 0 and "0 to run" in again.output
    assert before == {k: (results / k / "result.json").read_bytes() for k in found}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("nluforge").experiment_id])
    assert sorted(r.data.tags["nluforge.run_id"] for r in runs) == sorted(found)
    assert all("trained.validation.accuracy" in r.data.metrics for r in runs)


def test_failed_real_cell_exits_1_and_retry_failed_reruns_it(tmp_path, tiny_grid):
    grid, data_dir = tiny_grid
    results = tmp_path / "results"
    data = yaml.safe_load(grid.read_text())
    data["grid"] = {"method": ["full", {"name": "lora", "params": {"target_modules": ["nope"]}}]}
    failing = write_grid(tmp_path / "failing.yaml", data)
    args = ["bench", str(failing), "--results-dir", str(results), "--data-dir", str(data_dir), "--no-report"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 1, run.output
    status = {r.config["method"]: r.run_info for _, r in iter_results(results)}
    assert status["full"].status == "completed" and status["lora"].status == "failed"
    assert status["lora"].error
    rerun = CliRunner().invoke(app, [*args, "--retry-failed"])
    assert rerun.exit_code == 1 and "1 to run" in rerun.output
    assert json.loads((results / status["full"].id / "result.json").read_text())["run_info"]["status"] == "completed"
