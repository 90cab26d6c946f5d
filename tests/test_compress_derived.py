"""The new compressors as derived runs: one training, one child per step, each reloadable; structured
pruning gets its calibration batches from the parent's train split; a combination that cannot work
fails with one line naming it."""

from __future__ import annotations

import json

import pytest
from test_runners_real import make_tiny_glue, tiny_base

from nluforge.experiments.config import resolve

STEPS = [{"method": "groupwise", "bits": 4, "group_size": 32}, {"method": "magnitude", "sparsity": 0.6},
         {"method": "structured", "heads": 0.5, "neurons": 0.5, "calibration_examples": 20, "batch_size": 8},
         {"method": "random_masks", "sparsity": 0.5, "candidates": 2, "calibration_examples": 8}]


@pytest.fixture
def tiny_setup(tmp_path, tiny_model_dir):
    return tiny_base(tiny_model_dir(), make_tiny_glue(tmp_path / "glue"))


def test_one_training_four_compressed_children_each_reloading_its_own_predictions(tmp_path, tiny_setup,
                                                                                   monkeypatch):
    import numpy as np

    from nluforge.compress.structured import prune
    from nluforge.eval.predict import predict
    from nluforge.experiments.data import encode_splits
    from nluforge.experiments.pipeline import run_cell
    from nluforge.experiments.servable import load_servable
    from nluforge.experiments.state import Prepared
    from nluforge.results import iter_results
    from nluforge.tasks import load_task

    seen = []
    real = prune.fisher_scores
    monkeypatch.setattr(prune, "fisher_scores", lambda m, layers, cal: seen.append(cal) or real(m, layers, cal))
    cfg = resolve(tiny_setup, {"compress": STEPS})
    parent = run_cell(cfg, tmp_path / "results")
    found = {d.name: r for d, r in iter_results(tmp_path / "results")}
    children = {r.run_info.step: r for r in found.values() if r.run_info.parent == parent.run_info.id}
    assert sorted(children) == ["compress:groupwise", "compress:magnitude", "compress:random_masks",
                                "compress:structured"]
    assert [r.run_info.error for r in children.values()] == [None] * 4
    # 20 of the 32 training examples, in batches of at most 8, labelled
    assert [len(b["labels"]) for b in seen[0]] == [8, 8, 4] and all("input_ids" in b for b in seen[0])
    for step, child in children.items():
        assert child.cost.standalone_size_mb < parent.cost.standalone_size_mb, step
        s = load_servable(tmp_path / "results" / child.run_info.id)
        assert s.compressed and s.step == step
        splits = load_task("sst2", data_dir=s.cfg.data.data_dir, splits=["validation"]).splits
        prep = Prepared(s.cfg, s.spec, dict(splits), s.tokenizer, s.model, s.method, s.method_cfg, [])
        logits = predict(s.model, encode_splits(prep, ["validation"])["validation"], batch_size=8, pad_id=0,
                         regression=False)
        rows = [json.loads(line) for line in (s.run_dir / "predictions.jsonl").read_text().splitlines()]
        assert np.allclose(logits, [r["logits"] for r in rows], atol=1e-5), step


def test_structured_on_a_method_it_cannot_prune_fails_with_one_line_naming_the_combination(tmp_path, tiny_setup):
    from nluforge.experiments.pipeline import run_cell

    child = resolve(tiny_setup, {"method": "dylora", "compress": [STEPS[2]]})
    result = run_cell(child, tmp_path / "results")
    assert result.run_info.status == "failed"
    assert "compress:structured on a dylora run: structured pruning needs a plain" in result.run_info.error
    assert "\n" not in result.run_info.error


NEW_STEPS = [{"method": "int8_onnx"}, {"method": "hessian_mixed", "avg_bits": 3, "group_size": 32, "iterations": 5,
                                       "calibration_examples": 16, "batch_size": 8},
             {"method": "oneshot", "sparsity": 0.4, "calibration_examples": 16, "batch_size": 8}]


def test_two_methods_times_three_new_compressors_train_twice_and_report_eight_linked_variants(tmp_path, tiny_setup,
                                                                                            monkeypatch):
    from nluforge.experiments import stages
    from nluforge.experiments.grid import parse_grid
    from nluforge.experiments.runners import run_grid
    from nluforge.report.build import load_report
    from nluforge.results import iter_results

    trainings = []
    real = stages.train_stage
    monkeypatch.setattr(stages, "train_stage", lambda state, **kw: trainings.append(state.cfg.method) or
                        real(state, **kw))
    base = {**tiny_setup, "compress": NEW_STEPS, "eval": {"advglue": False, "latency": True, "latency_examples": 4}}
    cells = parse_grid({"base": base, "grid": {"method": ["full", "lora"]}}).cells()
    results = run_grid([c.config for c in cells], tmp_path / "results")
    assert sorted(trainings) == ["full", "lora"]
    assert [r.run_info.error for r in results] == [None] * 8
    found = {d.name: r for d, r in iter_results(tmp_path / "results")}
    children = [r for r in found.values() if r.run_info.parent]
    assert len(children) == 6 and all(r.run_info.parent in found for r in children)
    for child in children:
        assert child.cost.latency_ms_bs1 > 0 and child.cost.latency_ms_bs32 > 0  # onnx: measured through ORT
        assert child.cost.standalone_size_mb < found[child.run_info.parent].cost.standalone_size_mb
    mixed = next(c for c in children if c.run_info.step == "compress:hessian_mixed")
    layout = json.loads((tmp_path / "results" / mixed.run_info.id / "model" / "compress.json").read_text())["layout"]
    assert layout["avg_bits"] <= 3 and all(g["eigenvalues"] for g in layout["groups"].values())
    report = load_report(tmp_path / "results")
    keys = [v.key for task in report.tasks for v in getattr(task, "rows", [])]
    derived = [k for k in keys if " → " in k]
    assert len(keys) == 8 and len(derived) == 6
    assert {k.rsplit(" → ", 1)[1] for k in derived} == {"compress:int8_onnx", "compress:hessian_mixed",
                                                         "compress:oneshot"}
    assert all(k.rsplit(" → ", 1)[0] in keys for k in derived)  # each variant links to its parent's row


