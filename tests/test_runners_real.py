"""The process and Ray backends on real cells: a tiny random BERT on a tiny GLUE-layout SST-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nluforge.experiments.config import resolve
from nluforge.experiments.runners import RunnerOptions, run_grid
from nluforge.results import iter_results

SENTENCES = ["a gorgeous , witty film", "dull and lifeless", "the best movie of the year", "a tedious mess",
             "warm and funny", "painfully boring", "an instant classic", "flat , lazy writing"]


def make_tiny_glue(root: Path) -> Path:
    """``root/SST-2/{train,dev}.tsv``: 32 training and 8 dev sentences (GLUE's layout)."""
    sst2 = root / "SST-2"
    sst2.mkdir(parents=True)
    rows = [f"{s} \t{(i + 1) % 2}" for i, s in enumerate(SENTENCES)]
    (sst2 / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 4) + "\n")
    (sst2 / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def tiny_base(model_dir: Path, data_dir: Path) -> dict:
    """A run config mapping whose cell takes about a second once torch is imported."""
    return {"task": "sst2", "model": str(model_dir), "data": {"data_dir": str(data_dir), "max_length": 32},
            "train": {"max_steps": 2, "batch_size": 8, "num_threads": 1},
            "eval": {"advglue": False, "latency": False}}


@pytest.fixture
def tiny_cells(tmp_path, tiny_model_dir):
    base = tiny_base(tiny_model_dir(), make_tiny_glue(tmp_path / "glue"))
    return [resolve(base, {"method": m}) for m in ("full", "bitfit")]  # each worker imports torch: ~10 s


@pytest.mark.parametrize("options", [RunnerOptions("process", workers=2),
                                     RunnerOptions("ray", workers=2, num_cpus=1)], ids=["process", "ray"])
def test_backend_runs_real_tiny_cells(tmp_path, tiny_cells, options):
    if options.backend == "ray":
        pytest.importorskip("ray")
    stages: dict[str, list[str]] = {}
    results = run_grid(tiny_cells, tmp_path / "results", options,
                       on_event=lambda e: stages.setdefault(e.run_id, []).append(e.stage or e.kind))
    assert [r.run_info.error for r in results] == [None] * 2
    found = {d.name: r for d, r in iter_results(tmp_path / "results")}
    assert sorted(found) == sorted(c.run_id() for c in tiny_cells)
    for run_id, r in found.items():  # the metrics that came back are the worker's own predictions
        rows = [json.loads(line) for line in (tmp_path / "results" / run_id / "predictions.jsonl").open()]
        dev = [row for row in rows if row["split"] == "validation"]
        hits = sum(row["prediction"] == row["label"] for row in dev) / len(dev)
        assert r.metrics["trained"]["validation"]["accuracy"] == pytest.approx(hits)
    if options.backend == "process":  # stages travel back from the worker processes
        assert all(s[:2] == ["start", "load"] and s[-1] == "finish" and "train" in s for s in stages.values())
    assert run_grid(tiny_cells, tmp_path / "results", options) == []  # resumed: nothing left
