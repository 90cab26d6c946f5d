"""The privacy section of the report: eps spent, each audit's AUC and eps lower bound beside accuracy,
and the audits' ROC curves on log axes. Read from ``result.json`` (``meta.privacy``) and
``evals/audit-*.json`` (written by ``nluforge audit`` and the ``audit:`` step) only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nluforge.report.collect import is_shadow
from nluforge.report.plots import Plot


@dataclass
class PrivacyRow:
    run: str
    accuracy: float | None
    eps_spent: float | None
    delta: float | None
    clipping: str | None
    mode: str | None
    audits: dict[str, dict[str, float]] = field(default_factory=dict)  # attack -> metrics
    roc: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # attack -> {"fpr", "tpr"}


def privacy_rows(results_dir: Path) -> list[PrivacyRow]:
    """One row per run that is private or audited."""
    rows = []
    root = Path(results_dir)
    for path in sorted(root.rglob("result.json")):
        if is_shadow(path, root):
            continue
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the main report lists unreadable files
        priv: dict[str, Any] = (result.get("meta") or {}).get("privacy") or {}
        audits = sorted((path.parent / "evals").glob("audit-*.json"))
        if not priv and not audits:
            continue
        trained = (result.get("metrics") or {}).get("trained") or {}
        first = next(iter(trained.values()), {})
        row = PrivacyRow(path.parent.name, first.get("accuracy"), priv.get("epsilon_spent"), priv.get("delta"),
                         priv.get("clipping"), priv.get("grad_sample_mode"))
        for audit in audits:
            rec = json.loads(audit.read_text(encoding="utf-8"))
            attack = (rec.get("source") or {}).get("attack", audit.stem)
            row.audits[attack] = rec.get("metrics", {})
            if rec.get("roc"):
                row.roc[attack] = rec["roc"]
        rows.append(row)
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown_lines(rows: list[PrivacyRow], plot: Plot | None, plot_dir: str) -> list[str]:
    if not rows:
        return []
    lines = ["## Privacy: budget spent and membership audits", "",
             "eps spent: DP-SGD's accountant at the end of training (– : not private). Audit AUC 0.5 is "
             "chance; the eps lower bound (95% Clopper-Pearson) is what the attack proves the run leaks at "
             "least; above eps spent would mean a broken guarantee or audit.", "",
             "| run | dev accuracy | eps spent | clipping | attack | AUC | TPR@1%FPR | TPR@0.1%FPR | eps lower bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = (f"| {r.run} | {_fmt(r.accuracy and 100 * r.accuracy, '.2f')} | {_fmt(r.eps_spent, '.3g')} | "
                f"{(r.clipping or '–') + (f' ({r.mode})' if r.mode else '')} |")
        if not r.audits:
            lines.append(base + " – | – | – | – | – |")
        for attack, m in r.audits.items():
            lines.append(base + f" {attack} | {_fmt(m.get('auc'), '.3f')} | {_fmt(m.get('tpr_at_0.01_fpr'), '.3f')}"
                         f" | {_fmt(m.get('tpr_at_0.001_fpr'), '.3f')} | {_fmt(m.get('eps_lower_bound'), '.3f')} |")
    lines.append("")
    if plot is not None:
        lines += [f"![{plot.title}]({plot_dir}/{plot.name}.svg)", ""]
    return lines


def roc_plot(rows: list[PrivacyRow]) -> Plot | None:
    """Every audit's ROC curve on log-log axes (low FPR is where membership inference matters)."""
    curves = [(f"{r.run} · {attack}", roc) for r in rows for attack, roc in r.roc.items()]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nluforge.report.plots import _to_svg

    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    for label, roc in curves:
        pts = [(f, t) for f, t in zip(roc["fpr"], roc["tpr"], strict=True) if f > 0 and t > 0]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=label, linewidth=1.4)
    ax.plot([1e-4, 1], [1e-4, 1], color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Membership-inference ROC (log axes)")
    ax.legend(fontsize=7, loc="lower right")
    svg = _to_svg(fig, "privacy-roc")
    plt.close(fig)
    return Plot("privacy-roc", "Membership-inference ROC (log axes)", svg)
