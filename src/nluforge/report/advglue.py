"""AdvGLUE summaries (Wang et al. 2021, "Adversarial GLUE: A Multi-Task Benchmark for Robustness
Evaluation of Language Models"): per task, the clean dev accuracy, the AdvGLUE accuracy and the drop,
each with a 95% percentile-bootstrap interval, and their average over tasks.

Read from runs' files only (``result.json`` and ``predictions.jsonl``, which the evaluate stage writes
for the dev splits and for every AdvGLUE set it found): no model is loaded, so a summary of any number
of finished runs takes well under a second. The AdvGLUE sets are small (78 to 162 examples), so the
intervals are wide: that is the point of showing them. The drop's interval resamples the two sets
independently (they hold different examples); the average's resamples every task in each replicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nluforge.core.errors import UserError
from nluforge.report.stats import CONFIDENCE, resample_index

# the clean dev split each AdvGLUE set is compared with
CLEAN_SPLIT = {"advglue_mnli": "validation_matched", "advglue_mnli_mm": "validation_mismatched"}
ORDER = ["advglue_sst2", "advglue_qqp", "advglue_mnli", "advglue_mnli_mm", "advglue_qnli", "advglue_rte"]


@dataclass
class Row:
    run: str
    set: str  # advglue_<task>
    n_clean: int
    n_adv: int
    clean: tuple[float, float, float]  # point, lo, hi
    adv: tuple[float, float, float]
    drop: tuple[float, float, float]


def _interval(replicates: np.ndarray, point: float) -> tuple[float, float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return point, float(min(lo, point)), float(max(hi, point))


def _correct(path: Path) -> dict[str, np.ndarray]:
    rows: dict[str, list[tuple[int, bool]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["split"], []).append((int(r["idx"]), r["label"] == r["prediction"]))
    return {s: np.array([c for _, c in sorted(v)], dtype=float) for s, v in rows.items()}


def _replicates(correct: np.ndarray) -> np.ndarray:
    return correct[resample_index(len(correct))].mean(axis=1)  # (B,)


def summarize_runs(run_dirs: list[Path]) -> tuple[list[Row], Row | None]:
    """One row per (run, AdvGLUE set) with both splits predicted, and the average over the rows when
    each row is a different set (runs of the same set are variants to compare, not tasks to average)."""
    rows, clean_reps, adv_reps = [], [], []
    for run in run_dirs:
        preds = run / "predictions.jsonl"
        if not preds.is_file():
            raise UserError(f"{run} has no predictions.jsonl; rerun it with eval.save_predictions: true")
        correct = _correct(preds)
        for name in sorted((s for s in correct if s.startswith("advglue_")), key=ORDER.index):
            clean_split = CLEAN_SPLIT.get(name, "validation")
            if clean_split not in correct:
                continue
            c, a = correct[clean_split], correct[name]
            rc, ra = _replicates(c), _replicates(a)
            rows.append(Row(run.name, name, len(c), len(a), _interval(rc, c.mean()), _interval(ra, a.mean()),
                            _interval(rc - ra, c.mean() - a.mean())))
            clean_reps.append(rc)
            adv_reps.append(ra)
    if not rows:
        raise UserError("no run has both a dev split and an AdvGLUE set in its predictions; train with "
                        "eval.advglue: true and AdvGLUE's dev.json beside the GLUE data (or --advglue-file)")
    rc, ra = np.mean(clean_reps, axis=0), np.mean(adv_reps, axis=0)
    pc, pa = float(np.mean([r.clean[0] for r in rows])), float(np.mean([r.adv[0] for r in rows]))
    avg = Row("average", f"{len(rows)} set(s)", sum(r.n_clean for r in rows), sum(r.n_adv for r in rows),
              _interval(rc, pc), _interval(ra, pa), _interval(rc - ra, pc - pa))
    distinct = len({r.set for r in rows}) == len(rows)  # one model per task: an average over tasks
    return rows, avg if len(rows) > 1 and distinct else None


def format_table(rows: list[Row], avg: Row | None) -> str:
    def cell(x):
        return f"{100 * x[0]:.1f} [{100 * x[1]:.1f}, {100 * x[2]:.1f}]"

    head = ["run", "AdvGLUE set", "n clean", "n adv", "clean acc % [95% CI]", "AdvGLUE acc % [95% CI]",
            "drop (points) [95% CI]"]
    body = [[r.run, r.set, str(r.n_clean), str(r.n_adv), cell(r.clean), cell(r.adv), cell(r.drop)]
            for r in rows + ([avg] if avg else [])]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body]
    return "\n".join(lines)
