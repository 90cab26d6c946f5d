"""The stage pipeline's contracts: fail-fast typed sections, no import cycles, the int8_dynamic
compressor, derived runs (grid children, ``nluforge compress``) and multi-process runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli import assert_user_error, cli
from test_runners_real import make_tiny_glue, tiny_base

from nluforge.core.errors import UserError
from nluforge.experiments.config import resolve

REPO = Path(__file__).resolve().parents[1]


# ---- no import cycles ----------------------------------------------------------------------------


def test_no_import_cycle_between_any_two_nluforge_modules():
    import grimp

    graph = grimp.build_graph("nluforge", exclude_type_checking_imports=True, cache_dir=None)  # no stale cache
    cycles = sorted((m, n) for m in graph.modules for n in graph.find_modules_directly_imported_by(m)
                    if n.startswith("nluforge") and graph.chain_exists(importer=n, imported=m))
    assert cycles == []


# ---- fail fast -------------------------------------------------------------------------------------


@dataclass
class _NoOptions:
    pass


@pytest.fixture
def fake_steps(monkeypatch):
    """One attack and one audit registered (none ships yet), so did-you-mean has a name to offer."""
    from nluforge.core.registry import Entry
    from nluforge.core.steps import ATTACKS, AUDITS

    monkeypatch.setattr(ATTACKS, "_entries", {"textfooler": Entry("textfooler", _NoOptions)})
    monkeypatch.setattr(AUDITS, "_entries", {"membership": Entry("membership", _NoOptions)})


@pytest.mark.parametrize("override, needle", [
    ({"optimizer": "adamww"}, "unknown optimizer 'adamww' (did you mean 'adamw'?)"),
    ({"optimizer_params": {"betaz": [0.9, 0.99]}}, "unknown option 'betaz' for optimizer 'adamw' (did you mean 'betas'?)"),
    ({"compress": [{"method": "int8_dynamc"}]}, "unknown compressor 'int8_dynamc' (did you mean 'int8_dynamic'?)"),
    ({"compress": [{"method": "int8_dynamic", "embedings": False}]},
     "unknown key 'compress[0].embedings' (did you mean 'embeddings'?)"),
    ({"compress": [{"embeddings": False}]}, "compress[0] needs 'method: NAME'"),
    ({"attack": [{"method": "textfoler"}]}, "unknown attack 'textfoler' (did you mean 'textfooler'?)"),
    ({"audit": [{"method": "membershp"}]}, "unknown audit 'membershp' (did you mean 'membership'?)"),
    ({"privacy": {"method": "dp_sdg"}}, "unknown privacy method 'dp_sdg'"),
    ({"privacy": {"method": "dp_sgd", "params": {"epsilon": 0}}}, "epsilon must be > 0"),
    ({"privacy": {"metod": "dp_sgd"}}, "unknown key 'privacy.metod' (did you mean 'method'?)"),
])
def test_unknown_step_or_option_fails_in_prepare_before_any_load(fake_steps, monkeypatch, override, needle):
    from nluforge.experiments import pipeline

    monkeypatch.setattr(pipeline, "load_data", lambda *a, **k: pytest.fail("data loaded before validation"))
    t0 = time.perf_counter()
    with pytest.raises(UserError) as err:
        pipeline.prepare(resolve({"task": "sst2"}, override))
    assert time.perf_counter() - t0 < 1.0
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_unknown_compress_step_fails_in_seconds_and_writes_nothing(tmp_path, glue_dir):
    out = tmp_path / "runs"
    t0 = time.perf_counter()
    proc = cli("train", "--task", "sst2", "--data-dir", str(glue_dir), "--max-train-samples", "200",
               "-o", str(out), "--set", "compress=[{method: nope}]")
    elapsed = time.perf_counter() - t0
    assert_user_error(proc, "unknown compressor 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert elapsed < 5, elapsed
    assert not out.exists()


# ---- the int8_dynamic compressor ---------------------------------------------------------------------


def test_int8_dynamic_quantizes_saves_without_pickle_and_reloads_exactly(tmp_path, tiny_model):
    import torch
    from torch import nn

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed
    from nluforge.compress.int8_dynamic.quantize import Int8Embedding

    model = tiny_model("bert")
    x = {"input_ids": torch.randint(1000, 3000, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    ref = model(**x).logits  # (4, 2)
    cfg = compress_config("int8_dynamic", {"skip": ["classifier"]})
    q = compress(model, cfg)
    assert type(q.classifier) is nn.Linear  # skipped
    assert not any(type(m) is nn.Linear for n, m in q.named_modules() if n != "classifier")
    assert isinstance(q.bert.embeddings.word_embeddings, Int8Embedding)
    out = q(**x).logits
    assert torch.allclose(out, ref, atol=0.05) and not torch.equal(out, ref)  # quantized, and close
    save_compressed(q, cfg, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["compress.json", "model.safetensors"]
    fp32_bytes = sum(p.numel() * 4 for p in tiny_model("bert").parameters())
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 0.4 * fp32_bytes
    again = load_compressed(tmp_path / "m", tiny_model("bert", seed=1))  # other weights: all overwritten
    assert torch.equal(again(**x).logits, out)


@pytest.mark.parametrize("per_channel, bits", [(False, 7), (True, 7), (True, 8)])
def test_int8_dynamic_scales_and_activation_range_round_trip(tmp_path, tiny_model, per_channel, bits):
    """Per-channel weights keep one scale per output row; 8-bit activations sit closer to fp32 than 7."""
    import torch

    torch.manual_seed(0)
    from safetensors.torch import load_file

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed
    from nluforge.compress.int8_dynamic.quantize import Int8Linear

    model = tiny_model("bert")
    x = {"input_ids": torch.randint(1000, 3000, (16, 12)), "attention_mask": torch.ones(16, 12, dtype=torch.long)}
    ref = model(**x).logits
    cfg = compress_config("int8_dynamic", {"per_channel": per_channel, "activation_bits": bits})
    q = compress(model, cfg)
    linears = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert linears and all(m.reduce_range == (bits == 7) for m in linears)
    out = q(**x).logits
    save_compressed(q, cfg, tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    scale = saved["bert.encoder.layer.0.intermediate.dense.weight_scale"]
    assert scale.numel() == (model.config.intermediate_size if per_channel else 1)
    assert torch.equal(load_compressed(tmp_path / "m", tiny_model("bert", seed=1))(**x).logits, out)
    assert torch.allclose(out, ref, atol=0.05)
    if bits == 8:  # the same model with 7-bit activations is further from fp32
        seven = compress(tiny_model("bert"), compress_config("int8_dynamic", {"per_channel": per_channel,
                                                                              "activation_bits": 7}))
        assert (out - ref).abs().mean() < (seven(**x).logits - ref).abs().mean()


def test_int8_dynamic_rejects_an_activation_range_it_has_no_kernel_for():
    from nluforge.compress import compress_config

    with pytest.raises(UserError, match="activation_bits must be 7 or 8"):
        compress_config("int8_dynamic", {"activation_bits": 6})


def _methods_for_int8():
    from nluforge.methods import METHODS

    return list(METHODS.names())


@pytest.mark.parametrize("method", _methods_for_int8())
def test_int8_dynamic_round_trips_every_method_s_model(method, tmp_path, tiny_model, tokenizer):
    """Compress each method's adapted model; a fresh adaptation (other weights) reloads it exactly."""
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed
    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    module, mc, spec = method_module(method), method_config(method, {}), get_task("sst2")
    head = "masked_lm" if getattr(module, "HEAD", "") == "masked_lm" else "seq_cls"

    def adapted(seed):
        return module.adapt(tiny_model("bert", seed=seed, head=head), mc, tokenizer=tokenizer, task=spec).eval()

    x = {"input_ids": torch.randint(1000, 3000, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}
    cfg = compress_config("int8_dynamic")
    q = compress(adapted(0), cfg)
    out = q(**x).logits
    save_compressed(q, cfg, tmp_path / "m")
    assert torch.equal(load_compressed(tmp_path / "m", adapted(1))(**x).logits, out)


def test_int8_dynamic_rejects_a_folder_of_another_structure(tmp_path, tiny_model):
    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    cfg = compress_config("int8_dynamic")
    save_compressed(compress(tiny_model("bert"), cfg), cfg, tmp_path / "m")
    with pytest.raises(UserError, match="does not match"):
        load_compressed(tmp_path / "m", tiny_model("bert", num_labels=3))


def test_train_stage_hands_fit_only_the_seams_it_is_given(tmp_path, tiny_setup, monkeypatch):
    import nluforge.train
    from nluforge.experiments import stages
    from nluforge.experiments.data import encode_splits
    from nluforge.experiments.pipeline import prepare
    from nluforge.experiments.state import RunState
    from nluforge.train.loop import default_loss

    prep = prepare(resolve(tiny_setup, {"method": "dylora"}))  # a method with per-step hooks
    (tmp_path / "run").mkdir()
    state = RunState(prep, tmp_path / "run", show_progress=False)
    state.encoded = encode_splits(prep, ["train", "validation"])
    given, calls = {}, []
    real_fit = nluforge.train.fit
    monkeypatch.setattr(nluforge.train, "fit", lambda *a, **k: given.update(k) or real_fit(*a, **k))

    def loss_fn(model, batch):
        calls.append(len(batch["labels"]))
        return default_loss(model, batch)

    trained = stages.train_stage(state, loss_fn=loss_fn)
    assert given["loss_fn"] is loss_fn and calls == [8, 8] and trained.fit.steps == 2
    assert "sampler" not in given and "update_step" not in given  # fit's own defaults
    assert given["hooks"] is not None  # the method's hooks, for the run's own model
    assert (tmp_path / "run" / stages.LOG_FILE).read_text().strip()


# ---- derived runs ----------------------------------------------------------------------------------

STEPS = [{"method": "int8_dynamic"}, {"method": "int8_dynamic", "embeddings": False},
         {"method": "int8_dynamic", "skip": ["classifier"]}]


@pytest.fixture
def tiny_setup(tmp_path, tiny_model_dir):
    return tiny_base(tiny_model_dir(), make_tiny_glue(tmp_path / "glue"))


def test_grid_cells_differing_only_in_compress_steps_share_one_trained_cell():
    from nluforge.experiments.grid import parse_grid

    cells = parse_grid({"grid": {"method": ["full", "lora"], "compress": [None, STEPS[:2], STEPS[2]]}}).cells()
    trained = [c for c in cells if c.config.step() is None]
    assert [c.config.method for c in trained] == ["full", "lora"] and len(cells) == 2 + 2 * 3
    for c in cells:
        if c.config.step() is not None:
            assert c.run_id.startswith(c.config.parent().slug() + "-int8_dynamic--")
            assert c.config.parent().run_id() in {t.run_id for t in trained}
    assert len({c.run_id for c in cells}) == len(cells)


def test_grid_trains_each_cell_once_and_derives_one_child_per_step(tmp_path, tiny_setup, monkeypatch):
    from nluforge.experiments import stages
    from nluforge.experiments.grid import parse_grid
    from nluforge.experiments.runners import run_grid
    from nluforge.results import iter_results

    trainings = []
    real = stages.train_stage
    monkeypatch.setattr(stages, "train_stage", lambda state, **kw: trainings.append(state.cfg.method) or
                        real(state, **kw))
    base = {**tiny_setup, "compress": STEPS}
    cells = parse_grid({"base": base, "grid": {"method": ["full", "bitfit"]}}).cells()
    assert [c.config.step() is None for c in cells] == [True, False, False, False] * 2
    results = run_grid([c.config for c in cells], tmp_path / "results")
    assert sorted(trainings) == ["bitfit", "full"]  # 2 trainings for 2 x 3 derived runs
    assert [r.run_info.error for r in results] == [None] * 8
    found = {d.name: r for d, r in iter_results(tmp_path / "results")}
    children = [r for r in found.values() if r.run_info.parent]
    assert len(children) == 6 and all(r.run_info.parent in found for r in children)
    assert {r.run_info.step for r in children} == {"compress:int8_dynamic"}
    for child in children:
        parent = found[child.run_info.parent]
        assert child.config["method"] == parent.config["method"] and len(child.config["compress"]) == 1
        acc, parent_acc = (r.metrics["trained"]["validation"]["accuracy"] for r in (child, parent))
        assert abs(acc - parent_acc) <= 0.1  # int8 keeps a random tiny model's predictions, nearly all
        # BitFit ships only its biases and head on top of the base: compare the servable models alone
        if child.config["compress"][0].get("embeddings", True):  # the word embeddings dominate a tiny model
            assert child.cost.standalone_size_mb < 0.5 * parent.cost.standalone_size_mb
        else:
            assert child.cost.standalone_size_mb < parent.cost.standalone_size_mb
        assert child.cost.train_time_s == parent.cost.train_time_s  # the child's training is its parent's
        assert child.meta["parent"]["metrics"] == parent.metrics["trained"]
    trainings.clear()
    assert run_grid([c.config for c in cells], tmp_path / "results") == [] and trainings == []  # all skipped
    unexpanded = [resolve(base, {"method": m}) for m in ("full", "bitfit")]  # configs built by hand
    assert run_grid(unexpanded, tmp_path / "results") == [] and trainings == []
    victim = children[0].run_info.id
    shutil.rmtree(tmp_path / "results" / victim)
    again = run_grid([c.config for c in cells], tmp_path / "results")
    assert [r.run_info.id for r in again] == [victim] and trainings == []  # a child resumes on its own


def test_derived_cell_trains_its_missing_parent_first(tmp_path, tiny_setup):
    from nluforge.experiments.pipeline import run_cell

    child = resolve(tiny_setup, {"method": "lora", "compress": [STEPS[0]]})
    result = run_cell(child, tmp_path / "results")
    assert result.run_info.status == "completed", result.run_info.error
    assert (tmp_path / "results" / child.parent().run_id() / "result.json").is_file()
    assert result.run_info.parent == child.parent().run_id() and result.run_info.id == child.run_id()


@dataclass
class _FakeAttackConfig:
    flip: bool = True


def fake_attack(state, step):
    """An 'attack' that reports the run's accuracy with predictions flipped (checks the stage's wiring)."""
    acc = state.metrics["trained"]["validation"]["accuracy"]
    return {"validation": {"robust_accuracy": 1 - acc if step.config.flip else acc}}


def test_run_cell_with_steps_trains_once_derives_each_and_runs_attack_stages(tmp_path, tiny_setup, monkeypatch):
    from nluforge.core.registry import Entry
    from nluforge.core.steps import ATTACKS
    from nluforge.experiments.pipeline import run_cell
    from nluforge.results import iter_results

    monkeypatch.setattr(ATTACKS, "_entries", {"flip": Entry("flip", _FakeAttackConfig,
                                                            meta={"run": "test_stages_derived:fake_attack"})})
    cfg = resolve(tiny_setup, {"compress": STEPS[:2], "attack": [{"method": "flip"}]})
    stages_seen = []
    parent = run_cell(cfg, tmp_path / "results", progress=stages_seen.append)
    assert parent.run_info.id == cfg.parent().run_id() and parent.run_info.parent is None
    found = {d.name: r for d, r in iter_results(tmp_path / "results")}
    assert len(found) == 3 and sum(r.run_info.parent == parent.run_info.id for r in found.values()) == 2
    for r in found.values():
        acc = r.metrics["trained"]["validation"]["accuracy"]
        assert r.metrics["attacked"]["validation"]["robust_accuracy"] == pytest.approx(1 - acc)
    assert stages_seen[:6] == ["load", "train", "save", "evaluate", "baselines", "attack"]
    assert ["compress", "save", "evaluate", "attack", "measure"] == stages_seen[-6:-1]


def test_load_servable_loads_a_trained_run_and_its_compressed_child(tmp_path, tiny_setup):
    import numpy as np

    from nluforge.eval.predict import predict
    from nluforge.experiments.data import encode_splits
    from nluforge.experiments.pipeline import run_cell
    from nluforge.experiments.servable import load_servable
    from nluforge.experiments.state import Prepared

    cfg = resolve(tiny_setup, {"method": "lora", "compress": [STEPS[0]]})
    run_cell(cfg, tmp_path / "results")
    for run_id, compressed in ((cfg.parent().run_id(), False), (cfg.run_id(), True)):
        s = load_servable(tmp_path / "results" / run_id)
        assert s.compressed is compressed and s.step == ("compress:int8_dynamic" if compressed else None)
        from nluforge.tasks import load_task

        splits = load_task("sst2", data_dir=s.cfg.data.data_dir, splits=["validation"]).splits
        prep = Prepared(s.cfg, s.spec, dict(splits), s.tokenizer, s.model, s.method, s.method_cfg, [])
        logits = predict(s.model, encode_splits(prep, ["validation"])["validation"], batch_size=8, pad_id=0,
                         regression=False)
        rows = [json.loads(line) for line in (s.run_dir / "predictions.jsonl").read_text().splitlines()]
        assert np.allclose(logits, [r["logits"] for r in rows], atol=1e-4)  # what the run itself predicted


def test_cli_compress_writes_a_sibling_derived_run_and_rejects_bad_input(tmp_path, tiny_model_dir):
    from test_cli import write_sst2

    out = tmp_path / "runs"
    common = ["--task", "sst2", "--model", str(tiny_model_dir("bert")), "--data-dir",
              str(write_sst2(tmp_path / "glue", n_train=64, n_dev=32)), "--max-steps", "2", "-o", str(out),
              "--set", "eval.advglue=false", "--set", "eval.latency_examples=8"]
    proc = cli("train", *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parent = Path(proc.stdout.strip().splitlines()[-1])
    proc = cli("compress", str(parent), "--method", "int8_dynamic", "-p", "skip=[classifier]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    child = Path(proc.stdout.strip().splitlines()[-1])
    assert child.parent == parent.parent and child.name.startswith(parent.name.split("--")[0] + "-int8_dynamic--")
    result = json.loads((child / "result.json").read_text())
    assert result["run_info"]["parent"] == parent.name and result["run_info"]["step"] == "compress:int8_dynamic"
    assert result["config"]["compress"] == [{"method": "int8_dynamic", "skip": ["classifier"]}]
    assert set(result["metrics"]["trained"]) == {"validation"}
    assert result["cost"]["latency_ms_bs1"] > 0 and result["cost"]["latency_ms_bs32"] > 0
    assert 0 < result["cost"]["model_size_mb"] < result["meta"]["parent"]["cost"]["model_size_mb"]
    before = sorted(p.name for p in out.iterdir())
    assert_user_error(cli("compress", str(parent), "--method", "int8_dynamc"), "did you mean 'int8_dynamic'")
    assert_user_error(cli("compress", str(parent), "--method", "int8_dynamic", "-p", "bits=4"), "unknown key")
    shutil.rmtree(parent / "model")
    assert_user_error(cli("compress", str(parent), "--method", "int8_dynamic", "-p", "embeddings=false"),
                      "no saved model")
    assert_user_error(cli("compress", str(tmp_path), "--method", "int8_dynamic"), "not a run directory")
    assert sorted(p.name for p in out.iterdir()) == before  # no derived run left behind


# ---- several processes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_processes_write_one_run(tmp_path, tiny_model_dir, glue_dir):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "nluforge", "train", "--task", "sst2",
           "--model", str(tiny_model_dir()), "--data-dir", str(glue_dir), "--max-train-samples", "200",
           "--max-steps", "4", "--batch-size", "16", "-o", str(out), "--set", "eval.advglue=false",
           "--set", "data.max_eval_samples=64", "--set", "eval.latency=false",
           "--set", "compress=[{method: int8_dynamic}]"]  # the derived run: main process only, no hang
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {p.name: json.loads((p / "result.json").read_text()) for p in out.iterdir()
               if p.is_dir() and not p.name.startswith(".")}  # .baselines: the baselines cache
    runs = [out / name for name, r in results.items() if r["run_info"]["parent"] is None]
    assert len(runs) == 1 and len(results) == 2  # one trained run, one derived run
    assert not (runs[0] / "checkpoints").exists()  # no rank wrote into it after the main one cleaned up
    assert proc.stderr.count("run directory:") == 1  # one process speaks
    result = results[runs[0].name]
    assert result["run_info"]["status"] == "completed"
    assert result["cost"]["train_examples"] == 4 * 16 * 2  # both processes trained, each on its own batches
    assert set(result["metrics"]["baselines"]["validation"]) == {"logreg", "knn"}  # the main process's stage


def test_a_run_from_before_the_pooling_option_reloads_with_the_cls_pooler(tmp_path):
    import yaml

    from nluforge.experiments.config import read_run_config, resolve

    old = resolve({"task": "sst2"}).to_dict()
    del old["pooling"]  # what config.yaml held before the option existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert read_run_config(tmp_path).pooling == "cls"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "pooling": "auto"}))
    assert read_run_config(tmp_path).pooling == "auto"
