"""Every adaptation method on the ``default`` model, measured on equal terms (issue #3).

    .venv/bin/python benchmarks/methods.py --parts sweep,sst2,rte,kshot --work-dir /tmp/methods --out methods.json

Parts (each its own results directory under ``--work-dir``; rerunning skips finished cells, so an
interrupted benchmark resumes where it stopped):

- ``sweep``: the small learning-rate sweep for ``full`` and ``lora`` (r=8), on a seeded 4,000-example
  SST-2 subset, one epoch. The best learning rate of each (SST-2 dev accuracy) is then used for the
  20k run. Selecting on the dev set is what GLUE papers do; it is recorded here, not hidden.
- ``sst2``: every registered method on 20,000 seeded SST-2 training examples, one epoch, evaluated on
  the SST-2 dev set and AdvGLUE-SST-2.
- ``lora20k``: the LoRA-vs-full gap at the 20k scale. The 4k sweep's best LoRA lr (5e-3, 125 steps)
  was 7 points behind full at 20k (625 steps), so this sweeps LoRA r=8 again on the 20k examples:
  targets ``query,value`` (Hu et al.'s GLUE setting) and all linear layers (``query,key,value,dense``:
  the attention output, FFN and pooler; Dettmers et al. 2023 found all-layer LoRA needed to match full
  fine-tuning), each at ``LORA20K_LRS``; and full at a second lr so both sides are swept at this scale.
  Cells share the ``sst2`` results directory, so the cells of the ``sst2`` part are reused.
- ``rte``: every method on the full RTE training set (2,490 pairs), ``--rte-epochs`` epochs (default 1:
  the CPU budget; papers train RTE for 10-20 epochs, so absolute RTE numbers here are low).
- ``kshot``: the LM-BFF few-shot setting: K=16 examples per class, 5 seeds (the sampled examples change
  with the seed), ``full``, ``prompt_based``, ``lora`` and ``prompt_tuning`` on SST-2 and RTE; batch 8,
  128 steps, no model selection on the real dev set (evaluated once, at the end). Mean ± std.

- ``kshot16``: issue #16's few-shot table: K=16 per class, LM-BFF's 5 seeds, SST-2 and RTE:
  ``setfit`` (R=20, the paper's settings) through the pipeline, and the frozen-embedding baselines
  (logistic regression and cosine k-NN on the default model's mean-pooled features), computed by
  :func:`nluforge.eval.embed_baselines.task_baselines` on the same sampled examples.
- ``probe20k``: ``linear_probe`` (closed-form, pooling auto = mean) on 20,000 SST-2 examples.
- ``sst2base``: the frozen-embedding baselines (logistic regression, cosine 10-NN) of the default model
  fitted on the same 20,000 SST-2 examples as the ``sst2`` part, through
  :func:`nluforge.eval.embed_baselines.task_baselines` (not the pipeline's ``baselines`` stage, which caps
  its training subset at 5,000 examples).

``--pooling`` (default ``auto``: mean for the default model) is every cell's ``pooling``; it is in the
JSON and the table titles. Issue #16 re-measures the tables with ``auto`` against the earlier ``cls``
tables. With a pooling other than ``cls``, the ``sst2``/``rte`` parts skip the methods whose computation
does not read the pooled features (``POOLING_FREE``) and say so in the table. ``--collect-only`` reads
the finished cells and prints the tables without running the missing ones (they show as ``missing``).

Each method runs at its paper's recommended settings scaled to a 6-layer, 384-wide encoder
(``SETTINGS`` below). Learning rates that the papers tune per model come from the registry's
defaults, which were chosen by short measured runs (BENCHMARKS.md, "calibration"), except full and
lora on SST-2, whose learning rates come from the sweep. Cells run on the ``process`` backend with
``--workers`` workers and one torch thread each; throughput and peak memory are per cell process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GLUE_DIR, dump, machine, print_table  # noqa: E402

METHOD_ORDER = ["full", "linear_probe", "bitfit", "lora", "adalora", "ia3", "prompt_tuning", "prefix_tuning",
                "adapter", "dylora", "lopa", "lst", "prompt_based"]  # setfit: few-shot only (kshot16)
# method -> (method_params, why). Paper settings, scaled from BERT/RoBERTa-base (768 wide, 12 layers) to
# MiniLM-L6 (384 wide, 6 layers) where a width or a count depends on the model.
SETTINGS: dict[str, tuple[dict, str]] = {
    "full": ({}, "all weights; BERT recipe (batch 32, warmup 6%, wd 0.01)"),
    "linear_probe": ({}, "frozen encoder, head only"),
    "bitfit": ({"include_layernorm": True}, "biases (+LayerNorm, as in the paper's code) and head"),
    "lora": ({"r": 8, "alpha": 16, "dropout": 0.1}, "r=8 on query,value (Hu et al. GLUE setting)"),
    "adalora": ({"init_r": 12, "target_r": 8, "alpha": 16}, "budget 12 -> 8 on query,value, ΔT=1, γ=0.1"),
    "ia3": ({}, "key, value and FFN-down rescaling vectors"),
    "prompt_tuning": ({"num_virtual_tokens": 20, "init": "vocab"},
                      "20 tokens (Lester: 20-100; shorter for a small model), vocab init"),
    "prefix_tuning": ({"num_virtual_tokens": 20}, "P-tuning v2: 20 prefixes per layer, no reparameterisation"),
    "adapter": ({"placement": "houlsby", "reduction_factor": 16}, "Houlsby, bottleneck 24 (384/16)"),
    "dylora": ({"r": 8, "alpha": 16}, "ranks 1..8 sampled per step on query,value"),
    "lopa": ({"num_virtual_tokens": 10, "rank": 4}, "m=10 tokens, rank 4 (paper: 1..4)"),
    "lst": ({"reduction_factor": 8}, "side width 48 (384/8), gates T=0.1, pruned-backbone init"),
    "prompt_based": ({"prompts": [0]}, "LM-BFF manual template, MLM head tied init"),
    "setfit": ({"num_iterations": 20}, "R=20 pair rounds, CosineSimilarityLoss, lr 2e-5, batch 16, logreg head"),
}
LORA_ALL_LINEAR = ["query", "key", "value", "dense"]
LORA20K_LRS = [5e-4, 1e-3, 2e-3, 5e-3]
FULL20K_LRS = [5e-5, 1e-4, 2e-4]
SWEEP_LRS = {"full": [2e-5, 5e-5, 1e-4, 2e-4, 5e-4], "lora": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2]}
KSHOT_METHODS = ["full", "prompt_based", "lora", "prompt_tuning"]
# K-shot: full and prompt_based share one lr (same parameters updated; LM-BFF uses one lr for both).
KSHOT_LR = {"full": 1e-4, "prompt_based": 1e-4, "lora": 5e-3, "prompt_tuning": 1e-1}
KSHOT_SEEDS = [13, 21, 42, 87, 100]  # LM-BFF's five data seeds
# Methods whose computation does not read the pooled features: re-running them with another pooling
# would give the same model, so the sst2/rte parts skip them unless pooling is cls.
POOLING_FREE = {
    "prompt_based": "reads the MLM logits at the [MASK] token, not pooled features",
    "lst": "the side network's own head reads the side network's first token; the backbone's pooled "
           "output is never used",
    "linear_probe": "reads pooled features, but a closed-form fit since issue #16: measured by the probe20k part",
}
QUIET_EVAL = {"advglue": False, "latency": False, "save_predictions": False}
DEV_SIZE = {"sst2": 872, "rte": 277}
# The lrs of the recorded 20k SST-2 table (full and lora from the 4k sweep, the rest the registry defaults
# of the time): the sst2 part uses them when --work-dir holds no sweep, so a re-measurement (issue #16's
# pooling) changes nothing else; LoRA's registry default has since moved to 2e-3.
SST2_TABLE_LR = {"full": 2e-4, "linear_probe": 1e-3, "bitfit": 3e-3, "lora": 5e-3, "adalora": 2e-2, "ia3": 3e-2,
                 "prompt_tuning": 1e-1, "prefix_tuning": 2e-2, "adapter": 5e-3, "dylora": 1e-2, "lopa": 5e-3,
                 "lst": 3e-3, "prompt_based": 1e-4}
# The tables measured before the pooling option existed (the architecture's [CLS] pooler), same settings
# and lrs as the sst2 and kshot parts: BENCHMARKS.md "Every method, SST-2, 20,000 examples" (commit
# 171a63f) and "K-shot" (commit c50796c). Dev accuracy in %, as recorded there (0.1 points).
CLS_RECORDED = {"sst2": {
    "full": 87.5, "linear_probe": 55.3, "bitfit": 82.7, "lora": 80.2, "adalora": 83.0, "ia3": 85.6,
    "prompt_tuning": 81.1, "prefix_tuning": 83.0, "adapter": 84.3, "dylora": 79.7, "lopa": 78.7, "lst": 83.4,
    "prompt_based": 88.1}}
CLS_KSHOT_RECORDED = {  # per seed 13 / 21 / 42 / 87 / 100
    ("sst2", "full"): [69.3, 62.8, 65.6, 66.1, 57.5], ("sst2", "prompt_based"): [67.3, 66.7, 60.9, 62.0, 62.5],
    ("sst2", "lora"): [68.2, 70.9, 64.1, 52.8, 61.0], ("sst2", "prompt_tuning"): [57.8, 52.1, 59.4, 52.5, 54.5],
    ("rte", "full"): [52.3, 51.3, 49.5, 47.3, 52.0], ("rte", "prompt_based"): [50.9, 49.8, 49.8, 46.9, 45.5],
    ("rte", "lora"): [54.9, 49.8, 55.6, 49.5, 50.9], ("rte", "prompt_tuning"): [49.5, 52.3, 47.3, 51.3, 49.8],
}


def _correct(acc: float, n: int):
    """A 0/1 vector with ``acc`` of ``n`` correct: the example bootstrap of an accuracy depends only on
    how many examples are right, so a recorded accuracy is enough to resample it."""
    import numpy as np

    v = np.zeros(n)
    v[: round(acc * n)] = 1.0
    return v


def accuracy_ci(acc: float, n: int) -> tuple[float, float]:
    """95% bootstrap interval (in points) of an accuracy over ``n`` dev examples (nluforge.report.stats)."""
    import numpy as np

    from nluforge.report.stats import resample_index

    reps = _correct(acc, n)[resample_index(n)].mean(axis=1)
    lo, hi = np.percentile(100 * reps, [2.5, 97.5])
    return round(float(lo), 1), round(float(hi), 1)


def difference_ci(acc: float, cls_points: float, n: int) -> tuple[float, float, float]:
    """(acc - cls, lo, hi) in points, with an UNPAIRED 95% bootstrap interval: the two runs' dev examples
    are resampled independently, because the recorded CLS runs kept no per-example predictions. On
    the same dev set a paired interval would be narrower, so this one is conservative."""
    import numpy as np

    from nluforge.report.stats import resample_index

    a = _correct(acc, n)[resample_index(n)].mean(axis=1)
    b = _correct(cls_points / 100, n)[resample_index(n, seed=1)].mean(axis=1)
    lo, hi = np.percentile(100 * (a - b), [2.5, 97.5])
    return round(100 * acc - cls_points, 1), round(float(lo), 1), round(float(hi), 1)


def dev_size(r: dict) -> int:
    return DEV_SIZE[r["task"]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("NLUFORGE_DATA_DIR") or str(GLUE_DIR))
    parser.add_argument("--work-dir", default="/tmp/nluforge-methods-bench")
    parser.add_argument("--parts", default="sweep,sst2,rte,kshot")
    parser.add_argument("--methods", default=",".join(METHOD_ORDER), help="subset for the sst2 and rte parts")
    parser.add_argument("--sst2-train", type=int, default=20000)
    parser.add_argument("--sweep-train", type=int, default=4000)
    parser.add_argument("--rte-epochs", type=float, default=1.0)
    parser.add_argument("--kshot-steps", type=int, default=128)
    parser.add_argument("--kshot-tasks", default="sst2,rte")
    parser.add_argument("--kshot-methods", default=",".join(KSHOT_METHODS), help="subset for the kshot part")
    parser.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean", "max"],
                        help="every cell's pooling (issue #16); recorded in the JSON and the table titles")
    parser.add_argument("--collect-only", action="store_true",
                        help="read finished cells and print the tables; run nothing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    return parser.parse_args()


def cell(args, task: str, method: str, *, lr=None, params=None, n=None, k=None, seed=None, train=None,
         evaluation=None):
    from nluforge.experiments.config import resolve

    return resolve({
        "task": task, "model": "default", "method": method,
        "method_params": SETTINGS[method][0] if params is None else params,
        "seed": args.seed if seed is None else seed, "pooling": args.pooling,
        "data": {"data_dir": args.data_dir, "max_train_samples": n, "k_shot": k, "max_length": 128},
        "train": {"epochs": 1, "batch_size": 32, "lr": lr, "num_threads": 1, "keep_checkpoints": False,
                  **(train or {})},
        "eval": evaluation or {"advglue": True, "latency": True, "save_predictions": True},
    })


COLLECT_ONLY = False  # set from --collect-only: run() only reads finished cells


def run(cells, results_dir: Path, workers: int) -> dict[str, dict]:
    """Run (or skip, when finished) the cells; return result dicts by run id."""
    from nluforge.experiments.runners import RunnerOptions, run_grid
    from nluforge.results.store import iter_results

    def on_event(event):
        if event.kind == "finish":
            r = event.result
            print(f"[{time.strftime('%H:%M:%S')}] {r.run_info.status:9s} {r.run_info.id} "
                  f"{r.run_info.wall_time_s or 0:.0f}s {r.run_info.error or ''}", file=sys.stderr, flush=True)

    if not COLLECT_ONLY:
        run_grid(cells, results_dir, RunnerOptions("process", workers=workers, num_cpus=1), on_event=on_event)
    found = {run_dir.name: r for run_dir, r in iter_results(results_dir)} if results_dir.is_dir() else {}
    return {c.run_id(): found.get(c.run_id()) for c in cells}


def row(cfg, result) -> dict:
    """One table row: the config's identity, the metric, the costs."""
    from nluforge.methods import METHODS

    out = {"task": cfg.task, "method": cfg.method, "seed": cfg.seed,
           "lr": cfg.train.lr or METHODS.entry(cfg.method).meta["default_lr"], "params": cfg.method_params}
    if result is None or result.run_info.status != "completed":
        out["status"] = result.run_info.status if result else "missing"
        out["error"] = result.run_info.error if result else None
        return out
    trained = result.metrics.get("trained", {})
    dev = trained.get("validation") or next(iter(trained.values()), {})
    c = result.cost
    out.update({
        "status": "completed", "dev": {k: round(v, 4) for k, v in dev.items()},
        "advglue": trained.get(f"advglue_{cfg.task}", {}).get("accuracy"),
        "trainable_params": c.trainable_params, "total_params": c.total_params,
        "peak_memory_mb": c.peak_memory_mb, "examples_per_s": c.train_examples_per_s,
        "train_time_s": c.train_time_s, "wall_time_s": result.run_info.wall_time_s,
        "latency_ms_bs32": c.latency_ms_bs32, "model_size_mb": c.model_size_mb,
        "pooling": result.meta.get("pooling"),
    })
    frozen = (result.metrics.get("baselines") or {}).get("validation") or {}
    if frozen.get("logreg"):  # the pipeline's baselines stage: the base encoder, frozen, on this run's data
        out["frozen_logreg"] = frozen["logreg"].get("accuracy")
    return out


