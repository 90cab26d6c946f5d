"""The attack engine and recipes (tiny bag-of-words victims), the temperature sweep, the cache,
AdvGLUE parsing, FreeLB/PGD through the loss seam, and the one-line errors of bad input."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nluforge.core.errors import UserError

WORDNET = Path("/usr/share/wordnet/data.noun").is_file()
TEXTS = [("a gripping , funny and moving film about friendship and loyalty .",),
         ("the plot is dull and the acting is terrible from start to end .",),
         ("an utterly charming little movie with great performances all round .",),
         ("it never quite comes together as a story , sadly .",),
         ("smart , sharp and surprisingly tender comedy .",),
         ("a tedious , overlong mess that wastes its cast .",)]


class BoW(torch.nn.Module):
    """A bag-of-words classifier over the default vocabulary: logits = scale * sum of token weights.
    Counts the rows it scores (the attack's model queries)."""

    def __init__(self, vocab: int, scale: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(vocab, 2, generator=g))
        self.scale, self.rows = scale, 0

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        self.rows += len(input_ids)
        return SimpleNamespace(logits=(self.w[input_ids] * attention_mask[..., None]).sum(1) * self.scale)  # (B, 2)


def _labels(model, tokenizer, texts):
    """Labels the model gets right for all but the last text (which becomes a skipped example)."""
    from nluforge.attack.engine import Victim

    preds = Victim(model, tokenizer).logits(texts).argmax(1).tolist()
    return [p for p in preds[:-1]] + [1 - preds[-1]]


def _attack(recipe, model, tokenizer, texts, labels, **options):
    from nluforge.attack.sweep import attack
    from nluforge.experiments.attacks import recipe_config

    return attack(model, tokenizer, texts, labels, recipe, recipe_config(recipe, options), cache_dir=None)


RECIPES = ["deepwordbug", pytest.param("pwws", marks=pytest.mark.skipif(not WORDNET, reason="make wordnet")),
           "bert_attack"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_respects_constraints_and_success_flips(recipe, tokenizer):
    from nluforge.attack.engine import Victim
    from nluforge.attack.words import STOPWORDS, Text

    model = BoW(len(tokenizer))
    pairs = [("the premise stays exactly as written here .", t[0]) for t in TEXTS]
    labels = _labels(model, tokenizer, pairs)
    opts = {"max_perturbed": 0.25, **({"k": 16} if recipe == "bert_attack" else {})}
    outcomes = _attack(recipe, model, tokenizer, pairs, labels, **opts).outcomes[1.0]
    assert outcomes[-1].status == "skipped" and outcomes[-1].queries == 1
    assert any(o.status == "success" for o in outcomes)
    victim = Victim(model, tokenizer)
    for o in outcomes:
        assert o.perturbed[0] == o.original[0]  # the premise is left alone
        before, after = Text(o.original).words(), Text(o.perturbed).words()
        assert len(before) == len(after)
        changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
        assert len(changed) <= math.floor(0.25 * len(before))
        assert not any(before[i].lower() in STOPWORDS for i in changed)
        if o.status == "success":
            assert changed and o.perturbed_words == len(changed)
            assert int(victim.logits([o.perturbed]).argmax()) != o.label  # re-queried: really flipped


def test_query_count_is_the_rows_the_model_scored(tokenizer):
    model = BoW(len(tokenizer))
    labels = _labels(model, tokenizer, TEXTS)
    model.rows = 0
    outcomes = _attack("deepwordbug", model, tokenizer, TEXTS, labels).outcomes[1.0]
    assert model.rows == sum(o.queries for o in outcomes) > len(TEXTS)


def test_beam_search_finds_successes(tokenizer):
    model = BoW(len(tokenizer))
    labels = _labels(model, tokenizer, TEXTS)
    sweep = _attack("deepwordbug", model, tokenizer, TEXTS, labels, search="beam", beam_width=3)
    assert sweep.metrics()["successes"] >= 1


def test_temperature_sweep_removes_the_illusion_of_robustness(tokenizer):
    """Logits x1000 saturate softmax at T=1: no swap raises the score and the attack fails; a large T
    restores the scores, and the sweep reports the worse accuracy with its T."""
    model = BoW(len(tokenizer), scale=1000.0)
    labels = _labels(model, tokenizer, TEXTS)
    sweep = _attack("deepwordbug", model, tokenizer, TEXTS, labels, temperatures=[1, 1000])
    at1, at1000 = sweep.metrics_at(1.0), sweep.metrics_at(1000.0)
    assert at1["attack_success_rate"] < at1000["attack_success_rate"]
    m = sweep.metrics()
    assert m["worst_temperature"] == 1000.0
    assert m["accuracy_under_attack"] == at1000["accuracy_under_attack"] < m["accuracy_under_attack_t1"]


def test_cache_hit_on_rerun(tokenizer, tmp_path):
    from nluforge.attack.sweep import attack
    from nluforge.experiments.attacks import recipe_config

    model = BoW(len(tokenizer))
    labels = _labels(model, tokenizer, TEXTS)
    cfg = recipe_config("deepwordbug", {})
    first = attack(model, tokenizer, TEXTS, labels, "deepwordbug", cfg, cache_dir=tmp_path)
    model.rows = 0
    again = attack(model, tokenizer, TEXTS, labels, "deepwordbug", cfg, cache_dir=tmp_path)
    assert again.cache_hits == len(TEXTS) and model.rows == 0
    assert [o.perturbed for o in again.outcomes[1.0]] == [o.perturbed for o in first.outcomes[1.0]]
    with torch.no_grad():
        model.w.add_(0.01)  # another model: another cache entry
    assert attack(model, tokenizer, TEXTS, labels, "deepwordbug", cfg, cache_dir=tmp_path).cache_hits == 0


def test_result_table_has_textattack_rows(tokenizer):
    from nluforge.attack.sweep import result_table

    model = BoW(len(tokenizer))
    text = result_table(_attack("deepwordbug", model, tokenizer, TEXTS, _labels(model, tokenizer, TEXTS)).metrics())
    for row in ("Number of successful attacks:", "Accuracy under attack:", "Attack success rate:",
                "Average perturbed word %:", "Avg num queries:"):
        assert row in text


@pytest.mark.skipif(not WORDNET, reason="make wordnet")
def test_wordnet_synonyms_and_morphy():
    from nluforge.attack.wordnet import load_wordnet

    wn = load_wordnet()
    assert "film" in wn.synonyms("movies") and "amusing" in wn.synonyms("funny")
    assert "good" not in wn.synonyms("good") and all("_" not in s for s in wn.synonyms("run"))


def test_advglue_dev_file_counts_and_labels(advglue_file):
    from nluforge.tasks import get_task
    from nluforge.tasks.advglue import load_advglue

    counts = {"advglue_sst2": 148, "advglue_qqp": 78, "advglue_mnli": 121, "advglue_mnli_mm": 162,
              "advglue_qnli": 148, "advglue_rte": 81}
    total = 0
    for name, n in counts.items():
        spec = get_task(name)
        split = load_advglue(spec, advglue_file)
        assert len(split.texts) == n and len(split.texts[0]) == len(spec.text_fields)
        assert set(split.labels) <= set(range(spec.num_labels))
        total += n
    assert total == 738


# ---- bad input: one line each --------------------------------------------------------------------------


def test_unknown_recipe_and_option_are_one_line_errors():
    from nluforge.experiments.attacks import recipe_step

    with pytest.raises(UserError, match="unknown attack 'deepwordbog' \\(did you mean 'deepwordbug'\\?\\)"):
        recipe_step("deepwordbog", {})
    with pytest.raises(UserError, match="unknown key .*mlm"):
        recipe_step("pwws", {"mlm": "x"})


def test_cli_unknown_recipe_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nluforge", "attack", str(tmp_path), "--recipe", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown attack 'nope'" in proc.stderr


def test_missing_wordnet_says_how_to_get_it(tmp_path):
    from nluforge.attack.wordnet import wordnet_dir

    with pytest.raises(UserError, match="make wordnet"):
        wordnet_dir(str(tmp_path))


def test_attack_on_regression_task_is_refused():
    from nluforge.experiments.attacks import check_attackable
    from nluforge.tasks import get_task

    with pytest.raises(UserError, match="regression task"):
        check_attackable(get_task("stsb"), None, {"validation": None})


def test_task_without_advglue_set(advglue_file):
    from nluforge.tasks import get_task
    from nluforge.tasks.advglue import load_advglue

    with pytest.raises(UserError, match="unknown task 'advglue_cola'"):
        get_task("advglue_cola")
    assert not get_task("cola").advglue  # CoLA has no AdvGLUE set
    with pytest.raises(UserError, match="has no AdvGLUE set 'cola'"):
        load_advglue(_with_key(get_task("advglue_sst2"), "cola"), advglue_file)


def _with_key(spec, key):
    import dataclasses

    return dataclasses.replace(spec, source=dataclasses.replace(spec.source, advglue_key=key))


# ---- adversarial training through the loss seam ---------------------------------------------------------


def _batch(tokenizer):
    enc = tokenizer(["a fine film", "a dull and lifeless mess of a movie"], padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor([1, 0])}


def _loss_and_embedding_grad(model, loss_fn, batch):
    from nluforge.train.adversarial import input_embeddings

    model.zero_grad()
    torch.manual_seed(0)
    loss, _ = loss_fn(model, batch)
    loss.backward()
    return float(loss), input_embeddings(model).weight.grad.clone()


@pytest.mark.parametrize("method", ["full", "prompt_based"])
@pytest.mark.parametrize("adv", ["freelb", "pgd"])
def test_adversarial_loss_changes_loss_and_embedding_gradients(method, adv, tokenizer):
    from conftest import make_tiny

    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task
    from nluforge.train.adversarial import adversarial_loss
    from nluforge.train.loop import default_loss

    head = "masked_lm" if method == "prompt_based" else "seq_cls"
    model = method_module(method).adapt(make_tiny("bert", head=head), method_config(method), tokenizer=tokenizer,
                                        task=get_task("sst2"))
    model.train()
    for m in model.modules():  # no dropout: the difference must come from the perturbation
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = _batch(tokenizer)
    clean_loss, clean_grad = _loss_and_embedding_grad(model, default_loss, batch)
    fn = adversarial_loss(adv, steps=3, alpha=0.5, epsilon=2.0)
    adv_loss, adv_grad = _loss_and_embedding_grad(model, fn, batch)
    assert adv_loss > clean_loss  # the ascent found a worse point in the epsilon ball
    assert not torch.allclose(adv_grad, clean_grad)
    # the hook is gone afterwards: plain forward passes are unchanged
    again, _ = _loss_and_embedding_grad(model, default_loss, batch)
    assert again == pytest.approx(clean_loss)


def test_prompt_model_refuses_inputs_embeds_instead_of_dropping_it(tokenizer):
    from conftest import make_tiny

    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    model = method_module("prompt_based").adapt(make_tiny("bert", head="masked_lm"), method_config("prompt_based"),
                                                tokenizer=tokenizer, task=get_task("sst2"))
    b = _batch(tokenizer)
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], inputs_embeds=torch.zeros(2, 3, 8))


