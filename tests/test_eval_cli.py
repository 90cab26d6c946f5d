"""``nluforge eval`` on a user's file and ``nluforge predict``, through the command line, on one tiny
custom-task run (three sentiment classes, learned from one sentiment word per sentence).

Numbers are checked against the run's own predictions: accuracy computed by hand from ``nluforge
predict``'s output must equal what ``nluforge eval`` records, per group and after label maps.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result

NLUFORGE = [sys.executable, "-m", "nluforge"]
WORDS = {"positive": ["good", "great", "nice", "happy", "love"],
         "negative": ["bad", "awful", "poor", "sad", "hate"],
         "neutral": ["okay", "average", "plain", "normal", "usual"]}
FILLER = ["the", "a", "movie", "film", "plot", "actor", "story", "was", "is", "it", "this", "very"]
SHORT = {"negative": "neg", "neutral": "neu", "positive": "pos"}


def write_reviews(path: Path, n: int, seed: int, rename: dict[str, str] | None = None,
                  noise: float = 0.0) -> Path:
    """CSV with id, review, sentiment, genre; reviews vary in length (2 to 13 words). A ``noise``
    fraction of labels is replaced by a random class, so no model scores 100% on that file."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "sentiment", "genre"])
        for i in range(n):
            label = rng.choice(sorted(WORDS))
            words = rng.sample(FILLER, rng.randint(1, 12)) + [rng.choice(WORDS[label])]
            rng.shuffle(words)
            if noise and rng.random() < noise:
                label = rng.choice(sorted(WORDS))
            w.writerow([f"r{seed}-{i}", " ".join(words), (rename or {}).get(label, label),
                        rng.choice(["comedy", "drama", "horror"])])
    return path


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (training, and the one-line error format)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*NLUFORGE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def run(*args) -> Result:
    """The same commands in this process (no interpreter start-up per call)."""
    from typer.testing import CliRunner

    from nluforge.cli.app import _load_commands, app

    _load_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result):
    if isinstance(result, subprocess.CompletedProcess):
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert result.exit_code == 0 and result.exception is None, (result.output[-3000:], result.exception)
    return result


