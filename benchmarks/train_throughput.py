"""Training throughput: nluforge vs a transformers Trainer (dynamic padding, length-grouped) vs
padding to 128 tokens (the ``run_glue.py`` default), on the same SST-2 examples and hyperparameters.

    python benchmarks/train_throughput.py --examples 4000 --threads 1 --repeats 3 [--json out.json]

Each variant runs in its own subprocess, one after the other, with the same thread count, so the
ratios compare like with like. With ``--repeats N`` the fast variants (a), (b) and (d) run N times,
interleaved (a b a b ...), so a slow minute on a shared machine hits both; each variant reports its
median run, and the a/b spread over the N rounds is printed with the median ratio. (c) is ten times
slower and runs once. Optional (d) is nluforge with the whole epoch sorted into length buckets
(``group_by_length`` at least the batch count) instead of the default groups of 50 batches: less
padding, at a measured accuracy cost. Prints JSON and a table with examples/s, dev accuracy, a/b and a/c.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import GLUE_DIR, dump, machine, print_table  # noqa: E402

HP = {"lr": 5e-5, "batch_size": 32, "warmup_ratio": 0.06, "weight_decay": 0.01, "epochs": 1, "seed": 42,
      "max_length": 128}


def run_nluforge(examples: int, out_dir: str, group_by_length: bool | int = True) -> dict:
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import execute, prepare

    cfg = resolve({"task": "sst2", "model": "default", "method": "full", "seed": HP["seed"],
                   "data": {"data_dir": str(GLUE_DIR), "max_train_samples": examples,
                            "max_length": HP["max_length"]},
                   "train": {"lr": HP["lr"], "batch_size": HP["batch_size"], "epochs": HP["epochs"],
                             "warmup_ratio": HP["warmup_ratio"], "weight_decay": HP["weight_decay"],
                             "checkpoint_every": None, "group_by_length": group_by_length},
                   "eval": {"advglue": False, "latency": False, "save_predictions": False}})
    prep = prepare(cfg)
    from pathlib import Path

    result = execute(prep, Path(out_dir) / cfg.run_id(), show_progress=False)
    return {"examples_per_s": result.cost.train_examples_per_s, "train_time_s": result.cost.train_time_s,
            "dev_accuracy": result.metrics["trained"]["validation"]["accuracy"]}


def run_trainer(examples: int, out_dir: str, pad_to_max: bool) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from nluforge.models.loading import default_model_path
    from nluforge.tasks import load_task

    data = load_task("sst2", data_dir=str(GLUE_DIR), max_train_samples=examples, seed=HP["seed"])
    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    padding = "max_length" if pad_to_max else False

    def dataset(split):
        enc = tok([t[0] for t in split.texts], truncation=True, max_length=HP["max_length"], padding=padding)
        return Dataset.from_dict({**enc, "labels": list(split.labels)})

    train, dev = dataset(data.splits["train"]), dataset(data.splits["validation"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=HP["batch_size"],
                             per_device_eval_batch_size=64, learning_rate=HP["lr"],
                             num_train_epochs=HP["epochs"], weight_decay=HP["weight_decay"],
                             warmup_steps=HP["warmup_ratio"], seed=HP["seed"], report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=True,
                             train_sampling_strategy="random" if pad_to_max else "group_by_length",
                             disable_tqdm=True)
    collator = default_data_collator if pad_to_max else DataCollatorWithPadding(tok)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    # With train_sampling_strategy="group_by_length", transformers 5 also length-groups the eval
    # sampler, so predictions come back shuffled: score them against the label_ids returned with them.
    out = trainer.predict(dev)
    acc = float((np.argmax(out.predictions, -1) == np.asarray(out.label_ids)).mean())
    return {"examples_per_s": examples * HP["epochs"] / elapsed, "train_time_s": elapsed, "dev_accuracy": acc}


def child(variant: str, examples: int, threads: int, out_dir: str) -> None:
    import torch

    torch.set_num_threads(threads)
    if variant in "ad":
        res = run_nluforge(examples, out_dir, group_by_length=True if variant == "a" else 10**6)
    else:
        res = run_trainer(examples, out_dir, pad_to_max=variant == "c")
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="abc")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs of (a), (b) and (d); medians reported")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", default="/tmp/nluforge-bench-throughput")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.examples, args.threads, args.out_dir)
    names = {"a": "nluforge", "b": "Trainer dynamic+grouped", "c": "Trainer pad-128",
             "d": "nluforge, whole-epoch length buckets"}
    fast = [v for v in args.variants if v in "abd"]
    order = fast * max(1, args.repeats) + [v for v in args.variants if v not in "abd"]
    runs: dict[str, list[dict]] = {}
    for v in order:
        cmd = [sys.executable, __file__, "--child", v, "--examples", str(args.examples),
               "--threads", str(args.threads), "--out-dir", f"{args.out_dir}/{v}{len(runs.get(v, []))}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            sys.exit(f"variant {v} failed:\n{out.stderr[-3000:]}")
        runs.setdefault(v, []).append(json.loads(line[-1][7:]))
        print(f"[{time.strftime('%H:%M:%S')}] {v}: {runs[v][-1]}", file=sys.stderr, flush=True)
    rows = []
    for v in args.variants:
        ordered = sorted(runs[v], key=lambda r: r["examples_per_s"])
        median = ordered[(len(ordered) - 1) // 2]
        rows.append({"variant": v, "name": names[v], **median, "runs": len(ordered),
                     "examples_per_s_all": [r["examples_per_s"] for r in runs[v]]})
    by = {r["variant"]: r for r in rows}
    ratios = {f"a/{k}": by["a"]["examples_per_s"] / by[k]["examples_per_s"] for k in "bcd" if "a" in by and k in by}
    if "a" in runs and "b" in runs and len(runs["a"]) > 1:
        per_round = [x["examples_per_s"] / y["examples_per_s"] for x, y in zip(runs["a"], runs["b"], strict=True)]
        ratios["a/b per round"] = per_round
    report = {"benchmark": "train_throughput", "machine": machine() | {"threads": args.threads},
              "hyperparameters": HP | {"examples": args.examples}, "rows": rows, "ratios": ratios}
    dump(report, args.json)
    print_table(rows, ["variant", "name", "runs", "examples_per_s", "train_time_s", "dev_accuracy"],
                f"SST-2, {args.examples} examples, {args.threads} threads")
    print("ratios (of medians): " + ", ".join(f"{k} = {v:.3f}x" for k, v in ratios.items() if "round" not in k))
    if "a/b per round" in ratios:
        print("a/b per round: " + ", ".join(f"{x:.3f}x" for x in ratios["a/b per round"]))


if __name__ == "__main__":
    main()
