"""The report: tables (mean and 95% interval), noise-aware fronts, recommendations, outputs and the CLI.

The fixture results dir (tests/fixtures/results, see its README.md) holds hand-made result files whose
expected numbers are worked out by hand below. They have no predictions.jsonl, so intervals and tests
come from the seeds alone (t intervals, Welch tests); tests/fixtures/noise has runs with predictions
(see tests/test_report_noise.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nluforge.core.errors import UserError
from nluforge.report import build_report, load_report, pareto_front
from nluforge.report.format import fmt_count, fmt_ratio, fmt_stat
from nluforge.report.metrics import dev_metrics, primary_metric, robust_metrics
from nluforge.report.plots import task_plots
from nluforge.report.tables import Stat, TaskReport, VariantRow
from nluforge.report.variants import label_variants, variant_key, variant_label

FIXTURES = Path(__file__).parent / "fixtures" / "results"
VENV_BIN = Path(sys.executable).parent
LORA = "lora (r=8, alpha=16)"
INT8 = "full + quantize_dynamic(dtype=int8)"  # its attack step is an evaluation, not in the label


@pytest.fixture(scope="module")
def report():
    return load_report(FIXTURES)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_report(FIXTURES, tmp_path_factory.mktemp("report"))


def task(report, name: str) -> TaskReport:
    return next(t for t in report.tasks if t.task == name)


def row(t: TaskReport, label: str) -> VariantRow:
    return next(r for r in t.rows if r.label == label)


def labels(t: TaskReport, keys) -> set[str]:
    return {t.row(k).label for k in keys}


# --- tables ----------------------------------------------------------------------------------------


def test_runs_of_a_variant_are_grouped_over_seeds(report):
    sst2 = task(report, "sst2")
    assert [r.label for r in sst2.rows] == ["full", INT8, LORA, "adapter (reduction_factor=16)", "bitfit"]
    full = row(sst2, "full")  # seed 2 has another data_dir and a name: run-only, same variant
    assert full.n == 3 and full.seeds == [1, 2, 3]
    assert full.metrics["accuracy"].mean == pytest.approx(0.92)
    assert full.metrics["accuracy"].std == pytest.approx(0.01)  # sample std of .91 .92 .93
    t95 = 4.303  # t quantile, 2 degrees of freedom
    assert row(sst2, LORA).metrics["accuracy"] == Stat(
        pytest.approx(0.88),
        pytest.approx(0.01),
        3,
        pytest.approx(0.88 - t95 * 0.01 / 3**0.5, rel=1e-3),
        pytest.approx(0.88 + t95 * 0.01 / 3**0.5, rel=1e-3),
    )
    bitfit = row(sst2, "bitfit").metrics["accuracy"]
    assert (bitfit.mean, bitfit.std, bitfit.n, bitfit.half_width) == (
        pytest.approx(0.855),
        pytest.approx(0.0070711, rel=1e-4),
        2,
        pytest.approx(12.706 * 0.0070711 / 2**0.5, rel=1e-3),  # t, 1 degree of freedom
    )


def test_costs_are_averaged_over_seeds(report):
    full = row(task(report, "sst2"), "full")
    assert full.cost["peak_memory_mb"] == pytest.approx(1200)
    assert full.cost["train_examples_per_s"] == pytest.approx(45)
    assert full.cost["trainable_params"] == 22_713_986


def test_compressed_stage_is_scored_over_trained(report):
    int8 = row(task(report, "sst2"), INT8)
    assert int8.metrics["accuracy"] == Stat(pytest.approx(0.915), None, 1)
    assert int8.robust["AdvGLUE acc"].mean == pytest.approx(0.38)  # compressed, not trained (.44)
    assert int8.robust["robust acc"].mean == pytest.approx(0.30)  # from the attacked stage


def test_robust_accuracy_where_measured(report):
    sst2 = task(report, "sst2")
    assert sst2.robust_names == ["AdvGLUE acc", "robust acc"]
    adv = row(sst2, "full").robust["AdvGLUE acc"]
    assert (adv.mean, adv.std, adv.n) == (pytest.approx(0.42), pytest.approx(0.02), 3)
    assert "AdvGLUE acc" not in row(sst2, "bitfit").robust
    assert task(report, "cola").robust_names == []


def test_primary_metric_per_task(report):
    assert {t.task: t.primary for t in report.tasks} == {
        "cola": "mcc",
        "mnli": "accuracy",
        "sst2": "accuracy",
        "stsb": "pearson",
    }
    assert task(report, "cola").metric_names == ["mcc", "accuracy"]
    mnli = task(report, "mnli")
    assert mnli.metric_names == ["accuracy", "accuracy (mismatched)"]
    assert [r.label for r in mnli.rows] == ["full", f"{LORA} · 16-shot"]
    cola_full = row(task(report, "cola"), "full").metrics["mcc"]
    assert (cola_full.mean, cola_full.std) == (pytest.approx(0.56), pytest.approx(0.0141421, rel=1e-4))


def test_failed_runs_are_listed_apart(report):
    assert [(f.task, f.label, f.seed) for f in report.failed] == [("sst2", "lora (r=64, alpha=16)", 1)]
    assert "CUDA out of memory" in report.failed[0].error
    assert all("r=64" not in r.label for r in task(report, "sst2").rows)
    assert report.n_runs == 19 and report.n_variants == 10


# --- Pareto fronts and recommendations ---------------------------------------------------------------


def test_pareto_front_by_hand():
    points = {
        "best": (10.0, 0.9),
        "cheap": (1.0, 0.8),
        "dominated": (5.0, 0.7),
        "tie_a": (3.0, 0.85),
        "tie_b": (3.0, 0.85),
        "same_cost_worse": (10.0, 0.85),
        "cheapest": (0.5, 0.1),
    }
    assert pareto_front(points) == {"best", "cheap", "tie_a", "tie_b", "cheapest"}
    assert pareto_front({}) == set()


def test_fronts_per_cost_axis(report):
    """Seeds alone (Welch, Holm over 10 pairs): full beats bitfit (3 vs 2 seeds, 6.5 points) and lora
    (3 vs 3, 4 points) clearly, lora does not beat bitfit clearly, and int8 (one seed) cannot be tested."""
    sst2 = task(report, "sst2")
    fronts = {name: labels(sst2, keys) for name, keys in sst2.frontiers.items()}
    assert fronts == {
        "params": {"full", "bitfit"},  # lora: not significantly above the cheaper bitfit
        "memory": {"full", "bitfit"},
        "latency": {INT8},  # full is not shown to beat the faster int8 (one seed, untestable)
        "size": {"full", LORA},  # int8 is smaller than full, but full beats int8 only on means
        "robust:AdvGLUE acc": {"full", LORA},
        "robust:robust acc": {INT8},
    }
    noise = {name: labels(sst2, keys) for name, keys in sst2.noise.items()}
    assert noise["params"] == {LORA, INT8, "adapter (reduction_factor=16)"}
    assert noise["latency"] == {"full"}


def test_a_dominated_variant_is_never_recommended(report):
    sst2 = task(report, "sst2")
    adapter = row(sst2, "adapter (reduction_factor=16)")
    assert all(adapter.key not in rec.variants for rec in sst2.recommendations)
    assert all("adapter" not in rec.text for rec in sst2.recommendations)
    by_heading = {rec.heading: rec for rec in sst2.recommendations}
    assert "bitfit" not in by_heading["Latency budget"].text + by_heading["Disk budget (servable model)"].text


def test_recommendations_are_phrased_from_the_data(report):
    recs = {rec.heading: rec for rec in task(report, "sst2").recommendations}
    assert list(recs) == [
        "Best overall",
        "Trainable-parameter budget",
        "Training-memory budget",
        "Latency budget",
        "Disk budget (servable model)",
        "Robustness (AdvGLUE acc)",
        "Robustness (robust acc)",
    ]
    best = recs["Best overall"]
    assert best.variants == ()  # int8 (one seed, no predictions) cannot be compared with full
    assert best.text.startswith(f"none named: full and {INT8} cannot be compared on this data")
    assert "save per-example predictions" in best.text
    assert recs["Trainable-parameter budget"].items == (
        "bitfit: 85.5 ± 6.4 accuracy (−6.5 points) with 0.18% of the trainable parameters of full (40k params)",
    )
    assert recs["Latency budget"].items == (
        f"{INT8} (9.00 ms/example): no costlier variant scores significantly higher on this data",
    )
    assert recs["Robustness (AdvGLUE acc)"].items[0].startswith(f"{LORA}: 46.0 ± 2.5 AdvGLUE acc (clean 88.0")
    cola = {rec.heading: rec.text for rec in task(report, "cola").recommendations}
    assert (
        cola["Latency budget"]
        == "full (14.0 ms/example): no costlier variant scores significantly higher on this data."
    )
    assert [rec.heading for rec in task(report, "stsb").recommendations] == ["Best overall"]  # one variant
    assert cola["Best overall"].startswith("none named: full and lora (r=8, alpha=16) are indistinguishable")
    assert "more seeds (2 now" in cola["Best overall"]


# --- the pieces ------------------------------------------------------------------------------------


def test_dev_metrics_take_the_latest_clean_stage():
    metrics = {
        "trained": {"validation": {"accuracy": 0.9}, "train": {"accuracy": 1.0}},
        "compressed": {"validation": {"accuracy": 0.8}},
        "attacked": {"validation": {"robust_accuracy": 0.2, "accuracy": 0.1}},
    }
    assert dev_metrics(metrics) == {"accuracy": 0.8}
    assert dev_metrics({"trained": {"advglue_sst2": {"accuracy": 0.3}}}) == {}


def test_robust_metrics_are_named_by_split():
    metrics = {
        "trained": {"advglue_mnli": {"accuracy": 0.3}, "advglue_mnli_mm": {"accuracy": 0.4}},
        "attacked": {"pwws": {"robust_accuracy": 0.1}, "textfooler": {"robust_accuracy": 0.2}},
    }
    assert robust_metrics(metrics, "mnli") == {
        "AdvGLUE acc": 0.3,
        "AdvGLUE acc (mm)": 0.4,
        "robust acc (pwws)": 0.1,
        "robust acc (textfooler)": 0.2,
    }


def test_primary_metric_falls_back():
    assert primary_metric("mrpc", ["accuracy", "f1"]) == "f1"
    assert primary_metric("my_task", ["f1", "accuracy"]) == "accuracy"
    assert primary_metric("my_task", ["macro_f1", "f1"]) == "macro_f1"
    assert primary_metric("my_task", []) is None


def test_variants_ignore_seed_and_run_only_fields():
    base = {
        "task": "sst2",
        "method": "lora",
        "method_params": {"r": 8},
        "seed": 1,
        "data": {"data_dir": "/a", "k_shot": None},
        "train": {"lr": 1e-4, "log_every": 20},
    }
    other = {
        **base,
        "seed": 2,
        "name": "x",
        "data": {"data_dir": "/b", "k_shot": None},
        "train": {"lr": 1e-4, "log_every": 5},
    }
    assert variant_key(base) == variant_key(other)
    assert variant_key(base) != variant_key({**base, "train": {"lr": 2e-4}})
    assert (
        variant_label({**base, "optimizer": "galore", "compress": [{"name": "prune", "sparsity": 0.5}]})
        == "lora (r=8) · galore + prune(sparsity=0.5)"
    )


def test_labels_are_made_distinct():
    two = {"a": {"method": "full", "train": {"lr": 1e-4}}, "b": {"method": "full", "train": {"lr": 2e-5}}}
    assert label_variants(two) == {"a": "full · lr=0.0001", "b": "full · lr=2e-05"}
    models = {"a": {"method": "full", "model": "org/bert-base"}, "b": {"method": "full", "model": "default"}}
    assert label_variants(models) == {"a": "bert-base: full", "b": "default: full"}


def test_formatting():
    assert fmt_stat(Stat(0.8812, 0.0031, 3, 0.8702, 0.8922)) == "88.1 ± 1.1"  # half the interval
    assert fmt_stat(Stat(0.8812, 0.0031, 3)) == "88.1"  # no interval
    assert fmt_stat(Stat(-1e-17, 0.0, 1, -1e-17, 0.0)) == "0.0 ± 0.0"  # no negative zero
    assert fmt_stat(Stat(-0.101, 0.0, 1)) == "-10.1"
    assert fmt_stat(Stat(0.8812, None, 1)) == "88.1"
    assert fmt_stat(None) == "—"
    assert (fmt_count(22_713_986), fmt_count(147_458), fmt_count(512)) == ("22.7M", "147k", "512")
    assert (fmt_ratio(0.0065), fmt_ratio(0.058), fmt_ratio(0.6)) == ("0.65%", "5.8%", "60%")


# --- outputs ---------------------------------------------------------------------------------------


def test_html_is_self_contained_with_plots_and_tables(built):
    html = built.html.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.I)
    assert external == [], external
    assert not re.search(r"""url\(\s*["']?(?:https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert html.count("<svg") == len(built.plots) == 13  # 4 cost axes x 3 tasks + AdvGLUE (sst2)
    assert html.count("<table") == 6  # the overview, four tasks and the failed runs
    for text in ("Recommended for your budget", "88.0 ± 2.5", "CUDA out of memory", "lora (r=64, alpha=16)"):
        assert text in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids must be unique across the inlined plots"


def test_markdown_is_written_with_plot_files(built):
    md = built.markdown.read_text(encoding="utf-8")
    assert "## sst2" in md and "| Variant | n | Accuracy | AdvGLUE acc | Robust acc |" in md
    assert "| Robust acc | AdvGLUE acc drop | Robust acc drop |" in md
    # the relative drop from the clean accuracy: (88.0 - 46.0) / 88.0 = 48%; no robust acc, no drop
    assert f"| ★ {LORA} | 3 | **88.0 ± 2.5** | 46.0 ± 2.5 | — | 48% | — | 147k (0.65%) |" in md
    assert "| ◇ adapter (reduction_factor=16) | 2 |" in md  # dominated only within noise
    assert "## Overview" in md and "| full | 56.0 ± 12.7 | 84.0 | 92.0 ± 2.5 | 88.0 | 80.0 |" in md
    assert "## Failed runs" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 13 and all((built.markdown.parent / link).is_file() for link in links)
    assert all(p.read_text().startswith("<svg") for p in built.plots)


def test_plots_are_deterministic(built, report):
    again = {p.name: p.svg + "\n" for p in task_plots(task(report, "cola"))}
    assert len(again) == 4
    assert again == {p.stem: p.read_text() for p in built.plots if p.stem in again}


def subset(dest: Path, *patterns: str) -> Path:
    """A results dir with the fixture runs whose directory names match ``patterns``: fewer plots, faster."""
    for pattern in patterns:
        for run in FIXTURES.glob(pattern):
            shutil.copytree(run, dest / run.name)
    return dest


def test_default_out_dir_is_under_the_results(tmp_path):
    results = subset(tmp_path / "runs", "stsb-*")
    paths = build_report(results)
    assert paths.html == results / "report" / "report.html" and paths.markdown.is_file()


# --- bad input -------------------------------------------------------------------------------------


def test_a_corrupt_file_among_good_ones_is_skipped(tmp_path):
    results = subset(tmp_path / "runs", "stsb-*", "mnli-*")
    (results / "broken").mkdir()
    (results / "broken" / "result.json").write_text("{not json", encoding="utf-8")
    (results / "future").mkdir()
    future = json.loads(next(FIXTURES.glob("stsb-*/result.json")).read_text())
    future["run_info"]["schema_version"] = 99
    (results / "future" / "result.json").write_text(json.dumps(future))
    warnings: list[str] = []
    paths = build_report(results, tmp_path / "out", on_warning=warnings.append)
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert "broken/result.json" in warnings[0] and "newer than this nluforge" in warnings[1]
    assert "Unreadable result files" in paths.html.read_text()


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "results directory not found"),
        ("empty", "no result.json found"),
        ("corrupt", "is not a valid nluforge result"),
    ],
)
def test_bad_input_is_a_one_line_user_error(tmp_path, setup, message):
    results = tmp_path / "runs"
    if setup != "missing":
        (results / "run").mkdir(parents=True)
    if setup == "corrupt":
        (results / "run" / "result.json").write_text('{"run_info": {"id": 1}}')
    with pytest.raises(UserError, match=message) as err:
        build_report(results, tmp_path / "out")
    assert "\n" not in str(err.value)