def test_adversarial_config_is_strict_and_leaves_old_run_ids_alone():
    from nluforge.experiments.config import resolve

    base = {"task": "sst2", "model": "default", "method": "full"}
    plain = resolve(base)
    assert resolve({**base, "train": {"adversarial": {"method": "none"}}}).run_id() == plain.run_id()
    assert resolve({**base, "train": {"adversarial": {"method": "freelb"}}}).run_id() != plain.run_id()
    with pytest.raises(UserError, match="adversarial"):
        resolve({**base, "train": {"adversarial": {"method": "freelb", "stepz": 2}}})
    with pytest.raises(UserError):
        resolve({**base, "train": {"adversarial": {"method": "fgsm"}}})


def test_victim_logits_keep_input_order(tokenizer):
    from nluforge.attack.engine import Victim

    model = BoW(len(tokenizer))
    v = Victim(model, tokenizer, batch_size=2)
    together = v.logits(TEXTS)
    alone = np.stack([v.logits([t])[0] for t in TEXTS])
    assert np.allclose(together, alone, atol=1e-4)


def test_grid_attack_step_records_metrics_and_reuses_the_cache(tmp_path, tiny_model_dir):
    from test_runners_real import make_tiny_glue, tiny_base

    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell

    base = tiny_base(tiny_model_dir(), make_tiny_glue(tmp_path / "glue"))
    cfg = resolve(base, {"method": "full", "attack": [{"method": "deepwordbug", "max_examples": 4}]})
    results = tmp_path / "results"
    first = run_cell(cfg, results)
    assert first.run_info.status == "completed", first.run_info.error
    m = first.metrics["attacked"]["validation"]
    assert m["deepwordbug.examples"] == 4
    assert m["deepwordbug.clean_accuracy"] >= m["deepwordbug.accuracy_under_attack"] == m["robust_accuracy"]
    lines = (results / cfg.run_id() / "attacks" / "deepwordbug.jsonl").read_text().splitlines()
    assert len(lines) == 4
    from nluforge.report.metrics import robust_metrics

    # the report reads it as "robust acc", beside the clean accuracy
    assert robust_metrics(first.metrics, "sst2")["robust acc"] == m["robust_accuracy"]
    (results / cfg.run_id() / "result.json").unlink()
    again = run_cell(cfg, results)  # same config, same trained weights: every outcome from the cache
    assert again.meta["attack"]["deepwordbug"]["cache_hits"] == 4
    assert again.metrics["attacked"] == first.metrics["attacked"]


