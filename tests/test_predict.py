"""Predicting and scoring without the command line: length-sorted batches restore input order, label
maps, per-group metrics, eval records, prediction files, and a custom run's recorded task spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nluforge.core.errors import UserError
from nluforge.eval.records import eval_record, file_eval_name, read_evals, safe_name, write_eval
from nluforge.eval.scoring import build_mapping, file_spec, group_metrics, parse_label_map, softmax
from nluforge.tasks import TaskSpec, get_task
from nluforge.tasks.custom import read_rows, read_task_record, run_task_spec, write_task_record

NLI = ("entailment", "neutral", "contradiction")


def test_length_sorted_batches_give_each_row_its_own_logits(tokenizer):
    """Batched, length-sorted, padded prediction equals predicting each row alone, in input order."""
    from conftest import make_tiny

    from nluforge.eval.predict import predict_texts

    model = make_tiny("bert", 3, seed=1)
    with torch.no_grad():  # a random head's logits barely differ between rows: spread them out
        model.classifier.weight.mul_(1000)
    rng = np.random.default_rng(0)
    words = ["good", "film", "the", "plot", "was", "very", "bad", "actor", "and", "story"]
    texts = [(" ".join(rng.choice(words, size=int(n))),) for n in rng.integers(1, 30, size=37)]
    batched = predict_texts(model, tokenizer, texts, max_length=64, batch_size=8, regression=False)
    alone = np.concatenate([predict_texts(model, tokenizer, [t], max_length=64, batch_size=1, regression=False)
                            for t in texts])
    assert batched.shape == (37, 3)
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-3)
    shuffled = alone[np.random.default_rng(1).permutation(len(alone))]
    assert not np.allclose(batched, shuffled, rtol=1e-4, atol=1e-3)  # rows differ: order is really checked


def test_regression_predictions_are_one_value_per_row(tokenizer):
    from conftest import make_tiny

    from nluforge.eval.predict import predict_texts

    pairs = [("a man is eating", "a person eats food today"), ("dogs", "cats are running")] * 3
    out = predict_texts(make_tiny("bert", 1), tokenizer, pairs, max_length=32, batch_size=4, regression=True)
    assert out.shape == (6,) and out[0] == pytest.approx(out[2]) and out[0] != pytest.approx(out[1])


def test_label_map_forms(tmp_path):
    assert parse_label_map(["positive=pos, negative = neg"]) == {"positive": "pos", "negative": "neg"}
    (tmp_path / "m.json").write_text(json.dumps({"neutral": "non-entailment", "contradiction": "non-entailment",
                                                 "entailment": "entailment"}))
    assert parse_label_map([str(tmp_path / "m.json")])["neutral"] == "non-entailment"
    assert parse_label_map(None) is None
    with pytest.raises(UserError, match="twice"):
        parse_label_map(["a=b", "a=c"])
    with pytest.raises(UserError, match="model_label=file_label"):
        parse_label_map(["a=b,c"])


def test_merging_map_scores_accuracy_on_the_merged_labels():
    mapping = build_mapping(NLI, {"entailment": "entailment", "neutral": "non-entailment",
                                  "contradiction": "non-entailment"})
    assert mapping.target_labels == ("entailment", "non-entailment") and not mapping.one_to_one
    preds = mapping.map_predictions(np.array([0, 1, 2, 2, 0]))
    assert preds.tolist() == [0, 1, 1, 1, 0]
    labels = mapping.target_ids(["entailment", "entailment", "non-entailment", "non-entailment",
                                 "non-entailment"], "f.csv")
    spec = file_spec(get_task("mnli"), mapping)
    assert spec.metrics == ("accuracy", "macro_f1")
    groups = group_metrics(spec, preds, labels, ["x", "y", "x", "y", "y"], "src")
    assert groups["values"]["x"] == {"n": 2, "accuracy": 1.0, "macro_f1": 1.0}
    assert groups["values"]["y"]["n"] == 3 and groups["values"]["y"]["accuracy"] == pytest.approx(1 / 3)


def test_mapping_onto_a_task_keeps_its_label_order():
    """An MNLI model scored on RTE: RTE's own ids (entailment=0, not_entailment=1) are the target."""
    rte = get_task("rte").label_names
    mapping = build_mapping(NLI, {"entailment": "entailment", "neutral": "not_entailment",
                                  "contradiction": "not_entailment"}, rte)
    assert mapping.to_target == (0, 1, 1)
    with pytest.raises(UserError, match="not a label of the data"):
        build_mapping(NLI, {"entailment": "yes", "neutral": "no", "contradiction": "no"}, rte)
    with pytest.raises(UserError, match="not_entailment"):  # no map: RTE's label is no MNLI label
        build_mapping(NLI, None, rte)


