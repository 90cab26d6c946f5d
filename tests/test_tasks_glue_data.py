"""Parsing the shared GLUE and AdvGLUE files: row counts and label counts from shared/data/SOURCES.md,
spot checks of the format quirks (quotes, BOM, header-less CoLA, reduced MNLI/QQP layouts)."""

from __future__ import annotations

import functools
import gzip

import pytest

from nluforge.tasks import load_task
from nluforge.tasks.advglue import read_advglue_file
from nluforge.tasks.glue_dir import read_glue_split
from nluforge.tasks.spec import get_task

pytestmark = pytest.mark.integration


@functools.cache
def _load(glue_dir, task):
    return load_task(task, data_dir=glue_dir)


# (task, split, rows, {label id: count} or None) — counts from SOURCES.md where it gives them
GLUE_FILES = [
    ("cola", "train", 8551, None),
    ("cola", "validation", 1043, None),
    ("sst2", "train", 67349, None),
    ("sst2", "validation", 872, None),
    ("mrpc", "train", 3668, None),
    ("mrpc", "validation", 408, None),
    ("stsb", "train", 5749, None),
    ("stsb", "validation", 1500, None),
    ("qnli", "validation", 5463, None),
    ("rte", "train", 2490, None),
    ("rte", "validation", 277, None),
    ("wnli", "train", 635, None),
    ("wnli", "validation", 71, None),
    ("mnli", "validation_matched", 9815, {0: 3479, 1: 3123, 2: 3213}),
    ("mnli", "validation_mismatched", 9832, {0: 3463, 1: 3129, 2: 3240}),
    ("qqp", "validation", 40430, {0: 25545, 1: 14885}),
]


@pytest.mark.parametrize("task,split,rows,counts", GLUE_FILES, ids=[f"{t}-{s}" for t, s, *_ in GLUE_FILES])
def test_glue_file_counts(glue_dir, task, split, rows, counts):
    data = _load(glue_dir, task)
    part = data[split]
    assert len(part) == rows == len(part.labels)
    assert all(
        len(t) == len(data.spec.text_fields) and all(isinstance(x, str) for x in t) for t in part.texts
    )
    if counts:
        assert part.label_counts() == counts
    if data.spec.is_regression:
        assert all(0.0 <= y <= 5.0 for y in part.labels)
    else:
        assert set(part.labels) <= set(range(data.spec.num_labels))


# the shared train samples: (task, file, rows, label counts)
SAMPLES = [
    ("mnli", "MNLI/train.sample39273.tsv.gz", 39273, {0: 13091, 1: 13072, 2: 13110}),
    ("mnli", "MNLI/train.sample9999.tsv.gz", 9999, {0: 3408, 1: 3313, 2: 3278}),
    ("qnli", "QNLI/train.sample9999.tsv.gz", 9999, {0: 5027, 1: 4972}),
    ("qqp", "QQP/train.sample9999.tsv.gz", 9999, {0: 6370, 1: 3629}),
]


@pytest.mark.parametrize("task,name,rows,counts", SAMPLES, ids=[s[1] for s in SAMPLES])
def test_train_samples_parse(glue_dir, task, name, rows, counts):
    part = read_glue_split(get_task(task), glue_dir / name, "train")
    assert len(part) == rows
    assert part.label_counts() == counts


def test_largest_sample_replaces_missing_train(glue_dir, caplog):
    _load.cache_clear()
    with caplog.at_level("WARNING", logger="nluforge.tasks"):
        data = _load(glue_dir, "mnli")
    assert len(data["train"]) == 39273
    assert data["train"].source.endswith("train.sample39273.tsv.gz")
    assert len(data.notes) == 1 and "train.sample39273" in data.notes[0] and "\n" not in data.notes[0]
    assert any("train.sample39273" in r.message for r in caplog.records)
    assert not _load(glue_dir, "sst2").notes  # a full train file: no notice