def primary(r: dict) -> float | None:
    dev = r.get("dev") or {}
    return dev.get("accuracy", dev.get("matthews_corrcoef", dev.get("pearson")))


def sweep_part(args, work: Path) -> dict:
    cells = [cell(args, "sst2", m, lr=lr, n=args.sweep_train, evaluation=QUIET_EVAL)
             for m, lrs in SWEEP_LRS.items() for lr in lrs]
    found = run(cells, work / "sweep", args.workers)
    rows = [row(c, found[c.run_id()]) for c in cells]
    best = {}
    for m in SWEEP_LRS:
        done = [r for r in rows if r["method"] == m and primary(r) is not None]
        if done:
            best[m] = max(done, key=primary)["lr"]
    for r in rows:
        r["acc"] = primary(r)
        r["best"] = "*" if best.get(r["method"]) == r["lr"] else ""
    print_table(rows, ["method", "lr", "acc", "best", "examples_per_s", "status"],
                f"lr sweep: SST-2, {args.sweep_train} examples, 1 epoch, seed {args.seed}")
    return {"rows": rows, "best_lr": best}


def main_part(args, work: Path, task: str, best_lr: dict) -> dict:
    methods = [m for m in args.methods.split(",") if m]
    skipped = {m: POOLING_FREE[m] for m in methods if args.pooling != "cls" and m in POOLING_FREE}
    methods = [m for m in methods if m not in skipped]
    for m, why in skipped.items():
        print(f"{task}: {m} not run with pooling {args.pooling}: {why}", file=sys.stderr)
    n = args.sst2_train if task == "sst2" else None
    train = {} if task == "sst2" else {"epochs": args.rte_epochs}
    cells = [cell(args, task, m, lr=best_lr.get(m) if task == "sst2" else None, n=n, train=train)
             for m in methods]
    found = run(cells, work / task, args.workers)
    rows = [row(c, found[c.run_id()]) for c in cells]
    for r in rows:
        r["acc"] = primary(r)
        r["settings"] = SETTINGS[r["method"]][1]
        if r.get("trainable_params") and r.get("total_params"):
            r["trainable_%"] = round(100 * r["trainable_params"] / r["total_params"], 3)
        if r["acc"] is not None and r["dev"].get("accuracy") is not None:
            r["ci95"] = accuracy_ci(r["acc"], dev_size(r))
        cls = CLS_RECORDED.get(task, {}).get(r["method"])
        if args.pooling != "cls" and cls is not None and r["acc"] is not None:
            r["cls_recorded"], r["minus_cls"] = cls, difference_ci(r["acc"], cls, dev_size(r))
    print_table(rows, ["method", "lr", "acc", "ci95", "advglue", "cls_recorded", "minus_cls", "trainable_params",
                       "trainable_%", "peak_memory_mb", "examples_per_s", "train_time_s", "wall_time_s", "status"],
                f"{task}: {f'{n} examples' if n else 'full train set'}, {train.get('epochs', 1)} epoch(s), "
                f"seed {args.seed}, pooling {args.pooling}")
    for m, why in skipped.items():
        print(f"  {m}: not re-run with pooling {args.pooling}: {why}")
    by = {r["method"]: r for r in rows if r.get("status") == "completed"}
    summary = {}
    if "full" in by and "lst" in by:
        summary["lst_peak_memory_saving_%"] = round(
            100 * (1 - by["lst"]["peak_memory_mb"] / by["full"]["peak_memory_mb"]), 1)
    if "full" in by and "lora" in by:
        summary["lora_minus_full_points"] = round(100 * (primary(by["lora"]) - primary(by["full"])), 2)
    if summary:
        print(f"{task} summary: {summary}")
    return {"rows": rows, "summary": summary, "skipped": skipped}