def test_identity_mapping_accepts_class_ids_and_names_unknown_labels():
    mapping = build_mapping(("negative", "positive"), None)
    assert mapping.target_ids(["1", "negative", "0"], "f").tolist() == [1, 0, 0]
    with pytest.raises(UserError, match="'meh'.*can never produce"):
        mapping.target_ids(["positive", "meh"], "f.csv")
    with pytest.raises(UserError, match="does not map the model label"):
        build_mapping(("negative", "positive"), {"positive": "pos"})
    with pytest.raises(UserError, match="every model label"):
        build_mapping(("negative", "positive"), {"positive": "x", "negative": "x"})
    assert build_mapping(("negative", "positive"), {"1": "pos", "0": "neg"}).target_labels == ("neg", "pos")


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1000.0, 0.0, -5.0], [0.1, 0.2, 0.3]], dtype=np.float32))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(1.0) and p[1].argmax() == 2


def test_eval_records_are_named_and_replaced(tmp_path):
    assert file_eval_name("data/my reviews.test.csv.gz") == "file-my_reviews.test"
    assert safe_name("mnli-validation_matched") == "mnli-validation_matched"
    with pytest.raises(UserError):
        safe_name("///")
    first = eval_record("x", {"kind": "file", "file": "/a.csv"}, 3, {"accuracy": 0.5})
    write_eval(tmp_path, first)
    write_eval(tmp_path, eval_record("x", {"kind": "file", "file": "/a.csv"}, 3, {"accuracy": 1.0}))
    records = read_evals(tmp_path)
    assert len(records) == 1 and records[0]["metrics"] == {"accuracy": 1.0}
    assert set(records[0]) == {"name", "created", "source", "n", "metrics", "label_map", "groups"}
    assert [p.name for p in (tmp_path / "evals").iterdir()] == ["x.json"]  # no temp files left


def test_prediction_rows_and_files(tmp_path):
    from nluforge.eval.prediction_files import check_output, prediction_rows, write_predictions

    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    rows = prediction_rows(logits, ("neg", "pos"), ["a7", "b9"], "id")
    assert [r["label"] for r in rows] == ["neg", "pos"] and rows[1]["id"] == "b9"
    assert sum(rows[0]["probs"].values()) == pytest.approx(1.0, abs=1e-6)
    out = tmp_path / "p.tsv"
    write_predictions(out, rows, check_output(out, inputs=tmp_path / "in.csv", overwrite=False))
    assert out.read_text().splitlines()[0] == "index\tid\tlabel\tp_neg\tp_pos"
    with pytest.raises(UserError, match="exists"):
        check_output(out, inputs=tmp_path / "in.csv", overwrite=False)
    with pytest.raises(UserError, match="does not exist"):
        check_output(tmp_path / "no" / "p.csv", inputs=tmp_path / "in.csv", overwrite=False)
    assert prediction_rows(np.array([0.25, 1.5]), None, None, None) == [{"index": 0, "score": 0.25},
                                                                         {"index": 1, "score": 1.5}]


def test_read_rows_picks_glue_columns_and_ids(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("idx\tsentence1\tsentence2\tlabel\n7\ta b\tc d\tentailment\n9\te\tf\tneutral\n")
    rows = read_rows(path, get_task("mnli"), need_labels=True)  # canonical premise/hypothesis → GLUE names
    assert rows.texts == [("a b", "c d"), ("e", "f")] and rows.ids == ["7", "9"] and rows.id_field == "idx"
    assert rows.labels == ["entailment", "neutral"]
    with pytest.raises(UserError, match="no column 'gold'"):
        read_rows(path, get_task("mnli"), label_field="gold", need_labels=True)


def test_custom_run_spec_from_record_or_train_file(tmp_path):
    spec = TaskSpec("reviews", ("review",), ("bad", "good", "meh"), ("accuracy", "macro_f1"), "accuracy")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_task_record(model_dir, spec)
    assert read_task_record(model_dir) == spec
    got = run_task_spec(model_dir, train_file=None, text_fields=None, label_field=None)
    assert got.label_names == ("bad", "good", "meh") and got.text_fields == ("review",)
    (model_dir / "task.json").unlink()  # a run saved before task.json: infer again from its train file
    train = tmp_path / "reviews.train.csv"
    train.write_text("review,stars\nfine,meh\nawful,bad\ngreat,good\n")
    again = run_task_spec(model_dir, train_file=str(train), text_fields=["review"], label_field="stars")
    assert again.label_names == ("bad", "good", "meh")
    train.unlink()
    with pytest.raises(UserError, match="train file .* is gone"):
        run_task_spec(model_dir, train_file=str(train), text_fields=["review"], label_field="stars")
