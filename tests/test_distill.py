"""Knowledge distillation (issue #12): the losses, `layers:K` students, the objective's learning signal,
the `distill:` derived run (grid and CLI), and the one-line errors for bad input, on tiny random models."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_runners_real import make_tiny_glue, tiny_base

from nluforge.core.errors import UserError
from nluforge.distill.capture import QKVCapture, layer_list
from nluforge.distill.losses import kd_loss, minilm_loss, soft_labels
from nluforge.distill.objective import DistillObjective, Weights
from nluforge.distill.students import check_minilm, cut_layers, pick_layers
from nluforge.experiments.config import resolve


def tiny(layers: int = 4, *, seed: int = 0, hidden: int = 32, heads: int = 2, labels: int = 2):
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=64, vocab_size=200, num_labels=labels)
    return AutoModelForSequenceClassification.from_config(config).eval()


def batch(n: int = 16, length: int = 10, *, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 200, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[: n // 2, length - 3:] = 0  # some padding, so masked keys and query rows are exercised
    return {"input_ids": ids, "attention_mask": mask}


# ----------------------------------------------------------------------------------------- layers:K


@pytest.mark.parametrize(("mode", "k", "expected"), [("first", 2, [0, 1]), ("last", 2, [4, 5]),
                                                     ("every_other", 3, [0, 2, 4]), ("uniform", 3, [1, 3, 5]),
                                                     ("uniform", 2, [2, 5]), ("uniform", 6, [0, 1, 2, 3, 4, 5])])
def test_pick_layers(mode, k, expected):
    assert pick_layers(6, k, mode) == expected


@pytest.mark.parametrize("mode", ["first", "every_other", "last", "uniform"])
def test_layers_k_copies_the_picked_layers_embeddings_and_head(mode):
    teacher = tiny(4)
    student, picked = cut_layers(teacher, 2, mode)
    assert picked == pick_layers(4, 2, mode) and student.config.num_hidden_layers == 2
    assert student.config.nluforge_distill_layers == picked
    t_layers, s_layers = layer_list(teacher), layer_list(student)
    assert len(s_layers) == 2 and len(t_layers) == 4  # the teacher is untouched
    for s_layer, t_index in zip(s_layers, picked, strict=True):
        t_state = t_layers[t_index].state_dict()
        for key, value in s_layer.state_dict().items():
            assert torch.equal(value, t_state[key]), (t_index, key)
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name])
    assert student.bert.embeddings.word_embeddings.weight.data_ptr() != teacher.bert.embeddings.word_embeddings.weight.data_ptr()
    out = student(**batch()).logits  # it runs as a 2-layer model
    assert out.shape == (16, 2)


def test_layers_k_out_of_range_and_every_other_too_deep_fail_with_one_line():
    teacher = tiny(4)
    for k, mode, needle in [(0, "uniform", "1 <= K <= 4"), (5, "first", "1 <= K <= 4"),
                            (3, "every_other", "at most 2 of 4")]:
        with pytest.raises(UserError, match=needle) as err:
            cut_layers(teacher, k, mode)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------- MiniLM


def test_minilm_loss_is_zero_when_the_student_is_the_teacher_and_positive_otherwise():
    teacher = tiny(4)
    same = copy.deepcopy(teacher)
    cut, _ = cut_layers(teacher, 2, "first")
    b = batch()
    t_cap, s_cap, c_cap = QKVCapture(teacher), QKVCapture(same), QKVCapture(cut)
    teacher(**b), same(**b), cut(**b)
    t_qkv = t_cap.take()
    same_loss = float(minilm_loss(t_qkv, s_cap.take(), b["attention_mask"], 2).detach())
    cut_loss = float(minilm_loss(t_qkv, c_cap.take(), b["attention_mask"], 2).detach())
    assert same_loss == pytest.approx(0.0, abs=1e-7)
    assert cut_loss > 1e-5  # random init: relations near uniform, yet the cut model's differ


def test_minilm_maps_other_hidden_sizes_through_relation_heads_and_refuses_what_it_cannot_map():
    teacher = tiny(2, hidden=32, heads=2)
    narrow = tiny(1, hidden=16, heads=4, seed=1)
    wide = tiny(1, hidden=48, heads=3, seed=1)
    assert check_minilm(teacher, tiny(1, hidden=16, heads=2), None) == 2  # same heads: MiniLM v1
    assert check_minilm(teacher, narrow, 4) == 4  # MiniLMv2 re-split: 32 and 16 both split into 4
    with pytest.raises(UserError, match="student has 4 attention heads, the teacher 2"):
        check_minilm(teacher, narrow, None)
    with pytest.raises(UserError, match="wider than the teacher .*does not split into relation_heads=8"):
        check_minilm(teacher, tiny(1, hidden=36, heads=3, seed=1), 8)
    b = batch()
    t_cap, s_cap = QKVCapture(teacher), QKVCapture(wide)
    teacher(**b), wide(**b)
    assert float(minilm_loss(t_cap.take(), s_cap.take(), b["attention_mask"], 2).detach()) > 0  # 32 vs 48, 2 heads


# ----------------------------------------------------------------------------------------- KD learns more


def _train(objective, student, data, steps: int = 120):
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    for step in range(steps):
        i = (step * 32) % len(data["input_ids"])
        b = {k: v[i:i + 32] for k, v in data.items()}
        loss, _ = objective(student, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student.eval()


def test_the_student_matches_the_teacher_better_with_kd_than_from_its_hard_labels():
    # A 3-class teacher whose labels are its own argmax: the hard labels hold one bit of what the teacher
    # knows, its soft labels the whole distribution. Both students see the same inputs and steps.
    teacher = tiny(2, labels=3)
    with torch.no_grad():
        teacher.classifier.weight.mul_(4.0)  # spread the teacher's logits: confident but not one-hot
    data = batch(256, 10, seed=1)
    held_out = batch(128, 10, seed=2)
    with torch.no_grad():
        data["labels"] = teacher(**data).logits.argmax(-1)
        target = soft_labels(teacher(**held_out).logits, 1.0)

    def gap(student):
        with torch.no_grad():
            log_q = torch.log_softmax(student(**held_out).logits, -1)
        return float((target * (target.clamp_min(1e-12).log() - log_q)).sum(-1).mean())

    hard_only = _train(DistillObjective(None, tiny(1, seed=5, labels=3), Weights(kd=0, minilm=0, hard=1)),
                       tiny(1, seed=5, labels=3), data)
    student = tiny(1, seed=5, labels=3)
    kd = _train(DistillObjective(teacher, student, Weights(kd=1, minilm=0, hard=0, temperature=1.0)), student, data)
    assert gap(kd) < 0.5 * gap(hard_only), (gap(kd), gap(hard_only))


def test_kd_loss_is_zero_at_the_teacher_and_t_squared_scaled():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    for t in (1.0, 2.0, 4.0):
        assert float(kd_loss(logits, soft_labels(logits, t), t)) == pytest.approx(0.0, abs=1e-5)
    other = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]])
    for t in (1.0, 3.0):
        p = soft_labels(logits, t)
        kl = float((p * (p.log() - torch.log_softmax(other / t, -1))).sum(-1).mean())
        assert float(kd_loss(other, p, t)) == pytest.approx(t**2 * kl, rel=1e-5)


def test_the_objective_weighs_its_terms_and_skips_the_teacher_without_teacher_terms():
    teacher, student = tiny(2), tiny(1, seed=3)
    b = {**batch(), "labels": torch.tensor([0, 1] * 8)}
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    full = DistillObjective(teacher, student, Weights(kd=1, minilm=1, hard=1, heads=2))
    loss, _ = full(student, b)
    assert set(full.last) == {"kd", "minilm", "hard"} and len(calls) == 1
    assert float(loss.detach()) == pytest.approx(sum(full.last.values()), rel=1e-5)
    full.close()
    none = DistillObjective(None, student, Weights(kd=0, minilm=0, hard=1))
    none(student, b)
    assert set(none.last) == {"hard"} and len(calls) == 1


# ----------------------------------------------------------------------------------------- derived runs


@pytest.fixture
def tiny_setup(tmp_path, tokenizer):
    """A 4-layer tiny teacher model folder with the default tokenizer, and the tiny SST-2 folder."""
    from conftest import TINY
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    path = tmp_path / "tiny4"
    AutoModelForSequenceClassification.from_config(BertConfig(**{**TINY, "num_hidden_layers": 4})).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tiny_base(path, make_tiny_glue(tmp_path / "glue"))


def test_grid_distill_steps_train_once_and_record_students_beside_their_teacher(tmp_path, tiny_setup):
    from nluforge.experiments.pipeline import run_cell
    from nluforge.experiments.servable import load_servable
    from nluforge.results import iter_results

    unlabeled = tmp_path / "unlabeled.tsv"
    unlabeled.write_text("sentence\nan unlabeled line\nanother one here\n")
    steps = [{"student": "layers:2", "layer_pick": "last", "unlabeled_file": str(unlabeled)},
             {"student": "layers:1", "kd_weight": 0, "minilm_weight": 0},
             {"student": "layers:1", "assistant": "layers:2"}]
    parent = run_cell(resolve(tiny_setup, {"distill": steps}), tmp_path / "results")
    assert parent.run_info.status == "completed"
    children = [r for _, r in iter_results(tmp_path / "results") if r.run_info.parent == parent.run_info.id]
    assert sorted(c.run_info.step for c in children) == ["distill:layers:1", "distill:layers:1", "distill:layers:2"]
    assert len(children) == 3 and all(c.run_info.status == "completed" for c in children), \
        [c.run_info.error for c in children]
    by = {(c.meta["distill"]["student"], c.meta["distill"]["assistant"], c.meta["distill"]["weights"]["kd"]): c
          for c in children}
    cut = by[("layers:2", None, 1.0)]
    assert cut.meta["distill"]["picked_layers"] == [2, 3] and cut.meta["distill"]["unlabeled"] == 2
    assert cut.meta["distill"]["train_examples"] == 32
    assert cut.meta["parent"]["run"] == parent.run_info.id
    assert cut.meta["parent"]["metrics"] == parent.metrics["trained"]
    assert cut.cost.total_params < parent.cost.total_params
    assert cut.meta["distill"]["vs_teacher"]["params"] == pytest.approx(
        parent.cost.total_params / cut.cost.total_params, rel=1e-3)
    assisted = by[("layers:1", "layers:2", 1.0)]
    assert [s["phase"] for s in assisted.meta["distill"]["stages"]] == ["assistant", "student"]
    assert assisted.meta["distill"]["stages"][1]["teacher"] == "assistant"
    assert "validation" in assisted.meta["distill"]["stages"][0]["metrics"]
    # each student reloads as a plain classifier and reproduces its own recorded predictions
    for child in children:
        s = load_servable(tmp_path / "results" / child.run_info.id)
        assert s.step.startswith("distill:layers:") and s.model.config.num_hidden_layers in (1, 2)
        rows = [json.loads(line) for line in (s.run_dir / "predictions.jsonl").read_text().splitlines()]
        from nluforge.experiments.data import encode_splits
        from nluforge.experiments.state import Prepared
        from nluforge.tasks import load_task

        splits = load_task("sst2", data_dir=s.cfg.data.data_dir, splits=["validation"]).splits
        prep = Prepared(s.cfg, s.spec, dict(splits), s.tokenizer, s.model, s.method, s.method_cfg, [])
        enc = encode_splits(prep, ["validation"])["validation"]
        with torch.no_grad():
            from nluforge.eval.predict import predict

            logits = predict(s.model, enc, batch_size=8, pad_id=0, regression=False)
        assert torch.allclose(torch.tensor(logits), torch.tensor([r["logits"] for r in rows]), atol=1e-4)
    # the report lists each student as a variant of its teacher
    from nluforge.report import build_report

    text = build_report(tmp_path / "results", tmp_path / "report").markdown.read_text()
    assert "full → distill:layers:2" in text and "full → distill:layers:1" in text
    # both phases of the assisted run trained through the loop and logged under their phase
    log = [json.loads(line) for line in (tmp_path / "results" / assisted.run_info.id / "log.jsonl").read_text().splitlines()]
    assert {"assistant", "student"} <= {rec.get("phase") for rec in log}


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture
def teacher_run(tmp_path, tiny_setup):
    from nluforge.experiments.pipeline import run_cell

    result = run_cell(resolve(tiny_setup), tmp_path / "results")
    assert result.run_info.status == "completed", result.run_info.error
    return tmp_path / "results" / result.run_info.id


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    import sys

    from nluforge.cli.app import main

    monkeypatch.setattr(sys, "argv", ["nluforge", *args])
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    for needle in needles:
        assert needle in last, last


def test_cli_distills_a_run_into_a_sibling_and_prints_the_comparison(monkeypatch, capsys, teacher_run):
    from nluforge.results import read_result

    code, out, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher_run), "--student", "layers:1",
                             "-p", "layer_pick=first", "-p", "max_steps=2", "-p", "temperature=4")
    assert code == 0, err
    child = Path(out.strip().splitlines()[-1])
    assert child.parent == teacher_run.parent and child.name.startswith(f"{teacher_run.name.split('--')[0]}-distill")
    result = read_result(child)
    assert result.run_info.parent == teacher_run.name and result.run_info.step == "distill:layers:1"
    assert result.meta["distill"]["picked_layers"] == [0] and result.meta["distill"]["temperature"] == 4.0
    assert result.meta["distill"]["stages"][0]["steps"] == 2
    assert "validation accuracy" in out and "latency_ms_bs32" not in err


@pytest.mark.parametrize(("student", "params", "needles"), [
    ("layers:0", [], ["layers:0", "K must be at least 1"]),
    ("layers:9", [], ["layers:9 needs 1 <= K <= 4"]),
    ("layers:2", ["layer_pick=sideways"], ["layer_pick", "sideways"]),
    ("layers:2", ["assistant=layers:7"], ["layers:7 needs 1 <= K <= 4"]),
    ("layers:3", ["layer_pick=every_other"], ["every_other gives at most 2 of 4 layers"]),
])
def test_cli_bad_students_fail_with_one_line_before_writing(monkeypatch, capsys, teacher_run, student, params,
                                                            needles):
    before = sorted(p.name for p in teacher_run.parent.iterdir())
    args = [a for p in params for a in ("-p", p)]
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher_run), "--student", student, *args)
    assert_one_line_error(code, err, *needles)
    assert sorted(p.name for p in teacher_run.parent.iterdir()) == before  # no half-written derived run


def test_cli_a_wider_student_that_minilm_cannot_map_fails_and_runs_without_minilm(monkeypatch, capsys, tmp_path,
                                                                                  teacher_run, tokenizer):
    from transformers import AutoModelForSequenceClassification, BertConfig

    wide = tmp_path / "wide"
    config = BertConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=64,
                        max_position_embeddings=128, vocab_size=30522)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(wide)
    tokenizer.save_pretrained(wide)
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher_run), "--student", str(wide))
    assert_one_line_error(code, err, "wider than the teacher (hidden 32)", "3 attention heads, the teacher 2",
                          "relation_heads")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher_run), "--student", str(wide),
                           "-p", "relation_heads=5")
    assert_one_line_error(code, err, "does not split into relation_heads=5")
    code, out, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher_run), "--student", str(wide),
                             "-p", "relation_heads=4", "-p", "max_steps=1")  # 32 and 48 both split into 4 heads
    assert code == 0, err


def test_cli_a_teacher_without_a_model_fails_with_one_line(monkeypatch, capsys, tmp_path, teacher_run):
    import shutil

    shutil.rmtree(teacher_run / "model")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher_run), "--student", "layers:1")
    assert_one_line_error(code, err, "has no saved model")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(tmp_path), "--student", "layers:1")
    assert_one_line_error(code, err, "not a run directory")


def test_a_regression_teacher_refuses_a_temperature_and_distils_by_mse_without_one(monkeypatch, capsys, tmp_path,
                                                                                   tiny_model_dir, glue_dir):
    from nluforge.experiments.pipeline import run_cell
    from nluforge.results import read_result

    cfg = resolve({"task": "stsb", "model": str(tiny_model_dir(num_labels=1)), "method": "full",
                   "data": {"data_dir": str(glue_dir), "max_train_samples": 24, "max_eval_samples": 16,
                            "max_length": 32},
                   "train": {"max_steps": 1, "batch_size": 8, "num_threads": 1},
                   "eval": {"advglue": False, "latency": False, "baselines": False}})
    teacher = tmp_path / "results" / run_cell(cfg, tmp_path / "results").run_info.id
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher), "--student", "layers:1",
                           "-p", "temperature=2")
    assert_one_line_error(code, err, "regression", "drop -p temperature")
    code, out, err = run_cli(monkeypatch, capsys, "distill", "--teacher", str(teacher), "--student", "layers:1",
                             "-p", "max_steps=2")
    assert code == 0, err
    result = read_result(Path(out.strip().splitlines()[-1]))
    assert result.meta["distill"]["temperature"] is None and "pearson" in result.metrics["trained"]["validation"]


@pytest.mark.slow
@pytest.mark.integration
def test_a_real_teacher_distils_into_a_three_layer_student(tmp_path, sst2_run):
    """The session's real SST-2 run as teacher: a layers:3 student (teacher layers 1, 3, 5) trained 20 steps
    with KD + MiniLM + hard labels is well above chance, smaller, and reloads as the run's model."""
    import shutil

    from nluforge.experiments.derived import prepare_derived
    from nluforge.experiments.pipeline import execute
    from nluforge.experiments.servable import load_servable

    results, parent = sst2_run
    teacher = tmp_path / parent.run_info.id
    shutil.copytree(results / parent.run_info.id, teacher)
    from nluforge.experiments.config import read_run_config

    cfg = dataclasses.replace(read_run_config(teacher), distill=[{"student": "layers:3", "max_steps": 20,
                                                                   "max_train_samples": 640}])
    result = execute(prepare_derived(cfg, teacher), tmp_path / cfg.run_id(), show_progress=False)
    assert result.run_info.status == "completed"
    d = result.meta["distill"]
    assert d["picked_layers"] == [1, 3, 5] and d["stages"][0]["steps"] == 20 and d["relation_heads"] == 12
    acc = result.metrics["trained"]["validation"]["accuracy"]
    assert acc > 0.6, acc  # chance (majority class) is 0.51 on SST-2 dev
    assert "advglue_sst2" in result.metrics["trained"]
    assert result.cost.total_params < 0.85 * parent.cost.total_params  # 3 of 6 layers; embeddings are half
    assert load_servable(tmp_path / cfg.run_id()).model.config.num_hidden_layers == 3


