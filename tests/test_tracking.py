"""MLflow tracking: params = flattened config, metrics = stage.split.metric and cost, logged once."""

from __future__ import annotations

import sys

import pytest

from nluforge.core.errors import UserError
from nluforge.experiments.config import resolve
from nluforge.experiments.tracking import MlflowTracker, flatten, result_metrics, result_params
from nluforge.results import Cost, RunInfo, RunResult


def make_result(seed: int, status: str = "completed") -> RunResult:
    cfg = resolve({"method": "lora", "method_params": {"r": 8}, "seed": seed, "train": {"lr": 5e-4}})
    info = RunInfo(id=cfg.run_id(), slug=cfg.slug(), status=status, error="boom" if status == "failed" else None,
                   started="2026-01-01T00:00:00+00:00", finished="2026-01-01T00:01:00+00:00", wall_time_s=60.0)
    metrics = {"trained": {"validation": {"accuracy": 0.8}, "advglue_sst2": {"accuracy": 0.4}}}
    cost = Cost(trainable_params=1234, train_time_s=42.5, latency_ms_bs1=3.2)
    return RunResult(info, cfg.to_dict(), metrics if status == "completed" else {}, cost)


def test_flatten_params_and_metrics():
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
    result = make_result(1)
    params = result_params(result)
    assert params["method_params.r"] == "8" and params["train.lr"] == "0.0005" and params["task"] == "sst2"
    assert params["compress"] == "[]" and params["data.data_dir"] == "null"
    metrics = result_metrics(result)
    assert metrics["trained.validation.accuracy"] == 0.8 and metrics["trained.advglue_sst2.accuracy"] == 0.4
    assert metrics["cost.trainable_params"] == 1234 and metrics["wall_time_s"] == 60.0
    assert "cost.total_params" not in metrics  # unset cost fields are left out


def test_mlflow_logs_each_result_once(tmp_path):
    pytest.importorskip("mlflow")
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="grid")
    done, failed = make_result(1), make_result(2, "failed")
    assert tracker.log(done) and tracker.log(failed)
    assert not tracker.log(done)  # resumed grids do not log twice
    runs = tracker.client.search_runs([tracker.experiment_id], order_by=["tags.`nluforge.run_id` ASC"])
    assert len(runs) == 2
    by_id = {r.data.tags["nluforge.run_id"]: r for r in runs}
    ok = by_id[done.run_info.id]
    assert ok.info.status == "FINISHED" and ok.info.run_name == done.run_info.slug
    assert ok.data.params["method_params.r"] == "8"
    assert ok.data.metrics["trained.validation.accuracy"] == 0.8
    assert ok.data.metrics["cost.train_time_s"] == 42.5
    bad = by_id[failed.run_info.id]
    assert bad.info.status == "FAILED" and bad.data.tags["nluforge.error"] == "boom"


def test_mlflow_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UserError, match=r"pip install 'nluforge\[tracking\]'"):
        MlflowTracker("sqlite:///x.db")
