"""The ``baselines`` stage: frozen-embedding baselines of the base encoder on each run's own training
subset, cached per task across a grid's methods, switchable, and shown by the report."""

from __future__ import annotations

import json

import pytest
from test_runners_real import make_tiny_glue, tiny_base

from nluforge.experiments import baselines as stage
from nluforge.experiments.config import resolve
from nluforge.experiments.pipeline import run_cell


@pytest.fixture
def base(tmp_path, tiny_model_dir) -> dict:
    return tiny_base(tiny_model_dir(), make_tiny_glue(tmp_path / "glue"))


@pytest.fixture
def calls(monkeypatch) -> list:
    """Spy on the computation (the real one runs): the data of each call."""
    found: list = []
    real = stage.compute_baselines

    def spy(prep, data, device=None):
        found.append(data)
        return real(prep, data, device)

    monkeypatch.setattr(stage, "compute_baselines", spy)
    return found


def _completed(result):
    assert result.run_info.status == "completed", result.run_info.error
    return result


def test_run_records_baselines_of_the_base_encoder_on_its_own_k_shot_subset(tmp_path, base, calls, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from nluforge.eval import embed_baselines
    from nluforge.eval.embed_baselines import embedding_baselines
    from nluforge.experiments.data import load_data
    from nluforge.models.loading import load_model, load_tokenizer

    read: list = []  # the model the baselines read
    monkeypatch.setattr(embed_baselines, "embedding_baselines",
                        lambda model, *a, **k: read.append(model) or embedding_baselines(model, *a, **k))
    cfg = resolve(base, {"data": {"k_shot": 4}, "train": {"lr": 1e-2}})
    result = _completed(run_cell(cfg, tmp_path / "results"))
    # the pretrained encoder's weights, not the fine-tuned ones
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "results" / result.run_info.id / "model")
    assert read[0].state_dict()[weight].equal(load_model(cfg.model, num_labels=2).state_dict()[weight])
    assert not read[0].state_dict()[weight].equal(tuned.state_dict()[weight])
    found = result.metrics["baselines"]
    assert set(found) == {"validation"} and set(found["validation"]) == {"logreg", "knn"}

    # the run's own 4-shot sample (8 examples), not the whole training split
    spec, splits, _ = load_data(cfg)
    assert len(calls) == 1 and calls[0].train.texts == splits["train"].texts and len(splits["train"]) == 8
    # ... scored as embedding_baselines scores them
    model = load_model(cfg.model, num_labels=2)
    dev = splits["validation"]
    expected = embedding_baselines(model, load_tokenizer(cfg.model), (splits["train"].texts, splits["train"].labels),
                                   {"validation": (dev.texts, dev.labels)}, spec,
                                   max_length=32, k=stage.KNN_K, c=stage.LOGREG_C)
    assert found == expected
    meta = result.meta["baselines"]
    assert meta["cached"] is False and meta["train_examples"] == meta["train_total"] == 8
    assert meta["seconds"] >= meta["compute_seconds"] > 0
    on_disk = json.loads((tmp_path / "results" / result.run_info.id / "result.json").read_text())
    assert on_disk["metrics"]["baselines"] == found


def test_a_grid_of_methods_computes_the_baselines_once_per_task(tmp_path, base, calls):
    results = tmp_path / "results"
    full = _completed(run_cell(resolve(base, {"method": "full"}), results))
    bitfit = _completed(run_cell(resolve(base, {"method": "bitfit", "seed": 7}), results))
    assert len(calls) == 1  # one computation for two methods (and seeds) on the same data
    assert bitfit.metrics["baselines"] == full.metrics["baselines"]
    assert bitfit.meta["baselines"]["cached"] is True and full.meta["baselines"]["cached"] is False
    assert [p.suffix for p in sorted((results / ".baselines").iterdir())] == [".json", ".lock"]

    other = _completed(run_cell(resolve(base, {"data": {"max_train_samples": 12}}), results))
    assert len(calls) == 2 and len(calls[1].train) == 12  # another training subset: its own entry
    assert other.meta["baselines"]["key"] != full.meta["baselines"]["key"]


def test_a_large_training_subset_is_capped_by_a_seeded_sample(tmp_path, base, calls, monkeypatch):
    monkeypatch.setattr(stage, "MAX_TRAIN", 10)
    result = _completed(run_cell(resolve(base), tmp_path / "results"))
    meta = result.meta["baselines"]
    assert len(calls[0].train) == meta["train_examples"] == 10 and meta["train_total"] == 32
    assert f"seed {stage.CAP_SEED}" in meta["train_subset"] and "10 of the run's 32" in meta["train_subset"]