# --- lean import and CLI ---------------------------------------------------------------------------


def test_report_imports_no_torch(tmp_path):
    code = (
        "import sys; import nluforge.report as r; r.build_report(sys.argv[1], sys.argv[2]); "
        "heavy = [m for m in ('torch', 'transformers', 'nluforge.tasks') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    results = subset(tmp_path / "runs", "mnli-*")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(results), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def nluforge(*args: str) -> subprocess.CompletedProcess:
    """Run the installed console script, with a wide terminal so table rows stay on one line."""
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    if os.environ.get("PYTHONPATH"):  # a checkout run with PYTHONPATH=src tests its own code
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [str(VENV_BIN / "nluforge"), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_prints_the_tables_and_the_paths(tmp_path):
    results = subset(tmp_path / "runs", "sst2-*-full-*", "sst2-*-lora-*", "stsb-*")
    proc = nluforge("report", str(results), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sst2 · primary metric: accuracy" in out and "stsb · primary metric: Pearson" in out
    assert re.search(r"★ lora \(r=8, alpha=16\)\s+│\s+3\s+│\s+88\.0 ± 2\.5\s+│\s+46\.0 ± 2\.5\s+│", out)
    assert "Trainable-parameter budget" in out and "Failed runs" in out
    assert f"report.html  {tmp_path / 'out' / 'report.html'}" in out
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_missing_dir_is_a_one_line_error(tmp_path):
    proc = nluforge("report", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: results directory not found: {tmp_path / 'nope'}"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_warns_about_a_corrupt_file(tmp_path):
    results = subset(tmp_path / "runs", "stsb-*")
    (results / "bad").mkdir()
    (results / "bad" / "result.json").write_text("")
    proc = nluforge("report", str(results))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: skipped an unreadable result: ") and proc.stderr.count("\n") == 1


def test_attack_steps_are_not_in_a_variants_name_but_keep_two_runs_apart():
    plain = {"method": "full", "attack": [{"method": "deepwordbug", "max_examples": 40}]}
    assert variant_label(plain) == "full"
    labels = label_variants({"a": plain, "b": {"method": "full", "attack": [{"method": "pwws"}]}})
    assert labels["a"] != labels["b"] and all(v.startswith("full · attack=") for v in labels.values())