def lora20k_part(args, work: Path) -> dict:
    n = args.sst2_train
    base = SETTINGS["lora"][0]
    variants = [("query,value", base), ("all linear", {**base, "target_modules": LORA_ALL_LINEAR})]
    cells = [(name, cell(args, "sst2", "lora", lr=lr, params=params, n=n))
             for name, params in variants for lr in LORA20K_LRS]
    cells += [("all", cell(args, "sst2", "full", lr=lr, n=n)) for lr in FULL20K_LRS]
    found = run([c for _, c in cells], work / "sst2", args.workers)
    rows = []
    for targets, c in cells:
        r = row(c, found[c.run_id()])
        r["targets"], r["acc"] = targets, primary(r)
        rows.append(r)
    done = [r for r in rows if r["acc"] is not None]
    best = {m: max((r for r in done if r["method"] == m), key=lambda r: r["acc"], default=None)
            for m in ("lora", "full")}
    summary = {}
    if best["lora"] and best["full"]:
        summary = {"best_lora": {k: best["lora"][k] for k in ("targets", "lr", "acc", "trainable_params")},
                   "best_full": {k: best["full"][k] for k in ("lr", "acc")},
                   "lora_minus_full_points": round(100 * (best["lora"]["acc"] - best["full"]["acc"]), 2)}
    for r in rows:
        r["best"] = "*" if any(b is r for b in best.values()) else ""
    print_table(rows, ["method", "targets", "lr", "acc", "best", "trainable_params", "examples_per_s",
                       "train_time_s", "status"], f"LoRA r=8 vs full: SST-2, {n} examples, 1 epoch, seed {args.seed}")
    if summary:
        print(f"lora20k summary: {summary}")
    return {"rows": rows, "summary": summary}