def _write_preds(run: Path, splits: dict[str, tuple[int, int]]) -> None:
    """predictions.jsonl with ``right`` of ``n`` examples correct per split."""
    import json

    run.mkdir(parents=True)
    lines = []
    for split, (n, right) in splits.items():
        lines += [json.dumps({"split": split, "idx": i, "label": 1, "prediction": int(i < right)}) for i in range(n)]
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_advglue_summary_per_task_and_average(tmp_path):
    from nluforge.report.advglue import format_table, summarize_runs

    _write_preds(tmp_path / "sst2", {"validation": (100, 90), "advglue_sst2": (50, 20)})
    _write_preds(tmp_path / "mnli", {"validation_matched": (100, 80), "validation_mismatched": (100, 70),
                                     "advglue_mnli": (40, 10), "advglue_mnli_mm": (40, 30)})
    rows, avg = summarize_runs([tmp_path / "sst2", tmp_path / "mnli"])
    got = {r.set: (r.clean[0], r.adv[0], r.drop[0]) for r in rows}
    assert got == {"advglue_sst2": pytest.approx((0.9, 0.4, 0.5)), "advglue_mnli": pytest.approx((0.8, 0.25, 0.55)),
                   "advglue_mnli_mm": pytest.approx((0.7, 0.75, -0.05))}
    assert avg.adv[0] == pytest.approx((0.4 + 0.25 + 0.75) / 3)
    for r in rows + [avg]:
        for point, lo, hi in (r.clean, r.adv, r.drop):
            assert lo <= point <= hi and hi - lo > 0  # an interval, not a constant
    assert "advglue_mnli_mm" in format_table(rows, avg)