def test_recovery_finetuning_keeps_the_pruning_mask_and_changes_the_weights(tmp_path, tiny_setup):
    import torch

    from nluforge.experiments.pipeline import run_cell
    from nluforge.experiments.servable import load_servable

    cfg = resolve(tiny_setup, {"compress": [{"method": "magnitude", "sparsity": 0.5},
                                            {"method": "magnitude", "sparsity": 0.5, "finetune_steps": 3,
                                             "finetune_lr": 1e-2}]})
    run_cell(cfg, tmp_path / "results")
    runs = {}
    for d in (tmp_path / "results").glob("*/result.json"):
        d = d.parent
        r = json.loads((d / "result.json").read_text())
        if r["run_info"].get("step"):
            runs[bool(r["meta"]["compress"].get("finetune"))] = (d, r)
    (plain_dir, _), (tuned_dir, tuned) = runs[False], runs[True]
    assert tuned["meta"]["compress"]["finetune"]["steps"] == 3
    plain, recovered = (dict(load_servable(d).model.named_parameters()) for d in (plain_dir, tuned_dir))
    w = "bert.encoder.layer.0.intermediate.dense.weight"
    assert torch.equal(recovered[w] == 0, plain[w] == 0)  # the same zeros: the mask held through training
    assert not torch.equal(recovered[w], plain[w])  # and the kept weights moved
    assert (tuned_dir / "log.jsonl").read_text().count('"recovery"') >= 1


def test_a_quantizer_takes_no_finetune_option(tmp_path, tiny_setup):
    from nluforge.core.errors import UserError
    from nluforge.experiments.pipeline import run_cell

    with pytest.raises(UserError):
        from nluforge.compress import compress_config

        compress_config("groupwise", {"finetune_steps": 3})
    result = run_cell(resolve(tiny_setup, {"compress": [{"method": "groupwise", "bits": 5}]}), tmp_path / "r")
    assert result.run_info.status == "failed" and "bits must be one of 2, 3, 4, 8" in result.run_info.error


def test_compressing_a_custom_task_run_evaluates_on_its_files_with_the_parent_labels(tmp_path, tiny_model_dir):
    from test_eval_cli import write_reviews

    from nluforge.experiments.pipeline import run_cell

    write_reviews(tmp_path / "train.csv", 40, seed=1)
    write_reviews(tmp_path / "dev.csv", 12, seed=2)
    from conftest import make_tiny

    model = tiny_model_dir()
    make_tiny("bert", 3).save_pretrained(model)
    base = {"task": "custom", "model": str(model),
            "data": {"train_file": str(tmp_path / "train.csv"), "validation_file": str(tmp_path / "dev.csv"),
                     "text_fields": ["review"], "label_field": "sentiment", "max_length": 32},
            "train": {"max_steps": 2, "batch_size": 8, "num_threads": 1}, "eval": {"latency": False},
            "compress": [{"method": "groupwise", "bits": 4, "group_size": 32},
                         {"method": "structured", "heads": 0.5, "neurons": 0.5, "calibration_examples": 8}]}
    run_cell(resolve(base, {}), tmp_path / "results")
    results = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*/result.json")]
    children = [r for r in results if r["run_info"].get("parent")]
    assert len(children) == 2 and all(r["run_info"]["status"] == "completed" for r in children), \
        [r["run_info"].get("error") for r in children]
    assert all("validation" in r["metrics"]["trained"] for r in children)


def test_cli_compress_that_cannot_apply_leaves_no_derived_run(tmp_path, tiny_setup):
    import subprocess
    import sys

    from nluforge.experiments.pipeline import run_cell

    parent = run_cell(resolve(tiny_setup, {"method": "prompt_tuning"}), tmp_path / "results")
    run_dir = tmp_path / "results" / parent.run_info.id
    before = sorted(p.name for p in (tmp_path / "results").iterdir())
    proc = subprocess.run([sys.executable, "-m", "nluforge", "compress", str(run_dir), "--method", "int8_onnx"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "compress:int8_onnx on a prompt_tuning run" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == before
