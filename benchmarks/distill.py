"""Distilled students against their teacher and against the same students trained without it (issue #12).

    .venv/bin/python benchmarks/distill.py --teacher /work/bench/parent --work-dir /work/bench/distill --out distill.json

The teacher is ``default`` fully fine-tuned on all of SST-2 (one epoch): a finished run directory, or a
folder holding one (``--teacher``). For each student depth K in ``--layers`` (default 3,2), two derived
runs of it through the pipeline (``nluforge distill``'s code path), both ``layers:K`` cut from the
teacher (``layer_pick=uniform``: teacher layers (i+1)·6/K - 1) and trained one epoch on the teacher's
training set (all of SST-2 unless ``--max-train-samples``) with the teacher run's recipe (lr 5e-5, batch
32, warmup 6%):

- (a) ``no_teacher``: hard labels only (``kd_weight=0, minilm_weight=0``): the teacher is never run;
- (b) ``distilled``: hard labels + logit KD (T=2) + MiniLM attention/value relations (weights 1, 1, 1).

Reported per model: SST-2 dev accuracy with its 95% bootstrap interval over the 872 dev examples (one
seed), AdvGLUE-SST-2 accuracy (148 examples), standalone size, latency per example at batch 1 and 32
(measured here, side by side: the teacher and every student in alternating rounds, median of
``--rounds``), and the ratios to the teacher. Runs land in ``<work-dir>/results`` beside a symlink to
the teacher, so a rerun skips finished students. One torch thread (``--threads``), printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dump, machine, print_table  # noqa: E402

VARIANTS = {"no_teacher": {"kd_weight": 0.0, "minilm_weight": 0.0, "hard_weight": 1.0},
            "distilled": {"kd_weight": 1.0, "minilm_weight": 1.0, "hard_weight": 1.0}}


def teacher_dir(path: Path) -> Path:
    """A finished run directory: ``path`` itself or the one completed run under it."""
    if (path / "result.json").is_file():
        return path
    found = [p.parent for p in sorted(path.glob("*/result.json"))
             if json.loads(p.read_text())["run_info"]["status"] == "completed"]
    if len(found) != 1:
        raise SystemExit(f"error: {path} holds {len(found)} finished runs; point --teacher at one run directory")
    return found[0]


def run_student(teacher: Path, results: Path, k: int, variant: str, args) -> Path:
    """One derived run (skipped when already finished); returns its directory."""
    from nluforge.experiments.cells import cell_state
    from nluforge.experiments.config import read_run_config
    from nluforge.experiments.derived import prepare_derived
    from nluforge.experiments.pipeline import execute

    step = {"student": f"layers:{k}", "layer_pick": args.layer_pick, **VARIANTS[variant]}
    if args.max_train_samples:
        step["max_train_samples"] = args.max_train_samples
    if args.lr:
        step["lr"] = args.lr
    if args.epochs:
        step["epochs"] = args.epochs
    cfg = dataclasses.replace(read_run_config(teacher).parent(), distill=[step])
    run_dir = results / cfg.run_id()
    if cell_state(results, cfg) == "completed":
        print(f"skip (finished): {run_dir.name}", flush=True)
        return run_dir
    t0 = time.perf_counter()
    execute(prepare_derived(cfg, teacher), run_dir, show_progress=True)
    print(f"{variant} layers:{k}: {time.perf_counter() - t0:.0f} s -> {run_dir.name}", flush=True)
    return run_dir


def accuracy_ci(run_dir: Path, split: str) -> tuple[float, float, float, int]:
    """Accuracy and its 95% bootstrap interval from the run's predictions.jsonl."""
    import numpy as np

    from nluforge.report.stats import Eval, bootstrap

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == split]
    ev = bootstrap("accuracy", [Eval(np.array([r["label"] for r in rows]), np.array([r["prediction"] for r in rows]))])
    return ev.point, ev.lo, ev.hi, len(rows)