def test_advglue_summary_without_predictions_is_one_line(tmp_path):
    from nluforge.report.advglue import summarize_runs

    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="no predictions.jsonl"):
        summarize_runs([tmp_path / "run"])


def test_freelb_reaches_a_lora_model(tokenizer):
    """LoRA freezes the embeddings, so the perturbation must reach the trained LoRA weights through the
    frozen embedding module's output."""
    from conftest import make_tiny

    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task
    from nluforge.train.adversarial import adversarial_loss
    from nluforge.train.loop import default_loss

    model = method_module("lora").adapt(make_tiny("bert"), method_config("lora"), tokenizer=tokenizer,
                                        task=get_task("sst2"))
    model.eval()  # no dropout
    batch = _batch(tokenizer)

    def run(fn):
        model.zero_grad()
        loss, _ = fn(model, batch)
        loss.backward()
        return float(loss), [p.grad.clone() for n, p in model.named_parameters() if "lora_B" in n]  # B: A gets none at init

    clean_loss, clean = run(default_loss)
    adv_loss, adv = run(adversarial_loss("freelb", steps=3, alpha=0.5, epsilon=2.0))
    assert adv_loss > clean_loss
    assert clean and any(not torch.allclose(a, c) for a, c in zip(adv, clean, strict=True))


def test_deepwordbug_combined_scoring_orders_by_temporal_scores(tokenizer):
    model = BoW(len(tokenizer))
    labels = _labels(model, tokenizer, TEXTS)
    sweep = _attack("deepwordbug", model, tokenizer, TEXTS, labels, scoring="combined")
    won = [o for o in sweep.outcomes[1.0] if o.status == "success"]
    assert won and all(o.queries > 2 * o.words for o in won)  # prefixes and suffixes: 2(n+1) queries first


