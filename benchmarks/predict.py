"""Inference throughput: ``nluforge predict`` against ``transformers.pipeline("text-classification")``.

    python benchmarks/predict.py [--run RUN_DIR] --rows 10000 --threads 1 --repeats 1 [--json out.json]

Both score the same model object (a finished SST-2 run, loaded once) on the same sentences, the first
``--rows`` of SST-2 train (``glue/SST-2/train.tsv.gz``, read with quoting off), one after the other
with the same thread count. Without ``--run`` the script first trains a small run (``full`` on 2,000
SST-2 train examples, 1 epoch) into ``--runs-dir``.

- (a) ``nluforge predict``: the command's own code path after the model is loaded: read the TSV,
  tokenize, predict in length-sorted batches of 64, softmax, write a CSV (atomically).
- (b) ``pipeline("text-classification", batch_size=64)``: the sentences as a list, batches in input
  order (each padded to its longest member), truncation at the run's ``max_length``.

Prints JSON and a table: rows/s of each, a/b, and the agreement of their predicted labels (%).
With ``--repeats N`` the two alternate (a b a b ...) and each reports its median time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import GLUE_DIR, dump, machine, print_table  # noqa: E402

BATCH = 64


def train_run(runs_dir: Path, examples: int) -> Path:
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import execute, prepare

    cfg = resolve({"task": "sst2", "model": "default", "method": "full", "seed": 42,
                   "data": {"data_dir": str(GLUE_DIR), "max_train_samples": examples},
                   "train": {"epochs": 1, "checkpoint_every": None},
                   "eval": {"advglue": False, "latency": False}})
    run_dir = runs_dir / cfg.run_id()
    if not (run_dir / "result.json").is_file():
        execute(prepare(cfg), run_dir, show_progress=False)
    return run_dir


def sst2_input(rows: int, folder: Path) -> Path:
    """The first ``rows`` sentences of SST-2 train as a TSV with a ``sentence`` column."""
    from nluforge.tasks.tables import read_table

    table = read_table(GLUE_DIR / "SST-2" / "train.tsv.gz")  # TSV: quoting off
    col = table.header.index("sentence")
    lines = ["sentence"]
    for _, fields in table.rows():
        lines.append(fields[col])
        if len(lines) > rows:
            break
    path = folder / "sst2_train_head.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_nluforge(model, tokenizer, t, input_file: Path, out: Path) -> tuple[float, list[str]]:
    import csv

    from nluforge.cli.predict import predict_rows
    from nluforge.tasks.custom import read_rows

    start = time.perf_counter()
    rows = read_rows(input_file, t.spec)
    predict_rows(model, tokenizer, t, rows, out, "csv", batch_size=BATCH, progress=False)
    seconds = time.perf_counter() - start
    with open(out, newline="", encoding="utf-8") as f:
        return seconds, [r["label"] for r in csv.DictReader(f)]


def run_pipeline(model, tokenizer, sentences: list[str], max_length: int) -> tuple[float, list[str]]:
    from transformers import pipeline

    clf = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu", batch_size=BATCH)
    start = time.perf_counter()
    out = clf(sentences, truncation=True, max_length=max_length)
    return time.perf_counter() - start, [o["label"] for o in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="A finished SST-2 run (default: train a small one).")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-predict"))
    ap.add_argument("--train-examples", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", help="Also write the JSON here.")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from nluforge.cli.targets import load_target_model, open_target

    run_dir = args.run or train_run(args.runs_dir, args.train_examples)
    t = open_target(str(run_dir), None, run_only=True)
    if t.spec.name != "sst2":
        raise SystemExit(f"{run_dir} is a {t.spec.name} run; give an SST-2 run")
    tokenizer, model = load_target_model(t)
    with tempfile.TemporaryDirectory() as tmp:
        input_file = sst2_input(args.rows, Path(tmp))
        sentences = input_file.read_text(encoding="utf-8").split("\n")[1:-1]
        run_nluforge(model, tokenizer, t, _head(input_file, 200, Path(tmp)), Path(tmp) / "warm.csv")
        run_pipeline(model, tokenizer, sentences[:200], t.cfg.data.max_length)  # warm-up both
        times_a, times_b = [], []
        for i in range(args.repeats):
            seconds, labels_a = run_nluforge(model, tokenizer, t, input_file, Path(tmp) / f"out{i}.csv")
            times_a.append(seconds)
            seconds, labels_b = run_pipeline(model, tokenizer, sentences, t.cfg.data.max_length)
            times_b.append(seconds)
    n = len(sentences)
    a, b = statistics.median(times_a), statistics.median(times_b)
    agree = sum(x == y for x, y in zip(labels_a, labels_b, strict=True)) / n
    rows = [{"variant": "a nluforge predict (TSV → CSV)", "rows": n, "seconds": round(a, 2),
             "rows_per_s": round(n / a, 1)},
            {"variant": "b transformers pipeline, batch 64", "rows": n, "seconds": round(b, 2),
             "rows_per_s": round(n / b, 1)}]
    report = {"benchmark": "predict", "run": str(run_dir), "rows": n, "batch_size": BATCH,
              "threads": args.threads, "repeats": args.repeats, "times_a": times_a, "times_b": times_b,
              "speedup_a_over_b": round(b / a, 3), "agreement": round(agree, 5), "results": rows,
              "machine": machine()}
    dump(report, args.json)
    print_table(rows, ["variant", "rows", "seconds", "rows_per_s"], "predict throughput")
    print(f"\na/b = {b / a:.2f}x   label agreement = {100 * agree:.2f}%   threads = {args.threads}")


def _head(path: Path, n: int, folder: Path) -> Path:
    lines = path.read_text(encoding="utf-8").split("\n")[: n + 1]
    head = folder / "warm.tsv"
    head.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return head


if __name__ == "__main__":
    main()