def kshot_part(args, work: Path) -> dict:
    steps = args.kshot_steps
    methods = [m for m in args.kshot_methods.split(",") if m]
    evaluation = {**QUIET_EVAL, "save_predictions": True}
    cells = [cell(args, task, m, lr=KSHOT_LR[m], k=16, seed=seed, evaluation=evaluation,
                  train={"batch_size": 8, "max_steps": steps, "eval_every": steps, "warmup_ratio": 0.0})
             for task in args.kshot_tasks.split(",") for m in methods for seed in KSHOT_SEEDS]
    found = run(cells, work / "kshot", args.workers)
    rows = [row(c, found[c.run_id()]) for c in cells]
    table = []
    for task in args.kshot_tasks.split(","):
        for m in methods:
            done = [r for r in rows if r["task"] == task and r["method"] == m and primary(r) is not None]
            accs = [primary(r) for r in done]
            mean, std = _mean_std(accs)
            entry = {"task": task, "method": m, "lr": KSHOT_LR[m], "seeds": len(accs), "mean": mean, "std": std,
                     "per_seed": [round(100 * a, 1) for a in accs], "seed_ids": [r["seed"] for r in done]}
            cls = CLS_KSHOT_RECORDED.get((task, m))
            if args.pooling != "cls" and cls is not None and len(accs) == len(KSHOT_SEEDS):
                diffs = [100 * a - c for a, c in zip(accs, cls, strict=True)]  # same seed, same 32 examples
                entry["cls_recorded"] = _mean_std([c / 100 for c in cls])
                entry["minus_cls"] = (round(statistics.mean(diffs), 1), round(statistics.stdev(diffs), 1))
            table.append(entry)
        frozen = {r["seed"]: r["frozen_logreg"] for r in rows if r["task"] == task and r.get("frozen_logreg")}
        if frozen:  # the baselines stage of the cells above: same K examples per seed
            accs = [frozen[s] for s in KSHOT_SEEDS if s in frozen]
            mean, std = _mean_std(accs)
            table.append({"task": task, "method": "frozen logreg (baselines stage)", "seeds": len(accs),
                          "mean": mean, "std": std, "per_seed": [round(100 * a, 1) for a in accs],
                          "seed_ids": [s for s in KSHOT_SEEDS if s in frozen]})
    print_table(table, ["task", "method", "lr", "seeds", "mean", "std", "cls_recorded", "minus_cls", "per_seed"],
                f"k-shot: K=16 per class, {len(KSHOT_SEEDS)} seeds, batch 8, {steps} steps, pooling {args.pooling}")
    return {"rows": rows, "table": table}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    mean = round(100 * statistics.mean(values), 1) if values else None
    return mean, (round(100 * statistics.stdev(values), 1) if len(values) > 1 else None)


