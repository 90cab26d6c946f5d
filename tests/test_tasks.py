"""nluforge.tasks: specs, full-layout GLUE fixtures, metrics, sampling, custom files, errors, Hub."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nluforge.core.errors import UserError
from nluforge.tasks import (
    METRICS,
    TASKS,
    Split,
    TaskSpec,
    advglue_tasks_for,
    compute_metrics,
    get_task,
    load_spec,
    load_task,
)
from nluforge.tasks.spec import SPECS_DIR

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
FULL = FIXTURES / "glue_full"
CUSTOM = FIXTURES / "custom"
GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
ADVGLUE = ["advglue_sst2", "advglue_qqp", "advglue_mnli", "advglue_mnli_mm", "advglue_qnli", "advglue_rte"]
# Hugging Face nyu-mll/glue ClassLabel names, in id order
HF_LABELS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
    "stsb": None,
}


def one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------- specs and registry


def test_registry_lists_every_task():
    assert TASKS.names() == sorted(GLUE) + sorted(ADVGLUE)
    assert all(entry.summary and "\n" not in entry.summary for entry in TASKS.entries())


@pytest.mark.parametrize("path", sorted(SPECS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_is_valid(path):
    spec = load_spec(path)
    assert spec.name == path.stem and spec.version >= 1
    assert spec.primary_metric in spec.metrics and set(spec.metrics) <= set(METRICS)
    assert spec.description and spec.summary
    assert path.read_text().startswith("# ")  # opens with how it is used
    for name in spec.advglue:
        adv = get_task(name)
        assert adv.eval_only and adv.base == spec.name
        assert (adv.label_names, adv.text_fields) == (spec.label_names, spec.text_fields)
    if spec.eval_only:
        assert spec.source.advglue_key and spec.source.hub.startswith("AI-Secure/adv_glue:")
    else:
        cols = spec.source.glue_columns
        assert set(cols) == {*spec.text_fields, "label"} and spec.source.hub == f"nyu-mll/glue:{spec.name}"
        assert set(spec.source.glue_files) == {"train", *spec.eval_splits}


@pytest.mark.parametrize("name", GLUE)
def test_glue_label_ids_match_huggingface(name):
    spec = get_task(name)
    assert spec.label_names == HF_LABELS[name]
    assert spec.num_labels == (1 if name == "stsb" else len(HF_LABELS[name]))
    assert spec.is_regression == (name == "stsb")
    assert len(spec.id2label) == spec.num_labels


def test_spec_details():
    mnli = get_task("MNLI")
    assert mnli.text_fields == ("premise", "hypothesis")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert advglue_tasks_for(mnli) == ["advglue_mnli", "advglue_mnli_mm"]
    assert advglue_tasks_for("sst2") == ["advglue_sst2"] and advglue_tasks_for("cola") == []
    assert get_task("qnli").text_fields == ("question", "sentence")
    assert get_task("qqp").text_fields == ("question1", "question2")
    assert (get_task("cola").primary_metric, get_task("stsb").primary_metric) == ("mcc", "pearson")
    assert (
        get_task("mrpc").metrics == ("f1", "accuracy")
        and get_task("advglue_qqp").primary_metric == "accuracy"
    )
    assert hash(mnli) == hash(get_task("mnli"))  # frozen and hashable


def test_unknown_task_suggests():
    with pytest.raises(UserError) as err:
        get_task("sst")
    one_line_error(err, "unknown task 'sst'", "did you mean 'sst2'")
    with pytest.raises(UserError) as err:
        load_task("mnlii")
    one_line_error(err, "did you mean 'mnli'")


def test_user_spec_yaml_is_strict(tmp_path):
    good = tmp_path / "mysst.yaml"
    good.write_text(f"include: {SPECS_DIR / 'sst2.yaml'}\nname: mysst\nadvglue: []\n")
    spec = load_spec(good)
    assert spec.name == "mysst" and spec.label_names == ("negative", "positive")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ntext_fields: [a]\nlabel_names: [x, y]\nmetrics: [accuracy]\n"
        "primary_metric: accuracy\nlabels_typo: 1\n"
    )
    with pytest.raises(UserError) as err:
        load_spec(bad)
    one_line_error(err, "unknown key 'labels_typo'", str(bad))
    with pytest.raises(UserError) as err:
        TaskSpec("x", ("a",), ("p", "q"), ("accuracy",), "f1")
    one_line_error(err, "primary_metric 'f1'")


@pytest.mark.parametrize("templates, message", [
    (("{sentence} It was {mask} .", "{sentence} and {sentence} {mask}"), "must use {mask}, {sentence} once each"),
    (("{sentence} It was great .",), "must use {mask}, {sentence} once each"),
    (("{sentence} {mask} {", ), "not a valid pattern"),
])
def test_bad_cloze_templates_are_one_line_errors(templates, message):
    with pytest.raises(UserError) as err:
        TaskSpec("x", ("sentence",), ("p", "q"), ("accuracy",), "accuracy", template=templates[0],
                 extra_templates=templates[1:])
    one_line_error(err, "task spec 'x'", message)


def test_prompt_indices_reach_the_extra_templates():
    """prompt_based reads its patterns from the spec: index 0 is ``template``, then ``extra_templates``."""
    from nluforge.methods import method_config
    from nluforge.methods.prompt_based import _patterns_for

    sst2 = get_task("sst2")
    cfg = method_config("prompt_based", {"prompts": [2, 0, "{sentence} so {mask} ."]})
    assert _patterns_for(cfg, sst2) == [sst2.extra_templates[1], sst2.template, "{sentence} so {mask} ."]
    custom = dataclasses.replace(sst2, extra_templates=("{sentence} Really {mask} .",))
    one = method_config("prompt_based", {"prompts": [1]})
    assert _patterns_for(one, custom) == ["{sentence} Really {mask} ."]
    with pytest.raises(UserError, match="prompt index 1 is out of range"):
        _patterns_for(one, dataclasses.replace(sst2, extra_templates=()))


# ---------------------------------------------------------------- full original GLUE layouts


def test_mnli_full_layout_by_header_name():
    data = load_task("mnli", data_dir=FULL)
    assert list(data.splits) == ["train", "validation_matched", "validation_mismatched"]
    dev = data["validation_matched"]
    assert len(dev) == 4 and dev.labels == [1, 0, 0, 2]  # gold_label, not label1 (column 11)
    assert dev.texts[0] == ("The new rights are nice enough", "Everyone really likes the newest benefits ")
    assert dev.texts[2][0].startswith('"uh i don')  # quoting off: the quote stays
    mm = data["validation_mismatched"]  # .tsv.gz
    assert len(mm) == 3 and mm.labels == [2, 0, 1] and mm.source.endswith(".tsv.gz")
    assert mm.texts[1][0] == "The answer is 'yes' \"with\" quotes."
    train = data["train"]  # 12 columns: label1, gold_label
    assert len(train) == 8 and train.label_counts() == {0: 5, 1: 2, 2: 1} and not data.notes


def test_qqp_full_layout_with_quotes():
    data = load_task("qqp", data_dir=FULL)
    train, dev = data["train"], data["validation"]
    assert len(train) == 5 and train.labels == [0, 1, 1, 0, 1]
    assert train.texts[2] == (
        '"What does ""be helpful"" mean, exactly?"',
        'What does it mean to "be helpful"?',
    )
    assert len(dev) == 3 and dev.labels == [0, 1, 1] and dev.source.endswith("dev.tsv.gz")
    assert dev.texts[1][0] == '"Is ""The Hobbit"" better than ""The Lord of the Rings""?"'


def test_cola_without_header_and_task_dir_as_data_dir():
    for data_dir in (FULL, FULL / "CoLA"):  # the GLUE root, or the task folder itself
        data = load_task("cola", data_dir=data_dir)
        assert len(data["train"]) == 4 and data["train"].labels == [1, 1, 0, 0]
        assert data["validation"].texts[-1] == ('"Who did you say left?" she asked.',)  # no trailing newline
        assert data["validation"].labels == [1, 0, 1]


def test_folder_names_match_loosely(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood . \t1\nbad . \t0\n")
    data = load_task("sst2", data_dir=tmp_path, splits=["validation"])
    assert list(data.splits) == ["validation"] and data["validation"].labels == [1, 0]


def test_data_dir_from_env(monkeypatch):
    monkeypatch.setenv("NLUFORGE_DATA_DIR", str(FULL))
    assert len(load_task("qqp")["validation"]) == 3


def test_file_for_a_registered_task_reads_glue_headers():
    data = load_task("mnli", validation_file=FULL / "MNLI" / "dev_matched.tsv")
    assert list(data.splits) == ["validation_matched"] and data.eval_splits == ["validation_matched"]
    assert data.spec.eval_splits == ("validation_matched",) and data["validation_matched"].labels == [
        1,
        0,
        0,
        2,
    ]
    cola = load_task("cola", train_file=FULL / "CoLA" / "train.tsv")  # header-less, by index
    assert cola["train"].labels == [1, 1, 0, 0]


# ---------------------------------------------------------------- metrics


def test_metrics_against_hand_computed_values():
    preds, labels = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    # TP=2 FP=1 FN=1 TN=2: acc 4/6, F1 = 2*2/(2*2+1+1) = 2/3, MCC = (2*2-1*1)/sqrt(3*3*3*3) = 1/3
    got = compute_metrics(get_task("mrpc"), preds, labels)
    assert list(got) == ["f1", "accuracy"]
    assert got["f1"] == pytest.approx(2 / 3) and got["accuracy"] == pytest.approx(4 / 6)
    assert compute_metrics(get_task("cola"), preds, labels)["mcc"] == pytest.approx(1 / 3)
    # pearson of x=[1,2,3,4], y=[1,3,2,4]: cov 1.0/ (var 1.25) = 0.8; spearman equal here (ranks = values)
    stsb = compute_metrics(get_task("stsb"), [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert stsb["pearson"] == pytest.approx(0.8) and stsb["spearman"] == pytest.approx(0.8)
    assert compute_metrics(get_task("mnli"), [0, 1, 2, 2], [0, 1, 2, 0]) == {"accuracy": 0.75}


def test_metrics_edge_cases():
    stsb = get_task("stsb")
    assert compute_metrics(stsb, [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}
    custom = TaskSpec("c", ("text",), ("a", "b", "c"), ("accuracy", "macro_f1"), "accuracy")
    got = compute_metrics(custom, [0, 1, 2, 2], [0, 1, 2, 1])  # per-class F1: 1, 2/3, 2/3
    assert got["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert all(0.0 <= v <= 1.0 for v in got.values())
    with pytest.raises(ValueError):
        compute_metrics(get_task("sst2"), [0, 1], [0])
    with pytest.raises(ValueError):
        compute_metrics(get_task("sst2"), [0.3, 0.7], [0, 1])


# ---------------------------------------------------------------- sampling


def test_k_shot_balanced_and_seeded(glue_dir):
    a = load_task("rte", data_dir=glue_dir, k_shot=8, seed=1, splits=["train"])["train"]
    b = load_task("rte", data_dir=glue_dir, k_shot=8, seed=1, splits=["train"])["train"]
    c = load_task("rte", data_dir=glue_dir, k_shot=8, seed=2, splits=["train"])["train"]
    assert len(a) == 16 and a.label_counts() == {0: 8, 1: 8}
    assert a.texts == b.texts and a.labels == b.labels
    assert a.texts != c.texts
    assert a.labels != sorted(a.labels)  # shuffled, not grouped by class


def test_k_shot_errors(glue_dir):
    with pytest.raises(UserError) as err:
        load_task("cola", data_dir=FULL, k_shot=3)  # 2 examples per class
    one_line_error(err, "k_shot=3", "'unacceptable' has 2")
    with pytest.raises(UserError) as err:
        load_task("stsb", data_dir=glue_dir, k_shot=4, splits=["train"])
    one_line_error(err, "regression", "max_train_samples")


def test_max_samples_seeded(glue_dir):
    a = load_task("mrpc", data_dir=glue_dir, max_train_samples=50, max_eval_samples=20, seed=3)
    b = load_task("mrpc", data_dir=glue_dir, max_train_samples=50, max_eval_samples=20, seed=3)
    full = load_task("mrpc", data_dir=glue_dir)
    assert (len(a["train"]), len(a["validation"])) == (50, 20)
    assert a["train"].texts == b["train"].texts and a["validation"].texts == b["validation"].texts
    order = {t: i for i, t in enumerate(full["train"].texts)}
    assert [order[t] for t in a["train"].texts] == sorted(order[t] for t in a["train"].texts)
    assert (
        load_task("mrpc", data_dir=glue_dir, max_train_samples=50, seed=4)["train"].texts != a["train"].texts
    )
    assert len(load_task("wnli", data_dir=glue_dir, max_train_samples=10**6)["train"]) == 635


def test_sampling_argument_errors():
    with pytest.raises(UserError) as err:
        load_task("cola", data_dir=FULL, k_shot=0)
    one_line_error(err, "k_shot must be a positive integer")
    with pytest.raises(UserError) as err:
        load_task("cola", data_dir=FULL, k_shot=1, max_train_samples=2)
    one_line_error(err, "not both")


# ---------------------------------------------------------------- custom tasks


def test_custom_csv_infers_string_labels(caplog):
    with caplog.at_level("INFO", logger="nluforge.tasks"):
        data = load_task(
            "custom",
            train_file=CUSTOM / "reviews.train.csv",
            validation_file=CUSTOM / "reviews.dev.csv",
            text_fields=["text"],
            label_field="label",
        )
    spec = data.spec
    assert spec.name == "reviews" and spec.label_names == ("neg", "neutral", "pos")
    assert spec.metrics == ("accuracy", "macro_f1") and spec.eval_splits == ("validation",)
    assert data["train"].texts[0] == ("Great food, friendly staff.",)  # CSV quoting honoured
    assert data["train"].texts[2] == ('It was "fine", I guess.',)
    assert data["train"].labels == [2, 0, 1, 2, 0, 1] and data["validation"].labels == [2, 0]
    assert any("['neg', 'neutral', 'pos']" in n for n in data.notes)
    assert any("inferred labels" in r.message for r in caplog.records)


def test_custom_tsv_int_labels_two_fields():
    data = load_task("custom", train_file=CUSTOM / "pairs.train.tsv", text_fields=["a", "b"])
    assert data.spec.label_names == ("0", "1") and data.spec.text_fields == ("a", "b")
    assert data["train"].labels == [1, 0, 1, 0]
    assert data["train"].texts[2] == ('"Quoted" start', "no quote")  # TSV: quoting off


def test_custom_jsonl_regression_and_default_fields():
    data = load_task(
        "custom",
        train_file=CUSTOM / "scores.train.jsonl",
        validation_file=CUSTOM / "scores.dev.jsonl",
        label_field="score",
    )
    spec = data.spec
    assert spec.is_regression and spec.num_labels == 1 and spec.text_fields == ("sentence1", "sentence2")
    assert spec.metrics == ("pearson", "spearman") and spec.primary_metric == "pearson"
    assert data["train"].labels == [5.0, 3.8, 2.615, 0.0] and data["validation"].labels == [4.2, 0.2]


def test_custom_unknown_validation_label(tmp_path):
    dev = tmp_path / "reviews.dev.csv"
    dev.write_text("text,label\nok,pos\nhmm,mixed\n")
    with pytest.raises(UserError) as err:
        load_task("custom", train_file=CUSTOM / "reviews.train.csv", validation_file=dev)
    one_line_error(err, "'mixed'", str(dev), "line 3")


def test_custom_task_name_from_folder(tmp_path):
    folder = tmp_path / "Movie-Reviews"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert load_task("custom", train_file=folder / "train.jsonl").spec.name == "movie_reviews"


def test_custom_numeric_labels_are_not_ids(tmp_path):
    """Labels 1, 2, 5 become classes "1", "2", "5" with ids 0, 1, 2: "2" means class "2" (id 1)."""
    train = tmp_path / "stars.json"  # a .json file holding one list of objects
    rows = [{"text": f"t{i}", "label": v} for i, v in enumerate([1, 2, 5, 5, 2])]
    train.write_text(json.dumps(rows))
    dev = tmp_path / "stars.dev.csv"
    dev.write_text('text,label\n"multi\nline",2\nx,5.0\n')
    data = load_task("custom", train_file=train, validation_file=dev)
    assert data.spec.name == "stars" and data.spec.label_names == ("1", "2", "5")
    assert data["train"].labels == [0, 1, 2, 2, 1] and data["validation"].labels == [1, 2]
    assert data["validation"].texts[0] == ("multi\nline",)
    bad = tmp_path / "bad.dev.csv"
    bad.write_text('text,label\n"multi\nline",2\nx,3\n')
    with pytest.raises(UserError) as err:
        load_task("custom", train_file=train, validation_file=bad)
    one_line_error(err, "label '3'", "line 4")  # the row after a 2-line quoted field


def test_splits_argument_picks_splits():
    data = load_task("mnli", data_dir=FULL, splits=["validation_mismatched"])
    assert list(data.splits) == ["validation_mismatched"] and data.eval_splits == ["validation_mismatched"]


# ---------------------------------------------------------------- one-line errors


def test_error_missing_data_dir(tmp_path):
    with pytest.raises(UserError) as err:
        load_task("sst2", data_dir=tmp_path / "nope")
    one_line_error(err, str(tmp_path / "nope"), "--data-dir")


def test_error_missing_task_folder(tmp_path):
    with pytest.raises(UserError) as err:
        load_task("rte", data_dir=tmp_path)
    one_line_error(err, "no RTE folder", str(tmp_path), "train.tsv")


def test_error_missing_split_file(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(UserError) as err:
        load_task("rte", data_dir=tmp_path)
    one_line_error(err, "missing validation data", str(tmp_path / "RTE" / "dev") + ".tsv")


def test_error_missing_column(tmp_path):
    (tmp_path / "MNLI").mkdir()
    path = tmp_path / "MNLI" / "dev_matched.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tneutral\n")
    with pytest.raises(UserError) as err:
        load_task("mnli", data_dir=tmp_path, splits=["validation_matched"])
    one_line_error(err, "no column 'gold_label'", str(path), "sentence1")


def test_error_label_outside_task(tmp_path):
    (tmp_path / "SST-2").mkdir()
    path = tmp_path / "SST-2" / "dev.tsv.gz"
    path.write_bytes(gzip.compress(b"sentence\tlabel\ngood . \t1\nodd . \t7\n"))
    with pytest.raises(UserError) as err:
        load_task("sst2", data_dir=tmp_path, splits=["validation"])
    one_line_error(err, "label '7'", str(path), "line 3")


def test_error_empty_split(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(UserError) as err:
        load_task("sst2", data_dir=tmp_path, splits=["validation"])
    one_line_error(err, "split 'validation' is empty", "dev.tsv")


def test_error_ragged_row_and_unknown_split(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\textra\n")
    with pytest.raises(UserError) as err:
        load_task("sst2", data_dir=tmp_path, splits=["validation"])
    one_line_error(err, "line 3", "3 TAB-separated fields")
    with pytest.raises(UserError) as err:
        load_task("sst2", data_dir=tmp_path, splits=["valdation"])
    one_line_error(err, "no split 'valdation'", "did you mean 'validation'")


def test_error_custom_files(tmp_path):
    with pytest.raises(UserError) as err:
        load_task("custom", train_file=tmp_path / "missing.csv")
    one_line_error(err, "file not found", "missing.csv")
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(UserError) as err:
        load_task("custom", train_file=odd)
    one_line_error(err, ".tsv, .csv or .jsonl")
    with pytest.raises(UserError) as err:
        load_task("custom", train_file=CUSTOM / "reviews.train.csv", text_fields=["review"])
    one_line_error(err, "no column 'review'", "reviews.train.csv", "text, label")
    with pytest.raises(UserError) as err:
        load_task("custom")
    one_line_error(err, "--train-file")


def test_error_advglue_file_missing_and_bad(tmp_path):
    with pytest.raises(UserError) as err:
        load_task("advglue_rte", advglue_file=tmp_path / "dev.json")
    one_line_error(err, "AdvGLUE file not found", str(tmp_path / "dev.json"))
    path = tmp_path / "adv.json"
    path.write_text(json.dumps({"sst2": [{"idx": 0, "sentence": "x", "label": 1}]}))
    with pytest.raises(UserError) as err:
        load_task("advglue_rte", advglue_file=path)
    one_line_error(err, "no AdvGLUE set 'rte'", str(path))
    assert load_task("advglue_sst2", advglue_file=path)["validation"].labels == [1]


# ---------------------------------------------------------------- Hub path and imports


def test_hub_offline_fails_fast_with_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("NLUFORGE_DATA_DIR", raising=False)
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_task("sst2")
    assert time.perf_counter() - start < 10
    one_line_error(err, "--data-dir", "NLUFORGE_DATA_DIR", "nyu-mll/glue")


def test_hub_unreachable_without_offline_flag(monkeypatch):
    """No offline flag and no network: the TCP probe stops us before datasets' ~25 s of retries."""
    for var in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("NLUFORGE_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_task("rte", splits=["validation"])
    assert time.perf_counter() - start < 5
    one_line_error(err, "unreachable", "--data-dir")


def test_advglue_without_file_goes_to_hub_and_explains(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("NLUFORGE_DATA_DIR", "NLUFORGE_ADVGLUE_FILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError) as err:
        load_task("advglue_sst2", data_dir=tmp_path)  # no advglue/dev.json beside it
    one_line_error(err, "AI-Secure/adv_glue", "--advglue-file")


def test_hub_rows_become_splits(monkeypatch):
    """The Hub path asks datasets for nyu-mll/glue:<config> per split and drops unlabelled rows."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [2, -1, 0]}

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # skip the reachability probe
    monkeypatch.delenv("NLUFORGE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_task("mnli", splits=["validation_matched"])
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched")]
    assert data.source == "hub:nyu-mll/glue:mnli"
    assert data["validation_matched"].texts == [("p0", "h0"), ("p2", "h2")]
    assert data["validation_matched"].labels == [2, 0]


def test_split_is_plain_and_json_able():
    split = Split("train", [("a", "b")], [1], "x.tsv")
    assert len(split) == 1 and json.loads(json.dumps(dataclasses.asdict(split)))["labels"] == [1]
    assert split.select([0, 0]).texts == [("a", "b"), ("a", "b")]


def test_lean_import():
    code = (
        "import sys, nluforge.tasks; "
        "print(sorted(m for m in ('torch', 'datasets', 'sklearn', 'scipy', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_nan_in_metrics_for_json():
    got = compute_metrics(get_task("cola"), [1, 1, 1], [1, 0, 1])
    assert not math.isnan(got["mcc"])