def latencies(run_dirs: dict[str, Path], rounds: int) -> dict[str, dict[int, float]]:
    """ms/example at batch 1 and 32 on the first 64 dev sentences, every model once per round, median."""
    from nluforge.eval.meters import measure_latency
    from nluforge.experiments.servable import load_servable
    from nluforge.models.inputs import encode
    from nluforge.tasks import load_task

    models = {name: load_servable(d) for name, d in run_dirs.items()}
    first = next(iter(models.values()))
    dev = load_task("sst2", data_dir=first.cfg.data.data_dir, splits=["validation"]).splits["validation"]
    enc = encode(dev.texts, dev.labels, first.tokenizer, first.cfg.data.max_length)
    seen: dict[str, dict[int, list[float]]] = {n: {1: [], 32: []} for n in models}
    for _ in range(rounds):
        for name, s in models.items():
            for bs in (1, 32):
                seen[name][bs].append(measure_latency(s.model, enc, batch_size=bs, pad_id=0, regression=False,
                                                      n_examples=64 if bs == 1 else 256))
    return {n: {bs: statistics.median(v) for bs, v in by.items()} for n, by in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=Path("/work/bench/parent"))
    parser.add_argument("--work-dir", type=Path, default=Path("/work/bench/distill"))
    parser.add_argument("--layers", default="3,2", help="student depths, comma-separated")
    parser.add_argument("--variants", default="no_teacher,distilled")
    parser.add_argument("--max-train-samples", type=int, default=None,
                        help="seeded subset of the teacher's training set (default: all of SST-2, the issue's setting)")
    parser.add_argument("--layer-pick", default="uniform")
    parser.add_argument("--lr", type=float, default=None, help="default: the teacher run's (5e-5)")
    parser.add_argument("--epochs", type=float, default=None, help="student epochs (default: the teacher run's, 1)")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    teacher = teacher_dir(args.teacher)
    results = args.work_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    link = results / teacher.name
    if not link.exists():
        link.symlink_to(teacher.resolve(), target_is_directory=True)
    runs: dict[str, Path] = {"teacher": link}
    for k in [int(x) for x in args.layers.split(",")]:
        for variant in args.variants.split(","):
            runs[f"L{k} {variant}" + (f" {args.epochs:g} ep" if args.epochs else "")] = run_student(link, results, k, variant, args)

    from nluforge.results import read_result

    lat = latencies(runs, args.rounds)
    rows = []
    for name, d in runs.items():
        r = read_result(d)
        acc, lo, hi, n = accuracy_ci(d, "validation")
        adv = r.metrics["trained"].get("advglue_sst2", {}).get("accuracy")
        rows.append({"model": name, "layers": r.meta.get("distill", {}).get("picked_layers") or "0-5",
                     "dev_acc": round(100 * acc, 2), "ci95": f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                     "advglue_acc": round(100 * adv, 1) if adv is not None else None,
                     "size_mb": r.cost.standalone_size_mb, "params_m": round(r.cost.total_params / 1e6, 2),
                     "ms_bs1": round(lat[name][1], 3), "ms_bs32": round(lat[name][32], 3),
                     "train_s": r.cost.train_time_s, "train_examples": r.cost.train_examples})
    base = rows[0]
    for row in rows:
        row["d_acc"] = round(row["dev_acc"] - base["dev_acc"], 2)
        row["x_size"] = round(base["size_mb"] / row["size_mb"], 2)
        row["x_bs1"] = round(base["ms_bs1"] / row["ms_bs1"], 2)
        row["x_bs32"] = round(base["ms_bs32"] / row["ms_bs32"], 2)
    cols = ["model", "layers", "dev_acc", "ci95", "d_acc", "advglue_acc", "size_mb", "x_size", "ms_bs1", "x_bs1",
            "ms_bs32", "x_bs32", "train_s", "train_examples"]
    settings = {"teacher": str(teacher), "layers": args.layers, "max_train_samples": args.max_train_samples,
                "layer_pick": args.layer_pick, "lr": args.lr, "rounds": args.rounds, "variants": VARIANTS}
    print_table(rows, cols, "distillation: students of the full-SST-2 teacher")
    dump({"machine": machine(), "settings": settings, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