def test_bert_attack_with_a_named_masked_lm(tokenizer, tmp_path):
    from conftest import make_tiny

    path = tmp_path / "tiny-mlm"
    make_tiny("bert", head="masked_lm").save_pretrained(path)
    tokenizer.save_pretrained(path)
    model = BoW(len(tokenizer))
    labels = _labels(model, tokenizer, TEXTS)
    sweep = _attack("bert_attack", model, tokenizer, TEXTS, labels, mlm=str(path), k=32)
    assert not sweep.notes  # a real MLM: no fallback note
    assert sweep.metrics()["successes"] + sweep.metrics()["failures"] == len(TEXTS) - 1
    with pytest.raises(UserError, match="model path not found"):
        _attack("bert_attack", model, tokenizer, TEXTS, labels, mlm=str(tmp_path / "nope"))


def test_adversarial_training_refused_for_a_method_without_the_loop():
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import prepare

    cfg = resolve({"task": "sst2", "model": "default", "method": "linear_probe",
                   "train": {"adversarial": {"method": "freelb"}}})
    with pytest.raises(UserError, match="train.adversarial does not apply to linear_probe"):
        prepare(cfg)


@pytest.mark.parametrize("extra, named", [({"optimizer": "mezo"}, "the mezo optimizer"),
                                          ({"optimizer": "adahessian"}, "the adahessian optimizer"),
                                          ({"privacy": {"method": "dp_sgd", "params": {"epsilon": 8.0}}}, "DP-SGD")])
def test_adversarial_training_refused_with_an_update_step_that_skips_the_loss(extra, named):
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import prepare

    cfg = resolve({"task": "sst2", "model": "default", "method": "full",
                   "train": {"adversarial": {"method": "freelb"}}, **extra})
    with pytest.raises(UserError, match=f"train.adversarial cannot be combined with {named}") as err:
        prepare(cfg)
    assert "\n" not in str(err.value)


def test_grid_attack_step_skips_a_regression_task_with_a_note(tmp_path, tiny_model_dir, glue_dir):
    """One grid's attack step covers SST-2 and STS-B alike: the STS-B cell completes, unattacked, and says why."""
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell

    cfg = resolve({"task": "stsb", "model": str(tiny_model_dir(num_labels=1)), "method": "bitfit",
                   "data": {"data_dir": str(glue_dir), "max_train_samples": 16, "max_eval_samples": 8,
                            "max_length": 32},
                   "train": {"max_steps": 1, "batch_size": 8, "num_threads": 1},
                   "eval": {"advglue": False, "latency": False, "baselines": False},
                   "attack": [{"method": "deepwordbug", "max_examples": 4}]})
    result = run_cell(cfg, tmp_path / "results")
    assert result.run_info.status == "completed", result.run_info.error
    assert "attacked" not in result.metrics and "pearson" in result.metrics["trained"]["validation"]
    assert "regression task" in result.meta["attack"]["deepwordbug"]["skipped"]
    assert not (tmp_path / "results" / cfg.run_id() / "attacks").exists()


def test_grid_attack_step_on_an_int8_child(tmp_path, tiny_model_dir):
    """A compressed child inherits the grid's attack step: its quantized state (packed-parameter tuples) is
    hashed for the cache, differently from its parent's, and the child's outcomes are its own."""
    from test_runners_real import make_tiny_glue, tiny_base

    from nluforge.attack.sweep import model_hash
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell
    from nluforge.experiments.servable import load_servable

    base = tiny_base(tiny_model_dir(), make_tiny_glue(tmp_path / "glue"))
    cfg = resolve(base, {"method": "full", "compress": [{"method": "int8_dynamic"}],
                         "attack": [{"method": "deepwordbug", "max_examples": 4}]})
    results = tmp_path / "results"
    parent = run_cell(cfg.parent(), results)
    child = run_cell(cfg.children()[0], results)
    assert parent.run_info.status == child.run_info.status == "completed", child.run_info.error
    assert child.metrics["attacked"]["validation"]["deepwordbug.examples"] == 4
    assert child.meta["attack"]["deepwordbug"]["cache_hits"] == 0  # not the parent's cached outcomes
    hashes = {model_hash(load_servable(results / r.run_info.id).model) for r in (parent, child)}
    assert len(hashes) == 2