def kshot16_part(args, work: Path) -> dict:
    """SetFit and the frozen-embedding baselines at K=16 per class over LM-BFF's seeds."""
    import torch

    from nluforge.eval.embed_baselines import task_baselines
    from nluforge.models.loading import load_model, load_tokenizer
    from nluforge.tasks import load_task

    tasks = args.kshot_tasks.split(",")
    cells = [cell(args, task, "setfit", k=16, seed=seed, evaluation=QUIET_EVAL) for task in tasks
             for seed in KSHOT_SEEDS]
    found = run(cells, work / "kshot16", args.workers)
    rows = [row(c, found[c.run_id()]) for c in cells]
    torch.set_num_threads(1)
    tokenizer = load_tokenizer("default")
    baselines: dict[str, dict[str, list[float]]] = {}
    for task in tasks:
        for seed in KSHOT_SEEDS:
            data = load_task(task, data_dir=args.data_dir, k_shot=16, seed=seed)
            model = load_model("default", num_labels=data.spec.num_labels, pooling=args.pooling)
            res = task_baselines(model, tokenizer, data, splits=["validation"], seed=seed)["validation"]
            for kind, metrics in res.items():
                baselines.setdefault(f"{task}:{kind}", []).append(metrics["accuracy"])
    table = []
    for task in tasks:
        accs = [primary(r) for r in rows if r["task"] == task and primary(r) is not None]
        mean, std = _mean_std(accs)
        table.append({"task": task, "method": "setfit", "seeds": len(accs), "mean": mean, "std": std,
                      "per_seed": [round(100 * a, 1) for a in accs]})
        for kind in ("logreg", "knn"):
            accs = baselines.get(f"{task}:{kind}", [])
            mean, std = _mean_std(accs)
            table.append({"task": task, "method": f"frozen {kind}", "seeds": len(accs), "mean": mean, "std": std,
                          "per_seed": [round(100 * a, 1) for a in accs]})
    print_table(table, ["task", "method", "seeds", "mean", "std", "per_seed"],
                f"k-shot (issue #16): K=16 per class, seeds {KSHOT_SEEDS}, default model, pooling {args.pooling}")
    return {"rows": rows, "table": table}


