"""Memory-efficient optimizers on SST-2 (issue #14): peak training memory by part, optimizer-state MB,
examples/s and dev accuracy (95% bootstrap interval over dev examples), for each optimizer with
``full`` and ``lora``, next to the inference-only peak memory of the same model and batch.

    PYTHONPATH=src nice -n 10 python benchmarks/optimizers.py --out bench-optim.json            # the issue's
    PYTHONPATH=src nice -n 10 python benchmarks/optimizers.py --n-train 2000 --no-sweep \\
        --mezo-steps 150 --mezo-eval-every 50 --out bench-optim-small.json                      # CPU budget

Defaults are the issue's settings: 20,000 training examples, one epoch, batch 32, one thread; every
optimizer's lr from a recorded sweep (``--sweep-train`` examples, the lrs in SWEEP_LRS, best dev accuracy);
MeZO for ``--mezo-steps`` steps with dev accuracy every ``--mezo-eval-every`` steps (its curve), and the
accuracy at the MeZO paper's 100k-step budget extrapolated from the curve (a straight line in log
steps through the last half of the curve: an estimate, flagged as such). ``--no-sweep`` uses the fixed
lrs in DEFAULT_LRS instead (recorded as "fixed" in the output).

Each training runs in its own process (``nluforge``'s process runner), so its peak resident memory is
its own; the inference reference also runs in its own process, forwarding the same length-grouped
batches of the same examples under ``torch.no_grad``. On CPU the peak is process RSS, so the figures
include the Python/torch runtime: the table gives the peak and the part of it above the runtime
(weights + gradients + optimizer state + activations), and the MeZO check compares both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GLUE_DIR, dump, machine, print_table  # noqa: E402

OPTIMIZERS = ["adamw", "adamw8bit", "galore", "adahessian", "mezo"]
METHODS = ["full", "lora"]
# The sweep: around each optimizer's usual fine-tuning rate (GaLore's GLUE runs use AdamW-like rates;
# AdaHessian's Hessian-normalised step takes a larger one; MeZO's paper sweeps 1e-7..1e-5 for full
# fine-tuning of RoBERTa-large and 1e-5..1e-4 for its LoRA).
SWEEP_LRS = {
    ("adamw", "full"): [5e-5, 1e-4, 2e-4], ("adamw", "lora"): [1e-3, 2e-3, 5e-3],
    ("adamw8bit", "full"): [5e-5, 1e-4, 2e-4], ("adamw8bit", "lora"): [1e-3, 2e-3, 5e-3],
    ("galore", "full"): [5e-5, 1e-4, 2e-4],
    ("adahessian", "full"): [1e-3, 1e-2, 5e-2], ("adahessian", "lora"): [1e-2, 5e-2, 1.5e-1],
    ("mezo", "full"): [1e-6, 1e-5, 1e-4], ("mezo", "lora"): [1e-5, 1e-4, 1e-3],
}
DEFAULT_LRS = {("adamw", "full"): 1e-4, ("adamw", "lora"): 2e-3, ("adamw8bit", "full"): 1e-4,
               ("adamw8bit", "lora"): 2e-3, ("galore", "full"): 1e-4, ("galore", "lora"): 2e-3,
               ("adahessian", "full"): 1e-3, ("adahessian", "lora"): 1e-2, ("mezo", "full"): 1e-5,
               ("mezo", "lora"): 1e-4}
QUIET = {"advglue": False, "latency": False, "baselines": False}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("NLUFORGE_DATA_DIR") or str(GLUE_DIR))
    parser.add_argument("--work-dir", default="/tmp/nluforge-optim-bench")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mezo-steps", type=int, default=20000)
    parser.add_argument("--mezo-eval-every", type=int, default=2000)
    parser.add_argument("--no-sweep", action="store_true", help="use DEFAULT_LRS instead of a sweep")
    parser.add_argument("--sweep-train", type=int, default=2000)
    parser.add_argument("--sweep-workers", type=int, default=1,
                        help="sweep cells at once (their speed and memory are not reported; on a GPU they share it)")
    parser.add_argument("--mezo-sweep-steps", type=int, default=2000, help="MeZO's steps per sweep cell (at most --mezo-steps)")
    parser.add_argument("--extra-lr", action="append", default=[], metavar="OPT/METHOD=LR",
                        help="also train this pair at this lr in the main part (repeatable); the best "
                             "dev accuracy per pair is the one the checks use")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None)
    parser.add_argument("--inference-probe", default=None, help=argparse.SUPPRESS)  # internal: one process
    return parser.parse_args()


def cell(args, optimizer: str, method: str, lr: float, n: int, *, steps: int | None = None,
         eval_every: int | None = None, predictions: bool = True):
    from nluforge.experiments.config import resolve

    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": lr, "num_threads": 1,
             "max_steps": steps, "eval_every": eval_every}
    if optimizer == "mezo":
        train["warmup_ratio"] = 0.0  # the paper's constant-rate spirit: no warmup (the decay stays)
    return resolve({"task": "sst2", "model": "default", "method": method, "optimizer": optimizer,
                    "seed": args.seed, "data": {"data_dir": args.data_dir, "max_train_samples": n},
                    "train": train, "eval": {**QUIET, "save_predictions": predictions}})


def run_cells(cells, results_dir: Path, workers: int = 1) -> dict:
    from nluforge.experiments.runners import RunnerOptions, run_grid
    from nluforge.results.store import iter_results

    def on_event(event):
        if event.kind == "finish":
            r = event.result
            print(f"[{time.strftime('%H:%M:%S')}] {r.run_info.status:9s} {r.run_info.id} "
                  f"{r.run_info.wall_time_s or 0:.0f}s {r.run_info.error or ''}", file=sys.stderr, flush=True)

    run_grid(cells, results_dir, RunnerOptions("process", workers=workers, num_cpus=1), on_event=on_event)
    found = {run_dir.name: (run_dir, r) for run_dir, r in iter_results(results_dir)}
    return {c.run_id(): found.get(c.run_id()) for c in cells}


def dev_accuracy(run_dir: Path) -> dict:
    """Dev accuracy with its 95% bootstrap interval over the dev examples (from predictions.jsonl)."""
    import numpy as np

    from nluforge.report.stats import Eval, bootstrap

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if r["split"] == "validation"]
    ev = bootstrap("accuracy", [Eval(np.array([r["label"] for r in rows]), np.array([r["prediction"] for r in rows]))])
    return {"acc": round(100 * ev.point, 2), "ci": [round(100 * ev.lo, 2), round(100 * ev.hi, 2)]}


def row(cfg, found) -> dict:
    out = {"optimizer": cfg.optimizer, "method": cfg.method, "lr": cfg.train.lr}
    if found is None or found[1].run_info.status != "completed":
        out["status"] = found[1].run_info.status if found else "missing"
        out["error"] = found[1].run_info.error if found else None
        return out
    run_dir, result = found
    c, meta = result.cost, result.meta.get("train", {})
    above = c.peak_memory_mb - (c.memory_runtime_mb or 0.0)
    out.update({"status": "completed", **(dev_accuracy(run_dir) if cfg.eval.save_predictions else {}),
                "peak_mb": c.peak_memory_mb, "peak_above_runtime_mb": round(above, 1),
                "weights_mb": c.memory_weights_mb, "grads_mb": c.memory_gradients_mb,
                "state_mb": c.optimizer_state_mb, "activations_mb": c.memory_activations_mb,
                "runtime_mb": c.memory_runtime_mb, "examples_per_s": c.train_examples_per_s,
                "steps": meta.get("steps"), "backend": meta.get("optimizer", {}).get("backend"),
                "history": [{"step": h["step"], "acc": round(100 * h["accuracy"], 2)}
                            for h in meta.get("history", []) if "accuracy" in h]})
    return out


def sweep(args, work: Path, pairs) -> dict:
    """The best lr per (optimizer, method) on ``--sweep-train`` examples (MeZO: its fixed step budget)."""
    if args.no_sweep:
        return {"lrs": {f"{o}/{m}": DEFAULT_LRS[o, m] for o, m in pairs}, "how": "fixed (--no-sweep)"}
    cells = [cell(args, o, m, lr, args.sweep_train, predictions=False,
                  steps=min(args.mezo_steps, args.mezo_sweep_steps) if o == "mezo" else None)
             for o, m in pairs for lr in SWEEP_LRS.get((o, m), [DEFAULT_LRS[o, m]])]
    found = run_cells(cells, work / "sweep", args.sweep_workers)
    rows = []
    for c in cells:
        r = row(c, found[c.run_id()])
        res = found[c.run_id()]
        r["acc"] = (round(100 * res[1].metrics["trained"]["validation"]["accuracy"], 2)
                    if r.get("status") == "completed" else None)
        rows.append(r)
    best = {}
    for o, m in pairs:
        done = [r for r in rows if (r["optimizer"], r["method"]) == (o, m) and r.get("acc") is not None]
        if done:
            best[f"{o}/{m}"] = max(done, key=lambda r: r["acc"])["lr"]
    print_table(rows, ["optimizer", "method", "lr", "acc", "status"], f"lr sweep: {args.sweep_train} examples")
    return {"lrs": best, "how": f"sweep on {args.sweep_train} examples", "rows": rows}


def inference_probe(spec: dict) -> dict:
    """One process: the model (with LoRA when asked) forwarding the training batches without gradients, on the
    device (and under the autocast) the training used: bf16 autocast on CUDA, fp32 on CPU."""
    import psutil
    import torch

    from nluforge.eval.meters import PeakMemory
    from nluforge.experiments.config import resolve
    from nluforge.experiments.data import encode_splits
    from nluforge.experiments.pipeline import prepare
    from nluforge.models.inputs import collate
    from nluforge.train.loop import _default_sampler

    torch.set_num_threads(1)
    cfg = resolve(spec["config"])
    prep = prepare(cfg)
    enc = encode_splits(prep, ["train"])["train"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = prep.model.to(device).eval()
    batches = _default_sampler(enc, cfg.train)(cfg.seed, 0)[: spec["batches"]]
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / 2**20

    def forward_all(autocast: bool) -> PeakMemory:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast), \
                PeakMemory(device) as peak:
            for idx in batches:
                batch = collate(enc, idx, prep.tokenizer.pad_token_id, regression=False)
                model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})
        return peak

    peak = forward_all(device.type == "cuda")
    runtime = peak.start_mb - weights
    out = {"peak_mb": round(peak.mb, 1), "peak_above_runtime_mb": round(peak.mb - runtime, 1),
           "weights_mb": round(weights, 3), "activations_mb": round(peak.mb - peak.start_mb, 1),
           "runtime_mb": round(runtime, 1), "batches": len(batches), "memory_kind": peak.kind, "rss_now_mb":
           round(psutil.Process().memory_info().rss / 2**20, 1)}
    if device.type == "cuda":  # MeZO forwards in fp32 whatever the precision: its reference is fp32 inference
        fp32 = forward_all(False)
        out |= {"peak_fp32_mb": round(fp32.mb, 1), "activations_fp32_mb": round(fp32.mb - fp32.start_mb, 1)}
    return out


def inference(args, method: str, work: Path) -> dict:
    cfg = cell(args, "adamw", method, DEFAULT_LRS["adamw", method], args.n_train)
    spec = {"config": cfg.to_dict(), "batches": math.ceil(args.n_train / args.batch_size)}
    path = work / f"inference-{method}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--inference-probe", str(path)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extrapolate(history: list[dict], target: int = 100_000) -> float | None:
    """Accuracy at ``target`` steps: least squares on (log step, acc) over the curve's last half."""
    import numpy as np

    pts = [(h["step"], h["acc"]) for h in history if h["step"] > 0]
    pts = pts[len(pts) // 2:]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.array([p[1] for p in pts])
    slope, icpt = np.polyfit(x, y, 1)
    return round(float(min(100.0, slope * math.log(target) + icpt)), 1)


def main() -> None:
    args = parse_args()
    if args.inference_probe:
        print(json.dumps(inference_probe(json.loads(Path(args.inference_probe).read_text()))))
        return
    import torch

    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)
    work = Path(args.work_dir)
    pairs = [(o, m) for o in args.optimizers.split(",") for m in args.methods.split(",")]
    lrs = sweep(args, work, pairs)
    runs = [(o, m, lrs["lrs"].get(f"{o}/{m}", DEFAULT_LRS[o, m])) for o, m in pairs]
    for extra in args.extra_lr:
        pair, _, lr = extra.partition("=")
        o, _, m = pair.partition("/")
        runs.append((o, m, float(lr)))
    cells = [cell(args, o, m, lr, args.n_train, steps=args.mezo_steps if o == "mezo" else None,
                  eval_every=args.mezo_eval_every if o == "mezo" else None) for o, m, lr in runs]
    found = run_cells(cells, work / "main")
    rows = [row(c, found[c.run_id()]) for c in cells]
    refs = {m: inference(args, m, work) for m in args.methods.split(",")}
    for m, ref in refs.items():
        rows.append({"optimizer": "(inference only)", "method": m, **ref})
    cols = ["optimizer", "method", "lr", "acc", "ci", "peak_mb", "peak_above_runtime_mb", "weights_mb", "grads_mb",
            "state_mb", "activations_mb", "examples_per_s", "steps", "backend", "status"]
    print_table(rows, cols, f"SST-2, {args.n_train} examples, batch {args.batch_size}, 1 thread; lrs: {lrs['how']}")
    checks = summarize(rows, refs)
    for r in rows:
        if r.get("optimizer") == "mezo" and r.get("history"):
            r["acc_at_100k_steps_extrapolated"] = extrapolate(r["history"])
            print(f"mezo/{r['method']} curve: {r['history']}  → 100k steps ≈ {r['acc_at_100k_steps_extrapolated']}")
    dump({"machine": machine(), "args": vars(args), "lrs": lrs, "rows": rows, "checks": checks}, args.out)