def test_grid_distill_axis_expands_to_one_training_and_one_child_per_step_with_stable_ids():
    import yaml

    from nluforge.experiments.grid import parse_grid

    cells = parse_grid(yaml.safe_load("""
grid:
  method: [full, lora]
  distill: [[{student: "layers:3"}, {student: "layers:2", layer_pick: first}]]
""")).cells()
    trained = [c for c in cells if c.config.step() is None]
    children = [c for c in cells if c.config.step() is not None]
    assert [c.config.method for c in trained] == ["full", "lora"]
    assert sorted((c.config.method, c.config.step_label()) for c in children) == [
        ("full", "distill:layers:2"), ("full", "distill:layers:3"), ("lora", "distill:layers:2"),
        ("lora", "distill:layers:3")]
    child = children[0].config
    assert child.parent().run_id() == trained[0].config.run_id() and "-distill-layers-" in child.run_id()
    assert children[0].labels["distill"] in ("layers:3", "layers:2")
    # a config without distill steps keeps the run id it had before the key existed
    assert resolve({"task": "sst2"}).run_id() == "sst2-default-full-s42--2b012596"
    with pytest.raises(UserError, match="unknown key 'distill\\[0\\].studnet'"):
        from nluforge.experiments.sections import resolve_sections

        resolve_sections(resolve({"distill": [{"studnet": "layers:2"}]}))
