"""What a variant must beat: the majority class (or the constant mean), and embedding baselines.

The majority-class baseline predicts the most frequent label of the evaluation data for every example
(the labels come from ``predictions.jsonl``); for regression the constant prediction is the mean label,
whose Pearson and Spearman correlations are 0 (as ``tasks.metrics`` scores a constant input). Its
interval is bootstrapped over the same examples as the variants, so the paired tests apply to it too.
Embedding baselines (``metrics["baselines"][split][name]``, e.g. a logistic regression on frozen
sentence embeddings) come without predictions: they are shown as numbers, averaged over runs. They are
fitted on each run's own training subset, so runs of different data regimes (16-shot, n=2000, the whole
split) give separate rows, and a variant is compared only with the rows of its own regime.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from nluforge.report.collect import RunRecord
from nluforge.report.metrics import dev_splits, split_of, with_suffix
from nluforge.report.stats import METRICS, REGRESSION, Eval, bootstrap
from nluforge.report.tables import Stat, VariantRow
from nluforge.report.variants import training_data


@dataclass
class BaselineRow:
    """A reference row of a task's table: not a variant, never recommended."""

    label: str  # "majority class (1)", "constant mean", "logreg (embeddings)", "logreg (embeddings, 16-shot)"
    kind: str  # "majority" | "embedding"
    metrics: dict[str, Stat] = field(default_factory=dict)
    training_data: str | None = None  # embedding rows: the regime they were fitted on (None: whole split)

    def applies_to(self, row: VariantRow) -> bool:
        """Whether ``row`` is compared with this baseline: the same training data (any, for majority)."""
        return self.kind != "embedding" or training_data(row.config) == self.training_data

    def stat(self, metric: str | None) -> Stat | None:
        return self.metrics.get(metric or "")

    def score(self, metric: str | None) -> float | None:
        stat = self.stat(metric)
        return stat.mean if stat else None


def _shared_eval(runs: list[RunRecord], suffix: str) -> Eval | None:
    """The evaluation set most runs were scored on (same labels, same order)."""
    evals = [e for r in runs if (e := r.predictions.get(suffix)) is not None]
    if not evals:
        return None
    common, _ = Counter(e.fingerprint for e in evals).most_common(1)[0]
    return next(e for e in evals if e.fingerprint == common)


def majority(runs: list[RunRecord], metric_names: list[str], regression: bool) -> BaselineRow | None:
    """The majority-class (or constant-mean) baseline on each metric whose split has predictions."""
    row: BaselineRow | None = None
    for name in metric_names:
        base, suffix = split_of(name)
        shared = _shared_eval(runs, suffix)
        if shared is None or base not in METRICS:
            continue
        labels = shared.labels
        if regression or base in REGRESSION:
            constant, label = float(np.mean(labels.astype(float))), "constant mean"
        else:
            values, counts = np.unique(labels, return_counts=True)
            constant = values[np.argmax(counts)].item()
            label = f"majority class ({constant})"
        row = row or BaselineRow(label, "majority")
        fake = Eval(labels, np.full(labels.shape, constant, dtype=np.asarray(constant).dtype))
        row.metrics[name] = Stat.from_evidence(bootstrap(base, [fake]))
    return row


def embedding(runs: list[RunRecord]) -> list[BaselineRow]:
    """Rows for the ``metrics["baselines"]`` entries of the runs, per baseline and training-data regime,
    averaged over the runs that have them (no interval: they come without predictions). The regime is
    named in the label when the runs have several, and so is the subset the stage fitted on when it
    capped a large training set ("n=20000, fit on 5000")."""
    values: dict[tuple[str, str | None], dict[str, list[float]]] = {}
    fitted: dict[str | None, set[int]] = {}  # regime -> the subset sizes the stage fitted on, when capped
    for run in runs:
        regime = training_data(run.config)
        if run.baselines_fit is not None:  # the stage fits on a seeded subset of a large training set
            fitted.setdefault(regime, set()).add(run.baselines_fit)
        for split, suffix in dev_splits(run.baselines):
            for name, scores in (run.baselines[split] or {}).items():
                for metric, value in (scores or {}).items() if isinstance(scores, dict) else ():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        by = values.setdefault((name, regime), {})
                        by.setdefault(with_suffix(metric, suffix), []).append(value)
    several = len({regime for _, regime in values}) > 1

    def label(name: str, regime: str | None) -> str:
        parts = [regime or "all training data"] if several or regime in fitted else []
        if regime in fitted:
            parts.append("fit on " + "/".join(str(n) for n in sorted(fitted[regime])))
        return f"{name} (embeddings{''.join(', ' + p for p in parts)})"

    return [
        BaselineRow(
            label(name, regime),
            "embedding",
            {m: Stat(sum(v) / len(v), None, len(v)) for m, v in by.items()},
            regime,
        )
        for (name, regime), by in sorted(values.items(), key=lambda item: (item[0][1] or "", item[0][0]))
    ]


def task_baselines(runs: list[RunRecord], metric_names: list[str], regression: bool) -> list[BaselineRow]:
    """The majority baseline first (where predictions were saved), then the embedding baselines."""
    first = majority(runs, metric_names, regression)
    return ([first] if first else []) + embedding(runs)
