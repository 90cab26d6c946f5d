"""FreeLB against plain fine-tuning (issue #13): dev and AdvGLUE-SST-2 accuracy of finished runs, paired.

    # the runs (one thread each; see BENCHMARKS.md for the sweep that was measured):
    nluforge train --task sst2 --model default --method full --max-train-samples 2000 --epochs 1 --seed 42 \\
        --output-dir R --set train.adversarial.method=none
    nluforge train ... --set train.adversarial.method=freelb --set train.adversarial.alpha=A \\
        --set train.adversarial.epsilon=E
    # the comparison (the first run is the reference):
    python benchmarks/freelb.py R/<plain run> R/<freelb run> ... [--json out.json]

For each run: its adversarial settings, training time, SST-2 dev and AdvGLUE-SST-2 accuracy with 95%
bootstrap intervals (from ``predictions.jsonl``), and against the reference the paired difference on
AdvGLUE with the exact McNemar p-value (discordant examples only) and Holm's correction over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import dump, machine, print_table  # noqa: E402


def predictions(run: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line]
    rows = sorted((r for r in rows if r["split"] == split), key=lambda r: r["idx"])
    return np.array([r["label"] for r in rows]), np.array([r["prediction"] for r in rows])


def main() -> None:
    from nluforge.report.stats import Eval, bootstrap, holm, mcnemar
    from nluforge.results import read_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished SST-2 runs; the first is the reference")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    ref_ok = {s: np.equal(*predictions(args.runs[0], s)) for s in ("validation", "advglue_sst2")}
    rows, pvalues = [], []
    for run in args.runs:
        res = read_result(run)
        adv = res.config["train"].get("adversarial", {"method": "none"})
        row = {"run": run.name, "adversarial": adv["method"] if adv["method"] == "none" else
               f"{adv['method']} K={adv['steps']} alpha={adv['alpha']} eps={adv['epsilon']}",
               "train_s": res.cost.train_time_s}
        for split, name in (("validation", "dev"), ("advglue_sst2", "advglue")):
            labels, preds = predictions(run, split)
            e = bootstrap("accuracy", [Eval(labels, preds)])
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = e.point, e.lo, e.hi
            ok = labels == preds
            row[f"{name}_diff_pt"] = round(100 * (ok.mean() - ref_ok[split].mean()), 2)
            row[f"{name}_discordant"] = f"{int((ok & ~ref_ok[split]).sum())}/{int((~ok & ref_ok[split]).sum())}"
            if split == "advglue_sst2":
                row["advglue_p"] = mcnemar(ok, ref_ok[split]) if run != args.runs[0] else None
        rows.append(row)
        if row["advglue_p"] is not None:
            pvalues.append(row["advglue_p"])
    adjusted = iter(holm(pvalues))
    for row in rows:
        row["advglue_p_holm"] = next(adjusted) if row["advglue_p"] is not None else None
    print_table(rows, ["adversarial", "train_s", "dev", "dev_lo", "dev_hi", "dev_diff_pt", "advglue", "advglue_lo",
                       "advglue_hi", "advglue_diff_pt", "advglue_discordant", "advglue_p", "advglue_p_holm"],
                "FreeLB vs plain (paired against the first run; discordant = better/worse than it)")
    dump({"machine": machine(), "runs": rows}, args.json_out)


if __name__ == "__main__":
    main()
