"""``nluforge bench``: dry run, fail-fast data check, user errors, and a real tiny grid end to end."""

from __future__ import annotations

import json
import math
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
from nluforge.core.errors import UserError
from nluforge.experiments.bench import bench_cells, make_plan, parse_duration, size_to_budget
from nluforge.experiments.bench import format_seconds as _fmt
from nluforge.experiments.calibrate import Calibration, Child, cache_key, calibrate
from nluforge.experiments.config import resolve
from nluforge.results import iter_results

_load_commands()
CLI = [sys.executable, "-c", "from nluforge.cli import main; main()"]


def write_grid(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def table(train_eps=40.0, eval_eps=200.0, *, train_size=67349, sizes=None, children=None, **kw) -> Calibration:
    """An injected calibration entry: no model runs."""
    return Calibration(train_eps=train_eps, eval_eps=eval_eps, setup_s=kw.get("setup_s", 2.0),
                       latency_s=kw.get("latency_s", 1.0), save_s=kw.get("save_s", 0.5), train_size=train_size,
                       eval_sizes=sizes or {"validation": 800}, children=children or {})


def grid_cells(tmp_path, data: dict):
    return bench_cells(write_grid(tmp_path / "g.yaml", data))


TWO_TASKS = {"base": {"eval": {"baselines": False}},
             "grid": {"task": [{"name": "sst2", "data": {"max_train_samples": 2000}},
                               {"name": "rte", "data": {"max_train_samples": 1000}}],
                      "method": ["full", "lora"]}}
SPEED = {("sst2", "full"): 40.0, ("sst2", "lora"): 50.0, ("rte", "full"): 10.0, ("rte", "lora"): 12.0}
FULL = {"sst2": 67349, "rte": 2490}


def two_task_tables(cells) -> dict[str, Calibration]:
    return {c.config.parent().run_id(): table(SPEED[c.config.task, c.config.method], train_size=FULL[c.config.task])
            for c in cells}


def by_hand(n: dict[str, int], cells) -> float:
    """The estimate written out: setup + train + one selection pass + eval + latency + save, per cell."""
    total = 0.0
    for c in cells:
        task = c.config.task
        total += 2.0 + n[task] / SPEED[task, c.config.method] + 800 / 200 + 800 / 200 + 1.0 + 0.5
    return total


def test_estimate_is_the_calibration_written_out(tmp_path):
    _, cells = grid_cells(tmp_path, TWO_TASKS)
    cals = two_task_tables(cells)
    plan = make_plan(cells, tmp_path / "results", cals)
    assert plan.total_s == pytest.approx(by_hand({"sst2": 2000, "rte": 1000}, cells))
    assert plan.source.startswith("measured: calibration of 4 trained cell(s)")
    cals[cells[0].config.parent().run_id()].train_eps *= 2  # twice as fast: that cell's training halves
    assert make_plan(cells, tmp_path / "results", cals).rows[0].parts["train"] == pytest.approx(2000 / 80)


def test_estimate_counts_baselines_once_per_task_and_the_compress_child(tmp_path):
    _, cells = grid_cells(tmp_path, {"base": {"data": {"max_train_samples": 1000},
                                              "compress": [{"method": "int8_dynamic"}]},
                                     "grid": {"method": ["full", "bitfit"]}})
    assert [c.config.step_label() for c in cells] == [None, "compress:int8_dynamic"] * 2
    child = Child(compress_s=3.0, eval_eps=400.0, latency_s=0.5, save_s=0.25)
    cals = {c.config.parent().run_id(): table(sizes={"validation": 872, "advglue_sst2": 148},
                                              children={"compress:int8_dynamic": child}) for c in cells}
    rows = make_plan(cells, tmp_path, cals).rows
    assert rows[0].parts["baselines"] == pytest.approx((1000 + 1020) / 200)  # train subset + eval splits
    assert "baselines" not in rows[2].parts  # the second method reuses the task's cached baselines
    assert sum(rows[1].parts.values()) == pytest.approx(2.0 + 3.0 + 1020 / 400 + 0.5 + 0.25)
    assert rows[0].parts["eval"] == pytest.approx(1020 / 200)  # dev and AdvGLUE


def test_budget_sizes_fit_and_keep_each_tasks_share(tmp_path):
    _, cells = grid_cells(tmp_path, TWO_TASKS)
    cals = two_task_tables(cells)
    full_cost = make_plan(cells, tmp_path, cals).total_s
    b = size_to_budget(cells, cals, budget_s=0.75 * full_cost)
    n = {s.task: s.n for s in b.sizes}
    assert b.total_s <= 0.75 * full_cost
    assert b.total_s == pytest.approx(by_hand(n, cells))
    assert n["sst2"] % 32 == 0 and n["rte"] % 32 == 0  # whole batches
    assert 992 <= n["sst2"] < 2000 and n["sst2"] / 2000 == pytest.approx(n["rte"] / 1000, abs=0.04)
    assert {c.config.data.max_train_samples for c in b.cells if c.config.task == "sst2"} == {n["sst2"]}
    assert by_hand({t: v + 32 for t, v in n.items()}, cells) > 0.75 * full_cost  # and nearly fills it
    two = size_to_budget(cells, cals, budget_s=0.75 * full_cost, workers=2)  # 2 cells at a time: twice the work
    assert two.total_s <= 0.75 * full_cost and two.sizes[0].n > n["sst2"]


def test_budget_respects_floor_and_ceiling(tmp_path):
    _, cells = grid_cells(tmp_path, TWO_TASKS)
    cals = two_task_tables(cells)
    big = size_to_budget(cells, cals, budget_s=3600)
    n = {s.task: s.n for s in big.sizes}
    assert n["rte"] == 2490 and big.sizes[1].ceiling == 2490  # the whole training set, no more
    assert n["sst2"] > 2 * 2000 and big.total_s <= 3600  # the time RTE cannot use goes to SST-2
    floors = by_hand({"sst2": 992, "rte": 480}, cells)  # half the caps, in whole batches
    tight = size_to_budget(cells, cals, budget_s=floors + 1)
    assert [(s.task, s.n, s.floor) for s in tight.sizes] == [("sst2", 992, 992), ("rte", 480, 480)]


def test_budget_too_small_names_the_minimum(tmp_path):
    _, cells = grid_cells(tmp_path, TWO_TASKS)
    floors = by_hand({"sst2": 992, "rte": 480}, cells)
    with pytest.raises(UserError) as err:
        size_to_budget(cells, two_task_tables(cells), budget_s=floors - 5)
    message = str(err.value)
    assert "\n" not in message and "too small" in message and "sst2 n=992, rte n=480" in message
    assert f"--time-budget {math.ceil(floors / 60)}m" in message


@pytest.mark.parametrize("text, seconds", [("600", 600), ("600s", 600), ("10m", 600), ("1h", 3600),
                                           ("1h30m", 5400), ("1.5m", 90)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "0m"])
def test_parse_duration_rejects(text):
    with pytest.raises(UserError, match="--time-budget"):
        parse_duration(text)


def test_calibration_cache_is_reused_and_invalidated_on_key_change(tmp_path):
    _, cells = grid_cells(tmp_path, {"grid": {"method": ["full", "lora"]}})
    configs = [c.config for c in cells]
    calls = []

    def measure(cfg, threads, steps):
        calls.append((cfg.method, threads))
        return table(10.0 * len(calls))

    first = calibrate(configs, tmp_path, threads=1, measure=measure)
    assert calls == [("full", 1), ("lora", 1)] and not any(c.cached for c in first.values())
    assert len(list((tmp_path / ".calibration").glob("*.json"))) == 2
    again = calibrate(configs, tmp_path, threads=1, measure=measure)
    assert len(calls) == 2 and all(c.cached for c in again.values())
    assert [c.train_eps for c in again.values()] == [10.0, 20.0]  # what was measured, read back
    calibrate(configs, tmp_path, threads=2, measure=measure)  # another thread count: measured again
    assert calls[2:] == [("full", 2), ("lora", 2)]
    longer = [resolve(c.to_dict(), {"data": {"max_length": 64}}) for c in configs]
    calibrate(longer, tmp_path, threads=1, measure=measure)
    assert len(calls) == 6
    calibrate(configs, tmp_path, threads=1, measure=measure, recalibrate=True)
    assert len(calls) == 8
    smaller = [resolve(c.to_dict(), {"data": {"max_train_samples": 100}}) for c in configs]
    calibrate(smaller, tmp_path, threads=1, measure=measure)  # the training size is not part of the key
    assert len(calls) == 8


def test_calibration_key_names_machine_model_and_version():
    _, cells = bench_cells(None)
    key = cache_key(cells[0].config, 1, [])
    assert {"machine", "model", "task", "method", "max_length", "batch_size", "threads", "nluforge"} <= set(key)
    assert key["machine"]["cores"] >= 1 and key["machine"]["cpu"]


def test_default_grid_has_an_int8_child_per_trained_cell_advglue_and_an_attack():
    _, cells = bench_cells(None)
    trained = [c for c in cells if c.config.step() is None]
    children = [c for c in cells if c.config.step() is not None]
    assert len(children) == len(trained) and {c.config.step_label() for c in children} == {"compress:int8_dynamic"}
    assert all(c.config.eval.advglue for c in cells)
    assert {c.config.task for c in trained} == {"sst2", "qnli", "stsb"}
    assert all([s["method"] for s in c.config.attack] == ["deepwordbug"] for c in cells)  # one attack recipe


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


@pytest.fixture
def tiny_epoch_grid(tmp_path, tiny_model_dir):
    """The tiny grid trained for one epoch (not a fixed step count), so --time-budget can size it."""
    data_dir = make_tiny_glue(tmp_path / "glue")
    base = tiny_base(tiny_model_dir(), data_dir)
    del base["data"]["data_dir"]
    del base["train"]["max_steps"]
    base["eval"]["baselines"] = False
    grid = write_grid(tmp_path / "tiny.yaml", {"base": base, "grid": {"method": ["full", "bitfit"]},
                                               "resources": {"num_cpus": 1}})
    return grid, data_dir


def test_dry_run_calibrates_for_real_then_reads_the_cache(tmp_path, tiny_epoch_grid):
    grid, data_dir = tiny_epoch_grid
    results = tmp_path / "results"
    args = ["bench", str(grid), "--results-dir", str(results), "--data-dir", str(data_dir), "--dry-run"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    out = " ".join(first.output.split())
    assert "calibrated sst2/full" in out and "calibrated sst2/bitfit" in out
    assert "2 measured in" in out and "estimate: measured: calibration of 2 trained cell(s)" in out
    entries = sorted((results / ".calibration").glob("*.json"))
    assert len(entries) == 2
    measured = json.loads(entries[0].read_text())["calibration"]
    assert measured["train_eps"] > 0 and measured["eval_eps"] > 0 and measured["train_size"] == 32
    assert measured["eval_sizes"] == {"validation": 8} and measured["threads"] == 1
    again = CliRunner().invoke(app, args)
    out = " ".join(again.output.split())
    assert again.exit_code == 0 and "calibrated sst2" not in out and "0 measured in" in out
    assert [p.read_bytes() for p in entries] == [p.read_bytes() for p in sorted((results / ".calibration").glob("*"))]
    recal = CliRunner().invoke(app, [*args, "--recalibrate"])
    assert "calibrated sst2/full" in " ".join(recal.output.split())
    assert not [p for p in results.iterdir() if not p.name.startswith(".")]  # a dry run writes no run


def test_time_budget_sizes_runs_and_records_the_chosen_sizes(tmp_path, tiny_epoch_grid, monkeypatch):
    """An injected calibration says 4 ex/s: a budget for about 20 of the 32 examples gives n=24 (whole
    batches of 8, above the floor of 16); the cells then train on 24 and the choice is on disk."""
    from nluforge.experiments import calibrate as calibrate_module

    grid, data_dir = tiny_epoch_grid
    monkeypatch.setattr(calibrate_module, "calibrate_cell",
                        lambda cfg, threads, steps: table(4.0, 100.0, train_size=32, sizes={"validation": 8},
                                                          setup_s=1.0, latency_s=0.0, save_s=0.0))
    per_cell = lambda n: 1.0 + n / 4.0 + 8 / 100 + 8 / 100  # noqa: E731
    budget = 2 * per_cell(26)
    results = tmp_path / "results"
    args = ["bench", str(grid), "--results-dir", str(results), "--data-dir", str(data_dir), "--workers", "1",
            "--backend", "local", "--no-report", "--time-budget", f"{budget}s"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    out = " ".join(run.output.split())
    assert "sst2: n=24 (cap 32)" in out and f"estimated cells {_fmt(2 * per_cell(24))}" in out
    info = json.loads((results / "bench-budget.json").read_text())
    assert info["tasks"]["sst2"]["max_train_samples"] == 24 and info["tasks"]["sst2"]["floor"] == 16
    assert info["estimated_total_s"] == pytest.approx(2 * per_cell(24), abs=0.1)
    assert info["estimated_total_s"] <= budget
    resolved = yaml.safe_load((results / "grid.resolved.yaml").read_text())
    assert resolved["base"]["data"]["max_train_samples"] == 24
    found = [r for _, r in iter_results(results)]
    assert len(found) == 2 and {r.config["data"]["max_train_samples"] for r in found} == {24}
    assert {r.cost.train_examples for r in found} == {24}
    dry = " ".join(CliRunner().invoke(app, [*args, "--dry-run"]).output.split())
    assert "calibration of 2 trained cell(s)" in dry  # the resized cells' calibrations, each counted once
    rerun = CliRunner().invoke(app, ["bench", str(results / "grid.resolved.yaml"), *args[2:-2]])
    assert rerun.exit_code == 0 and "0 to run" in rerun.output  # the resolved grid names the same cells
    small = CliRunner().invoke(app, [*args[:-1], "2s"])
    assert small.exit_code != 0 and isinstance(small.exception, UserError)
    assert "too small" in str(small.exception) and "sst2 n=16" in str(small.exception)


def test_bad_time_budget_is_one_line_before_any_work(tmp_path):
    proc = cli("bench", "--time-budget", "ten minutes", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: --time-budget 'ten minutes' is not a duration")
    assert not (tmp_path / "r").exists()


def test_attack_steps_are_estimated_from_their_calibration(tmp_path):
    """Attack part = examples x temperatures x queries/example x s/query; a compressed child's queries run at
    its own measured speed; a regression task (no calibrated attack) has no attack part."""
    from nluforge.experiments.bench import estimate_cells
    from nluforge.experiments.calibrate import AttackCal

    _, cells = grid_cells(tmp_path, {"base": {"eval": {"baselines": False}, "compress": [{"method": "int8_dynamic"}],
                                           "attack": [{"method": "deepwordbug", "max_examples": 50,
                                                       "temperatures": [1.0, 10.0]}]},
                                  "grid": {"task": ["sst2", "stsb"], "method": ["full"]}})
    attack = AttackCal(s_per_query=0.01, words=20.0, queries_per_example=28.4, examples=50, temperatures=2)
    tables = {}
    for c in cells:
        child = {"compress:int8_dynamic": Child(1.0, 400.0, 0.5, 0.5)}
        attacks = {"attack:deepwordbug": attack} if c.config.task == "sst2" else {}
        tables[c.config.parent().run_id()] = Calibration(40.0, 200.0, 2.0, 1.0, 0.5, 67349, {"validation": 800},
                                                         child, attacks=attacks)
    parts = {(c.config.task, c.config.step_label()): p
             for c, p in zip(cells, estimate_cells([c.config for c in cells], tables), strict=True)}
    assert parts["sst2", None]["attack"] == pytest.approx(50 * 2 * 28.4 * 0.01)
    assert parts["sst2", "compress:int8_dynamic"]["attack"] == pytest.approx(50 * 2 * 28.4 * 0.01 * 200 / 400)
    assert "attack" not in parts["stsb", None] and "attack" not in parts["stsb", "compress:int8_dynamic"]


def test_dry_run_calibrates_an_attack_step_and_a_k_shot_cell(tmp_path, tiny_epoch_grid):
    """A real calibration of a k-shot cell with an attack step: its queries are timed, its queries per example
    are the recipe's registry figure x the attacked field's mean words, and the table shows the attack part."""
    from nluforge.attack.words import Text
    from nluforge.tasks import load_task

    grid, data_dir = tiny_epoch_grid
    data = yaml.safe_load(grid.read_text())
    data["base"]["data"]["k_shot"] = 8
    data["base"]["attack"] = [{"method": "deepwordbug", "max_examples": 6}]
    data["grid"]["method"] = ["full"]
    results = tmp_path / "results"
    run = CliRunner().invoke(app, ["bench", str(write_grid(tmp_path / "k.yaml", data)), "--results-dir",
                                   str(results), "--data-dir", str(data_dir), "--dry-run"])
    out = " ".join(run.output.split())
    assert run.exit_code == 0 and "could not calibrate" not in out, out
    assert "calibrated sst2/full" in out and "attack:deepwordbug" in out
    (entry,) = (results / ".calibration").glob("*.json")
    found = json.loads(entry.read_text())["calibration"]["attacks"]["attack:deepwordbug"]
    dev = load_task("sst2", data_dir=str(data_dir)).splits["validation"].texts
    words = sum(len(Text(tuple(t)).words()) for t in dev) / len(dev)
    assert found["words"] == pytest.approx(words) and found["examples"] == 6 and found["temperatures"] == 1
    assert found["queries_per_example"] == pytest.approx(1 + 1.37 * words) and found["source"] == "registry"
    assert 0 < found["s_per_query"] < 5
    row = next(line for line in run.output.splitlines() if "sst2-" in line and "full" in line)
    assert _fmt(6 * found["queries_per_example"] * found["s_per_query"]) in row
