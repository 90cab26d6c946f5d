"""DP fine-tuning and membership audits on SST-2 (issue #15): accuracy, memory and speed per privacy
budget and clipping style, ghost vs per-sample clipping memory, and audits of a non-private, a DP and
an overfit run.

    python benchmarks/privacy.py [--json out.json]                      # the issue's full settings
    python benchmarks/privacy.py --small [--json out.json]              # the documented smaller run

Full settings (the defaults): the ``default`` model, 20,000 SST-2 training examples, DP at eps 1, 3
and 8 with each clipping style (flat, per_layer, group = one group per transformer block) for
``full`` and ``lora`` (DP defaults after Li et al. 2022 otherwise: batch 1,024, 3 epochs or 200 steps); ghost vs per-sample peak memory at
one batch; audits (loss and LiRA with 4 shadows) of the non-private run, of the first eps=8 run and of
an overfit run (``full``, 20 epochs on 500 examples; ``--overfit-dp 8`` adds the same run under DP, audited
beside it; ``--lira-only-overfit`` keeps LiRA's shadows to the overfit runs). ``--small``: 2,000 examples, eps 8, flat, lora only,
batch 128 for 2 epochs, loss audits only (LiRA's shadows are k more trainings each), memory probe
for full and lora. Every training goes through ``nluforge``'s pipeline (run_cell) into --out; a rerun
skips finished cells. Memory: each probe runs one DP step in a fresh subprocess and reports its peak
RSS increase over the loaded model (ru_maxrss), so the two modes are measured alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import GLUE_DIR, dump, machine, print_table  # noqa: E402

N_BOOT = 1000


def base_cfg(method: str, examples: int, holdout: int, threads: int) -> dict:
    return {"task": "sst2", "model": "default", "method": method, "seed": 42,
            "data": {"data_dir": str(GLUE_DIR), "max_train_samples": examples, "max_length": 64,
                     "audit_holdout": holdout},
            "train": {"checkpoint_every": None, "num_threads": threads},
            "eval": {"baselines": False, "advglue": False, "latency": False}}


def accuracy_ci(run_dir: Path) -> tuple[float, float, float]:
    import numpy as np

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    hits = np.array([r["label"] == r["prediction"] for r in rows if r["split"] == "validation"], dtype=float)
    rng = np.random.default_rng(0)
    boots = hits[rng.integers(0, len(hits), (N_BOOT, len(hits)))].mean(axis=1)
    return hits.mean() * 100, np.percentile(boots, 2.5) * 100, np.percentile(boots, 97.5) * 100


def run(cfg_dict: dict, out: Path) -> tuple[Path, dict]:
    from nluforge.experiments.cells import cell_state
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell
    from nluforge.results import read_result

    cfg = resolve(cfg_dict)
    if cell_state(out, cfg) == "completed":
        print(f"{cfg.run_id()}: finished earlier, reused", flush=True)
        return out / cfg.run_id(), read_result(out / cfg.run_id())
    result = run_cell(cfg, out, show_progress=True)
    if result.run_info.status != "completed":
        raise SystemExit(f"{cfg.run_id()} failed: {result.run_info.error}")
    return out / cfg.run_id(), result


def row(name: str, run_dir: Path, result) -> dict:
    acc, lo, hi = accuracy_ci(run_dir)
    p = result.meta.get("privacy") or {}
    return {"run": name, "dev_acc": round(acc, 2), "ci95": f"{lo:.1f}-{hi:.1f}", "eps_spent": p.get("epsilon_spent"),
            "sigma": p.get("noise_multiplier"), "steps": result.meta["train"]["steps"],
            "peak_mb": result.cost.peak_memory_mb, "ex_per_s": result.cost.train_examples_per_s}


def probe(mode: str, method: str, batch: int) -> dict:
    """One DP step in this (fresh) process; the peak RSS increase it caused."""
    import torch

    torch.set_num_threads(1)
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import build_model
    from nluforge.models.inputs import collate, encode
    from nluforge.models.loading import load_tokenizer
    from nluforge.privacy.engine import PrivateGradients, clip_groups, thresholds
    from nluforge.tasks import load_task

    cfg = resolve({"task": "sst2", "method": method, "data": {"data_dir": str(GLUE_DIR)}})
    data = load_task("sst2", data_dir=str(GLUE_DIR), max_train_samples=batch)
    tok = load_tokenizer("default")
    model, _, _ = build_model(cfg, data.spec, tok)
    model.train()
    train = data.splits["train"]
    enc = encode(train.texts[:batch], train.labels[:batch], tok, 64)
    b = collate(enc, list(range(batch)), tok.pad_token_id, regression=False)
    groups = clip_groups(model, "flat", None, None)
    engine = PrivateGradients(model, groups, thresholds(groups, 0.1, None), noise_multiplier=1.0,
                              expected_batch_size=batch, mode=mode, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine.accumulate(b)
    engine.release(0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "method": method, "batch": batch, "tokens": int(b["input_ids"].shape[1]),
            "step_peak_increase_mb": round(after - before, 1), "peak_rss_mb": round(after, 1)}


def memory_rows(methods: list[str], batch: int) -> list[dict]:
    rows = []
    for method in methods:
        for mode in ("hooks", "ghost"):
            out = subprocess.run([sys.executable, __file__, "--probe", mode, method, str(batch)], check=True,
                                 capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def audit_rows(targets: list[tuple[str, Path]], attacks: list[str], shadows: int) -> list[dict]:
    from nluforge.experiments.audit import audit_run
    from nluforge.privacy.config import LiraAuditConfig, LossAuditConfig

    rows = []
    for name, run_dir in targets:
        for attack in attacks:
            opts = LossAuditConfig() if attack == "loss" else LiraAuditConfig(shadows=shadows)
            rec = audit_run(run_dir, attack, opts)
            m = rec["metrics"]
            rows.append({"run": name, "attack": attack, "auc": round(m["auc"], 4),
                         "tpr@1%fpr": m["tpr_at_0.01_fpr"], "tpr@0.1%fpr": m["tpr_at_0.001_fpr"],
                         "eps_lb": round(m["eps_lower_bound"], 3), "eps_spent": rec.get("epsilon_spent"),
                         "n": f"{int(m['members'])}+{int(m['nonmembers'])}"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the documented smaller setting (see the docstring)")
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    ap.add_argument("--clippings", nargs="+", default=["flat", "per_layer", "group"])
    ap.add_argument("--methods", nargs="*", default=["full", "lora"],
                    help="none: only the overfit runs and their audits (no memory probes)")
    ap.add_argument("--holdout", type=int, default=500, help="audit non-members (and members)")
    ap.add_argument("--attacks", nargs="+", default=["loss", "lira"])
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--overfit", type=int, nargs=2, default=[500, 20], metavar=("EXAMPLES", "EPOCHS"))
    ap.add_argument("--overfit-method", default="full", help="the overfit run's method (full memorises most)")
    ap.add_argument("--other-clippings-at", type=float, nargs="+", default=None, metavar="EPS",
                    help="run the clipping styles after the first only at these epsilons (default: at all)")
    ap.add_argument("--grad-sample-mode", choices=["hooks", "ghost"], default=None,
                    help="per-sample gradients (hooks) or ghost clipping (flat clipping only); default: the config's")
    ap.add_argument("--dp-batch", type=int, default=None, help="logical batch (default: Li et al.'s)")
    ap.add_argument("--dp-epochs", type=float, default=None)
    ap.add_argument("--dp-lr", type=float, default=None, help="DP peak lr (default: Li et al.'s per method)")
    ap.add_argument("--overfit-dp", type=float, nargs="*", default=[], metavar="EPS",
                    help="also train the overfit config under DP at each EPS (its epochs kept) and audit it")
    ap.add_argument("--lira-only-overfit", action="store_true",
                    help="LiRA on the overfit runs only (a 20k run's shadows are k more 20k trainings)")
    ap.add_argument("--memory-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/work/bench/privacy/runs")
    ap.add_argument("--json", default=None)
    ap.add_argument("--probe", nargs=3, metavar=("MODE", "METHOD", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.probe:
        print(json.dumps(probe(a.probe[0], a.probe[1], int(a.probe[2]))))
        return
    if a.small:
        a.examples, a.epsilons, a.clippings, a.methods = 2000, [8.0], ["flat"], ["lora"]
        a.holdout, a.attacks, a.overfit, a.dp_batch, a.dp_epochs = 200, ["loss"], None, 128, 2.0
    import torch

    torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    out = Path(a.out)
    mem = memory_rows(["full", "lora"] if a.small else a.methods, a.memory_batch)
    if mem:
        print_table(mem, list(mem[0]), "ghost vs per-sample (hooks) clipping: one DP step")
    rows, audit_targets, overfit_targets = [], [], []
    sample_mode = {"grad_sample_mode": a.grad_sample_mode} if a.grad_sample_mode else {}
    for method in a.methods:
        base = base_cfg(method, a.examples, a.holdout, a.threads)
        d, r = run(base, out)
        rows.append(row(f"{method} non-private", d, r))
        audit_targets.append((f"{method} non-private", d))
        for eps in a.epsilons:
            for clip in a.clippings:
                if clip != a.clippings[0] and a.other_clippings_at is not None and eps not in a.other_clippings_at:
                    continue
                params = {"epsilon": eps, "clipping": clip, **({"groups": "blocks"} if clip == "group" else {}),
                          **({"batch_size": a.dp_batch} if a.dp_batch else {}),
                          **sample_mode, **({"epochs": a.dp_epochs} if a.dp_epochs else {}),
                          **({"lr": a.dp_lr} if a.dp_lr else {})}
                d, r = run({**base, "privacy": {"method": "dp_sgd", "params": params}}, out)
                mode = r.meta["privacy"]["grad_sample_mode"]
                rows.append(row(f"{method} eps={eps:g} {clip}" + (" ghost" if mode == "ghost" else ""), d, r))
                if eps == 8 and len(audit_targets) < 2 * len(a.methods) and clip == a.clippings[0]:
                    audit_targets.append((f"{method} eps=8 {clip}", d))
        print_table(rows, list(rows[0]), "SST-2 dev accuracy (95% bootstrap CI), eps spent, memory, speed")
    if a.overfit:
        n, epochs = a.overfit
        cfg = base_cfg(a.overfit_method, n, n // 4, a.threads)
        cfg["train"].update(epochs=epochs, lr=1e-4)
        d, r = run(cfg, out)
        rows.append(row(f"{a.overfit_method} overfit ({n} ex, {epochs} ep)", d, r))
        overfit_targets.append((f"{a.overfit_method} overfit", d))
        for eps in a.overfit_dp:  # the same data, lr and passes, under DP (batch: the DP default, n // 10)
            params = {"epsilon": eps, "clipping": "flat", "epochs": float(epochs), **sample_mode}
            d, r = run({**cfg, "privacy": {"method": "dp_sgd", "params": params}}, out)
            rows.append(row(f"{a.overfit_method} overfit eps={eps:g} flat", d, r))
            overfit_targets.append((f"{a.overfit_method} overfit eps={eps:g}", d))
    targets = audit_targets + overfit_targets
    if a.lira_only_overfit and "lira" in a.attacks:
        audits = audit_rows(targets, [x for x in a.attacks if x != "lira"], a.shadows)
        audits += audit_rows(overfit_targets, ["lira"], a.shadows)
    else:
        audits = audit_rows(targets, a.attacks, a.shadows)
    print_table(rows, list(rows[0]), "SST-2 dev accuracy (95% bootstrap CI), eps spent, memory, speed")
    if mem:
        print_table(mem, list(mem[0]), "ghost vs per-sample (hooks) clipping: one DP step")
    print_table(audits, list(audits[0]), "membership audits")
    dump({"machine": machine(), "settings": vars(a), "runs": rows, "memory": mem, "audits": audits}, a.json)


if __name__ == "__main__":
    main()