def test_rte_leading_quotes_kept(glue_dir):
    data = _load(glue_dir, "rte")
    for split, rows in (("train", 70), ("validation", 6)):  # a quote-aware reader alters these (SOURCES.md)
        assert sum(any(x.startswith('"') for x in t) for t in data[split].texts) == rows
    quoted = [t for t in data["train"].texts if t[0].startswith('"')]
    assert quoted[0][0].startswith('"Instead of action on crime, we got the federal long gun registry')
    assert quoted[0][0].endswith("tabled the bill killing the long-gun registry.")


def test_mrpc_header_bom_and_first_row(glue_dir):
    raw = gzip.open(glue_dir / "MRPC/dev.tsv.gz", "rt", encoding="utf-8").readline()
    assert raw.startswith("\ufeffQuality")  # the quirk is really there ...
    dev = _load(glue_dir, "mrpc")["validation"]  # ... and the label column 'Quality' was found
    assert dev.texts[0][0].startswith("He said the foodservice pie business")
    assert dev.texts[0][1].startswith('" The foodservice pie business')
    assert dev.labels[0] == 1


def test_cola_headerless_and_no_trailing_newline(glue_dir):
    data = _load(glue_dir, "cola")
    assert data["train"].texts[0] == (
        "Our friends won't buy this analysis, let alone the next one we propose.",
    )
    assert data["validation"].texts[0] == ("The sailors rode the breeze clear of the rocks.",)
    assert data["validation"].texts[-1][0]  # the last line, without "\n", is read whole
    assert data["train"].label_counts()[0] > 0


def test_sst2_mnli_qqp_text_verbatim(glue_dir):
    assert _load(glue_dir, "sst2")["validation"].texts[0] == (
        "it 's a charming and often affecting journey . ",
    )
    assert _load(glue_dir, "mnli")["validation_matched"].texts[0] == (
        "The new rights are nice enough",
        "Everyone really likes the newest benefits ",
    )
    qqp = _load(glue_dir, "qqp")["validation"]
    assert qqp.texts[0] == ("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?")
    assert any('""' in q for t in qqp.texts for q in t)  # GLUE's literal CSV-style quotes survive


def test_stsb_scores_are_floats(glue_dir):
    dev = _load(glue_dir, "stsb")["validation"]
    assert dev.labels[:2] == [5.0, 4.75]
    assert dev.texts[0] == ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.")


def test_advglue_counts(advglue_file):
    data = read_advglue_file(advglue_file)
    counts = {key: len(rows) for key, rows in data.items()}
    assert counts == {"sst2": 148, "qqp": 78, "mnli": 121, "mnli-mm": 162, "qnli": 148, "rte": 81}


ADV = [
    ("advglue_sst2", 148, 2),
    ("advglue_qqp", 78, 2),
    ("advglue_mnli", 121, 3),
    ("advglue_mnli_mm", 162, 3),
    ("advglue_qnli", 148, 2),
    ("advglue_rte", 81, 2),
]


@pytest.mark.parametrize("task,rows,num_labels", ADV, ids=[a[0] for a in ADV])
def test_advglue_tasks_load(advglue_file, task, rows, num_labels):
    data = load_task(task, advglue_file=advglue_file)
    assert list(data.splits) == ["validation"] and data.eval_splits == ["validation"]
    assert len(data["validation"]) == rows
    assert set(data["validation"].labels) <= set(range(num_labels))
    assert data.spec.eval_only and data.spec.num_labels == num_labels


def test_advglue_found_beside_glue_dir(glue_dir, advglue_file, monkeypatch):
    monkeypatch.delenv("NLUFORGE_ADVGLUE_FILE", raising=False)
    data = load_task("advglue_sst2", data_dir=glue_dir)  # finds <data_dir>/../advglue/dev.json.gz
    assert data.source == f"advglue:{advglue_file}"
    assert data["validation"].texts[0][0].startswith("it 's an uneven treat")