def summarize(rows: list[dict], refs: dict) -> dict:
    by: dict = {}
    for r in rows:  # per pair, the lr with the best dev accuracy
        key = (r["optimizer"], r["method"])
        if r.get("status") == "completed" and (key not in by or r.get("acc", 0) > by[key].get("acc", 0)):
            by[key] = r
    checks: dict = {}
    for m in METHODS:
        base = by.get(("adamw", m))
        for o in ("adamw8bit", "galore", "adahessian") if base is not None else ():
            r = by.get((o, m))
            if r is not None and base.get("state_mb"):
                checks[f"{o}/{m} state / adamw state"] = round(r["state_mb"] / base["state_mb"], 3)
            if r is not None and "acc" in r and "acc" in base:
                checks[f"{o}/{m} acc - adamw acc (points)"] = round(r["acc"] - base["acc"], 2)
        mezo, ref = by.get(("mezo", m)), refs.get(m, {})
        if mezo is not None and "peak_mb" in ref:
            # MeZO forwards in fp32 (nluforge.train.update_steps): on CUDA its reference is fp32 inference
            checks[f"mezo/{m} peak / inference peak"] = round(mezo["peak_mb"] / ref.get("peak_fp32_mb", ref["peak_mb"]), 3)
            checks[f"mezo/{m} peak above runtime / inference's"] = round(
                mezo["peak_above_runtime_mb"] / ref["peak_above_runtime_mb"], 3)
    print(json.dumps(checks, indent=1), file=sys.stderr)
    return checks


if __name__ == "__main__":
    main()