def probe20k_part(args, work: Path) -> dict:
    c = cell(args, "sst2", "linear_probe", n=args.sst2_train)
    r = row(c, run([c], work / "probe20k", args.workers)[c.run_id()])
    r["acc"] = primary(r)
    print_table([r], ["method", "acc", "advglue", "train_time_s", "wall_time_s", "status"],
                f"linear_probe (closed form, pooling auto): SST-2, {args.sst2_train} examples")
    return {"rows": [r]}


def sst2base_part(args, work: Path) -> dict:
    """The frozen-embedding baselines on the sst2 part's 20,000 examples (same seed, same subset)."""
    import torch

    from nluforge.eval.embed_baselines import task_baselines
    from nluforge.models.loading import load_model, load_tokenizer
    from nluforge.models.pooling import pooling_of
    from nluforge.tasks import load_task

    out_file = work / "sst2base.json"
    if out_file.is_file():  # finished earlier: read, do not recompute
        import json

        return json.loads(out_file.read_text(encoding="utf-8"))
    if COLLECT_ONLY:
        return {"rows": [], "status": "missing"}
    from nluforge.core.io import atomic_write_json

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_task("sst2", data_dir=args.data_dir, max_train_samples=args.sst2_train, seed=args.seed)
    model = load_model("default", num_labels=data.spec.num_labels, pooling=args.pooling)
    res = task_baselines(model, load_tokenizer("default"), data, splits=["validation"], seed=args.seed)["validation"]
    rows = []
    for kind, metrics in res.items():
        acc = metrics["accuracy"]
        rows.append({"method": f"frozen {kind}", "acc": round(acc, 4), "ci95": accuracy_ci(acc, DEV_SIZE["sst2"]),
                     "train_examples": len(data.splits["train"])})
    report = {"rows": rows, "pooling": pooling_of(model), "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out_file, report)
    print_table(rows, ["method", "acc", "ci95", "train_examples"],
                f"frozen baselines: SST-2, {args.sst2_train} examples, pooling {args.pooling}")
    return report


def main() -> None:
    global COLLECT_ONLY
    args = parse_args()
    COLLECT_ONLY = args.collect_only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    parts = [p for p in args.parts.split(",") if p]
    report: dict = {"machine": machine(), "pooling": args.pooling, "settings": {m: s for m, (s, _) in SETTINGS.items()},
                    "sweep_lrs": SWEEP_LRS, "kshot_lr": KSHOT_LR, "args": vars(args)}
    best_lr: dict = {}
    t0 = time.perf_counter()
    if "sweep" in parts:
        report["sweep"] = sweep_part(args, work)
        best_lr = report["sweep"]["best_lr"]
    if "lora20k" in parts:
        report["lora20k"] = lora20k_part(args, work)
    for task in ("sst2", "rte"):
        if task in parts:
            if task == "sst2" and not best_lr and "sweep" not in parts:
                if (work / "sweep").exists():
                    best_lr = sweep_part(args, work)["best_lr"]  # finished cells are only read, not rerun
                else:
                    best_lr = dict(SST2_TABLE_LR)  # the recorded table's lrs
                    print(f"sst2: no sweep in {work}; using the recorded table's lrs {best_lr}", file=sys.stderr)
            report[task] = main_part(args, work, task, best_lr)
    if "kshot" in parts:
        report["kshot"] = kshot_part(args, work)
    if "kshot16" in parts:
        report["kshot16"] = kshot16_part(args, work)
    if "probe20k" in parts:
        report["probe20k"] = probe20k_part(args, work)
    if "sst2base" in parts:
        report["sst2base"] = sst2base_part(args, work)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    dump(report, args.out)


if __name__ == "__main__":
    main()