def test_baselines_off_records_none_and_keeps_default_run_ids(tmp_path, base, calls):
    off = resolve(base, {"eval": {"baselines": False}})
    result = _completed(run_cell(off, tmp_path / "results"))
    assert "baselines" not in result.metrics and "baselines" not in result.meta
    assert calls == [] and not (tmp_path / "results" / ".baselines").exists()
    assert off.run_id() != resolve(base).run_id()
    # the switch at its default leaves the config hash as it was before the switch existed
    assert resolve({"task": "sst2"}).run_id() == "sst2-default-full-s42--2b012596"


def test_a_failing_baseline_is_recorded_without_failing_the_run(tmp_path, base, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no features")

    monkeypatch.setattr(stage, "compute_baselines", broken)
    result = _completed(run_cell(resolve(base), tmp_path / "results"))
    assert "baselines" not in result.metrics
    assert result.meta["baselines"]["error"] == "RuntimeError: no features"
    assert any("no features" in note for note in result.meta["notes"])


def test_sentence_pair_regression_adds_the_zero_shot_cosine(tmp_path, tiny_model_dir, glue_dir):
    cfg = resolve({"task": "stsb", "model": str(tiny_model_dir(num_labels=1)), "method": "bitfit",
                   "data": {"data_dir": str(glue_dir), "max_train_samples": 24, "max_eval_samples": 16,
                            "max_length": 32},
                   "train": {"max_steps": 1, "batch_size": 8, "num_threads": 1},
                   "eval": {"advglue": False, "latency": False}})
    found = _completed(run_cell(cfg, tmp_path / "results")).metrics["baselines"]["validation"]
    assert set(found) == {"logreg", "knn", "cosine"}
    assert set(found["cosine"]) == {"pearson", "spearman"} and -1 <= found["cosine"]["pearson"] <= 1


def test_report_shows_the_embedding_baselines_beside_the_variants(tmp_path, base):
    from nluforge.report import build_report

    results = tmp_path / "results"
    runs = [_completed(run_cell(resolve(base, {"method": m}), results)) for m in ("full", "bitfit")]
    logreg = runs[0].metrics["baselines"]["validation"]["logreg"]["accuracy"]
    text = build_report(results, tmp_path / "report").markdown.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| logreg (embeddings)"))
    assert f"{100 * logreg:.1f}" in row
    assert any(line.startswith("| knn (embeddings)") for line in text.splitlines())


def test_report_keeps_the_baselines_of_each_training_regime_apart(tmp_path, base):
    from nluforge.report import load_report
    from nluforge.report.format import flags

    results = tmp_path / "results"
    full = _completed(run_cell(resolve(base), results))
    few = _completed(run_cell(resolve(base, {"data": {"k_shot": 4}}), results))
    task = load_report(results).tasks[0]
    rows = {b.label: b for b in task.baselines if b.kind == "embedding"}
    assert sorted(rows) == ["knn (embeddings, 4-shot)", "knn (embeddings, all training data)",
                            "logreg (embeddings, 4-shot)", "logreg (embeddings, all training data)"]
    for name, run in (("4-shot", few), ("all training data", full)):  # not averaged across regimes
        assert rows[f"logreg (embeddings, {name})"].score("accuracy") == run.metrics["baselines"]["validation"]["logreg"]["accuracy"]
    variant = next(r for r in task.rows if "4-shot" in r.label)
    assert [b.label for b in task.baselines if b.kind == "embedding" and b.applies_to(variant)] == [
        "knn (embeddings, 4-shot)", "logreg (embeddings, 4-shot)"]
    assert not any("all training data" in flag for flag in flags(task, variant))


def test_a_capped_baseline_names_the_subset_it_was_fitted_on():
    """The stage fits on at most MAX_TRAIN examples: a 20k run's row says so rather than 'n=20000' alone."""
    from pathlib import Path

    from nluforge.report.baselines import embedding
    from nluforge.report.collect import RunRecord

    def record(n: int, fit: int | None) -> RunRecord:
        config = {"task": "sst2", "method": "full", "data": {"max_train_samples": n}}
        return RunRecord(Path(f"/r{n}/result.json"), f"r{n}", "sst2", f"full-{n}", config, 42, "completed", None,
                         baselines={"validation": {"logreg": {"accuracy": 0.78}}}, baselines_fit=fit)

    assert [r.label for r in embedding([record(20000, 5000)])] == ["logreg (embeddings, n=20000, fit on 5000)"]
    assert [r.label for r in embedding([record(2000, None)])] == ["logreg (embeddings)"]  # the whole subset
    rows = embedding([record(20000, 5000), record(2000, None)])
    assert sorted(r.label for r in rows) == ["logreg (embeddings, n=2000)", "logreg (embeddings, n=20000, fit on 5000)"]
    assert {r.training_data for r in rows} == {"n=2000", "n=20000"}  # matching variants is unchanged
