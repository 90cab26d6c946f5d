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