def user_error(result, *needles: str) -> str:
    """A UserError whose message names every needle (in-process: the exception; CLI: its last line)."""
    from nluforge.core.errors import UserError

    if isinstance(result, subprocess.CompletedProcess):
        err = result.stderr.strip()
        assert result.returncode == 2 and "Traceback" not in err, (result.returncode, err[-2000:])
        message = err.splitlines()[-1]
        assert message.startswith("error: "), err
    else:
        assert isinstance(result.exception, UserError), (result.output[-2000:], result.exception)
        message = str(result.exception)
        assert "\n" not in message, message
    for needle in needles:
        assert needle.lower() in message.lower(), message
    return message


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reviews")
    write_reviews(root / "reviews.train.csv", 900, seed=1)
    write_reviews(root / "reviews.dev.csv", 150, seed=2)
    write_reviews(root / "holdout.csv", 120, seed=3, noise=0.3)
    write_reviews(root / "short_names.csv", 120, seed=3, rename=SHORT, noise=0.3)  # pos/neg/neu labels
    return root


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory, tokenizer) -> Path:
    """One tiny `full` run on the custom task, trained through the CLI."""
    from conftest import make_tiny

    model = tmp_path_factory.mktemp("tiny") / "bert"
    make_tiny("bert", 3).save_pretrained(model)
    tokenizer.save_pretrained(model)
    proc = ok(cli("train", "--task", "custom", "--model", model, "--method", "full",
                  "--train-file", data / "reviews.train.csv", "--validation-file", data / "reviews.dev.csv",
                  "--text-field", "review", "--label-field", "sentiment", "--epochs", "4", "--lr", "3e-3",
                  "--batch-size", "16", "-o", tmp_path_factory.mktemp("runs"), "--set", "eval.latency=false"))
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def holdout_predictions(run_dir, data, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("pred") / "holdout.csv"
    ok(run("predict", run_dir, "--input", data / "holdout.csv", "--output", out))
    return read_csv(out)


def test_custom_run_records_its_labels_and_evaluates_on_its_dev_file(run_dir):
    task = json.loads((run_dir / "model" / "task.json").read_text())
    assert task["label_names"] == ["negative", "neutral", "positive"] and task["text_fields"] == ["review"]
    result = json.loads((run_dir / "result.json").read_text())
    ev = ok(cli("eval", run_dir))  # the real command line once
    record = json.loads((run_dir / "evals" / "reviews-validation.json").read_text())
    assert record["source"] == {"kind": "task", "task": "reviews", "split": "validation"}
    assert record["n"] == 150 and record["label_map"] is None and record["groups"] is None
    assert record["metrics"] == result["metrics"]["trained"]["validation"]  # the run reloads exactly
    assert record["metrics"]["accuracy"] > 0.8, ev.stdout  # it learned: chance is 1/3


def test_predict_output_is_in_input_order_with_probabilities(holdout_predictions, data):
    rows = read_csv(data / "holdout.csv")
    assert [p["index"] for p in holdout_predictions] == [str(i) for i in range(len(rows))]
    assert [p["id"] for p in holdout_predictions] == [r["id"] for r in rows]
    for p in holdout_predictions:
        probs = {k[2:]: float(v) for k, v in p.items() if k.startswith("p_")}
        assert set(probs) == set(WORDS)
        assert abs(sum(probs.values()) - 1) < 1e-5
        assert p["label"] == max(probs, key=probs.get)
    hits = sum(p["label"] == r["sentiment"] for p, r in zip(holdout_predictions, rows, strict=True))
    assert 0.5 < hits / len(rows) < 1  # 30% label noise


def test_eval_file_with_groups_matches_predict(run_dir, data, holdout_predictions, tmp_path):
    rows = read_csv(data / "holdout.csv")
    ok(run("eval", run_dir, "--eval-file", data / "holdout.csv", "--text-field", "review",
           "--label-field", "sentiment", "--group-field", "genre", "--output", tmp_path / "ev.json"))
    record = json.loads((run_dir / "evals" / "file-holdout.json").read_text())
    hits = [p["label"] == r["sentiment"] for p, r in zip(holdout_predictions, rows, strict=True)]
    assert record["n"] == len(rows) and record["source"]["kind"] == "file"
    assert record["source"]["file"] == str((data / "holdout.csv").resolve())
    assert record["metrics"]["accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert set(record["metrics"]) == {"accuracy", "macro_f1"}
    assert record["groups"]["field"] == "genre"
    for genre, got in record["groups"]["values"].items():
        mine = [h for h, r in zip(hits, rows, strict=True) if r["genre"] == genre]
        assert got["n"] == len(mine) and got["accuracy"] == pytest.approx(sum(mine) / len(mine))
    assert sum(g["n"] for g in record["groups"]["values"].values()) == len(rows)
    assert json.loads((tmp_path / "ev.json").read_text())["evals"][0]["metrics"] == record["metrics"]


def test_label_map_renames_and_collapses(run_dir, data, holdout_predictions, tmp_path):
    rows = read_csv(data / "holdout.csv")
    rename = "negative=neg,neutral=neu,positive=pos"
    ok(run("eval", run_dir, "--eval-file", data / "short_names.csv", "--label-field", "sentiment",
           "--label-map", rename))
    renamed = json.loads((run_dir / "evals" / "file-short_names.json").read_text())
    hits = [p["label"] == r["sentiment"] for p, r in zip(holdout_predictions, rows, strict=True)]
    assert renamed["metrics"]["accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert renamed["label_map"] == {"negative": "neg", "neutral": "neu", "positive": "pos"}

    collapse = tmp_path / "map.yaml"  # the file form: two model labels onto one file label
    collapse.write_text("negative: not_positive\nneutral: not_positive\npositive: positive\n")
    binary = tmp_path / "binary.csv"
    with open(binary, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "label"])
        for r in rows:
            w.writerow([r["review"], "positive" if r["sentiment"] == "positive" else "not_positive"])
    ok(run("eval", run_dir, "--eval-file", binary, "--label-map", collapse, "--name", "binary"))
    record = json.loads((run_dir / "evals" / "binary.json").read_text())
    coarse = [(p["label"] == "positive") == (r["sentiment"] == "positive")
              for p, r in zip(holdout_predictions, rows, strict=True)]
    assert record["metrics"]["accuracy"] == pytest.approx(sum(coarse) / len(coarse))
    assert record["metrics"]["accuracy"] > renamed["metrics"]["accuracy"]  # merging classes forgives errors
    assert record["label_map"] == {"negative": "not_positive", "neutral": "not_positive", "positive": "positive"}


def test_rerun_replaces_the_record_of_the_same_name(run_dir, data):
    for group in ("genre", None):
        extra = ["--group-field", group] if group else []
        ok(run("eval", run_dir, "--eval-file", data / "holdout.csv", "--label-field", "sentiment",
               "--name", "again", *extra))
    records = sorted(p.name for p in (run_dir / "evals").glob("again*"))
    assert records == ["again.json"]
    assert json.loads((run_dir / "evals" / "again.json").read_text())["groups"] is None


@pytest.mark.parametrize("args, needles", [
    (["--label-map", "positive=pos"], ["does not map", "negative"]),
    (["--label-map", "positive=pos,negative=neg,neutral=neu,happy=pos"], ["happy", "not a model label"]),
    (["--label-map", "positive"], ["model_label=file_label"]),
    (["--label-map", "missing.yaml"], ["not found", "missing.yaml"]),
    (["--group-field", "year"], ["year", "--group-field"]),
    (["--text-field", "a", "--text-field", "b"], ["1 text field"]),
    (["--task", "sst2"], ["--eval-file or --task"]),
    (["--split", "validation"], ["--eval-file or --split"]),
])
def test_bad_eval_file_input_is_one_line(run_dir, data, args, needles):
    user_error(run("eval", run_dir, "--eval-file", data / "short_names.csv", "--label-field", "sentiment",
                   *args), *needles)


def test_file_labels_the_model_cannot_produce(run_dir, data, tmp_path):
    unmapped = tmp_path / "unmapped.csv"
    unmapped.write_bytes((data / "short_names.csv").read_bytes())
    last = user_error(cli("eval", run_dir, "--eval-file", unmapped, "--label-field", "sentiment"),
                      "can never produce", "'neg'", "'neu'", "'pos'")
    assert "--label-map" in last
    user_error(run("eval", run_dir, "--eval-file", unmapped), "no column 'label'", "--label-field")
    assert not list((run_dir / "evals").glob("file-unmapped*"))


def test_bad_predict_input_leaves_no_output(run_dir, data, tmp_path):
    out = tmp_path / "out.csv"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"review": "good film"}\n{"text": "no review key"}\n')
    user_error(run("predict", run_dir, "-i", bad, "-o", out), "line 2", "text value")
    user_error(run("predict", run_dir, "-i", data / "holdout.csv", "-o", tmp_path / "out.xlsx"), ".csv")
    user_error(run("predict", run_dir, "-i", data / "holdout.csv", "-o", out, "--id-field", "nope"), "nope")
    (tmp_path / "empty.csv").write_text("")
    user_error(run("predict", run_dir, "-i", tmp_path / "empty.csv", "-o", out), "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.csv"]  # no output, no temp file
    out.write_text("keep me\n")
    user_error(run("predict", run_dir, "-i", data / "holdout.csv", "-o", out), "exists", "--overwrite")
    assert out.read_text() == "keep me\n"


def test_predict_jsonl_matches_csv(run_dir, data, holdout_predictions, tmp_path):
    out = tmp_path / "p.jsonl"
    ok(run("predict", run_dir, "-i", data / "holdout.csv", "-o", out, "--batch-size", "7"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == [p["label"] for p in holdout_predictions]
    for r, p in zip(rows, holdout_predictions, strict=True):  # other batches: same probabilities
        assert r["probs"] == pytest.approx({k: float(p[f"p_{k}"]) for k in r["probs"]}, abs=2e-6)


def test_help_does_not_import_torch():
    code = ("import sys\nfrom nluforge.cli.app import app, _load_commands\n_load_commands()\n"
            "from typer.testing import CliRunner\n"
            "for args in (['--help'], ['eval', '--help'], ['predict', '--help']):\n"
            "    r = CliRunner().invoke(app, args)\n"
            "    assert r.exit_code == 0, r.output\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'sklearn') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in proc.stdout.strip().split(","), proc.stdout
    assert proc.stdout.strip() == "", f"--help imported {proc.stdout.strip()}"


def test_plain_regression_model_on_a_file_with_groups(tiny_model_dir, tmp_path):
    """A model folder (not a run) names its task with --task; regression scores Pearson/Spearman."""
    from scipy import stats
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nluforge.eval.predict import predict_texts

    model_dir = tiny_model_dir("bert", num_labels=1)
    rng = random.Random(5)
    rows = [(" ".join(rng.sample(FILLER, rng.randint(1, 8))), " ".join(rng.sample(FILLER, rng.randint(1, 8))),
             round(rng.uniform(0, 5), 2), rng.choice("ab")) for _ in range(40)]
    path = tmp_path / "sts.jsonl"
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s, "src": g}) + "\n"
                            for a, b, s, g in rows))
    ok(run("eval", model_dir, "--task", "stsb", "--eval-file", path, "--label-field", "score",
           "--group-field", "src", "--output", tmp_path / "ev.json"))
    record = json.loads((tmp_path / "ev.json").read_text())["evals"][0]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    scores = predict_texts(model, AutoTokenizer.from_pretrained(model_dir), [(a, b) for a, b, _, _ in rows],
                           max_length=128, batch_size=16, regression=True)
    gold = [s for _, _, s, _ in rows]
    assert record["metrics"]["pearson"] == pytest.approx(stats.pearsonr(scores, gold)[0], abs=1e-4)
    in_a = [i for i, r in enumerate(rows) if r[3] == "a"]
    assert record["groups"]["values"]["a"]["n"] == len(in_a)
    assert record["groups"]["values"]["a"]["spearman"] == pytest.approx(
        stats.spearmanr(scores[in_a], [gold[i] for i in in_a])[0], abs=1e-4)
    user_error(run("eval", model_dir, "--task", "stsb", "--eval-file", path, "--label-field", "score",
                   "--label-map", "a=b"), "regression")
