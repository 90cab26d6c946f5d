"""Which numbers of a result the report compares: the dev metrics and the robust accuracies.

A result keeps ``metrics[stage][split][name]``. The clean score of a run comes from the latest stage
that evaluated a dev split (a compressed model is what you would ship, so ``compressed`` wins over
``trained``). Robust accuracy is accuracy on any ``advglue*`` split, or ``robust_accuracy`` from the
``attacked`` stage. The report stays decoupled from ``nluforge.tasks``: the primary metric of each GLUE
task is listed here, and any other task falls back to accuracy, then to its first metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# The GLUE convention (Wang et al., 2019): MCC for CoLA, Pearson for STS-B, F1 for MRPC and QQP.
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc", "matthews_correlation"),
    "stsb": ("pearson", "pearsonr", "spearman", "spearmanr"),
    "mrpc": ("f1",),
    "qqp": ("f1",),
}
DEFAULT_PRIMARY = ("accuracy", "acc")

DISPLAY_NAMES = {
    "accuracy": "accuracy",
    "acc": "accuracy",
    "mcc": "MCC",
    "matthews_correlation": "MCC",
    "f1": "F1",
    "pearson": "Pearson",
    "pearsonr": "Pearson",
    "spearman": "Spearman",
    "spearmanr": "Spearman",
}

CLEAN_STAGES = ("compressed", "trained")  # latest first
NON_CLEAN_STAGES = (
    "attacked",
    "audited",
    "baselines",
)  # robust, privacy or reference numbers, never the score
BASELINES_STAGE = "baselines"  # metrics["baselines"][split] = {"logreg": {metric: value}, ...}
ADVGLUE = "advglue"
ADVGLUE_NAME = "AdvGLUE acc"
ATTACK_NAME = "robust acc"

Metrics = Mapping[str, Mapping[str, Mapping[str, float]]]


def display_name(metric: str) -> str:
    """How a metric is named in tables and sentences: ``mcc`` -> ``MCC``."""
    base, _, rest = metric.partition(" ")
    return f"{DISPLAY_NAMES.get(base, base)}{' ' + rest if rest else ''}"


def primary_metric(task: str, names: list[str]) -> str | None:
    """The task's headline metric among ``names``: the GLUE choice, else accuracy, else the first."""
    for name in PRIMARY_METRICS.get(task.lower(), ()) + DEFAULT_PRIMARY:
        if name in names:
            return name
    return names[0] if names else None


def is_dev_split(split: str) -> bool:
    """``validation``, ``validation_matched``, ``dev``...: held-out clean data, not AdvGLUE."""
    return split.startswith(("validation", "dev")) and not split.startswith(ADVGLUE)


def _stage_order(metrics: Metrics) -> list[str]:
    """Stages to look in for clean scores, latest first; attacked/audited stages never count."""
    rest = [s for s in metrics if s not in CLEAN_STAGES and s not in NON_CLEAN_STAGES]
    return [s for s in CLEAN_STAGES if s in metrics] + rest


def _numbers(values: Mapping[str, float]) -> dict[str, float]:
    """The finite numbers among ``values`` (a NaN MCC from a constant predictor is not a score)."""
    return {k: float(v) for k, v in values.items() if _is_finite(v)}


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def dev_splits(splits) -> list[tuple[str, str]]:
    """The dev splits among ``splits`` with the suffix their metrics get: the first (``validation``
    before ``validation_matched`` before the rest) gets ``""``, the others e.g. ``"mismatched"``."""
    ordered = sorted((s for s in splits if is_dev_split(s)), key=lambda s: (s != "validation", s))
    out = []
    for i, split in enumerate(ordered):
        suffix = "" if i == 0 else (split.removeprefix("validation").removeprefix("dev").strip("_") or split)
        out.append((split, suffix))
    return out


def with_suffix(name: str, suffix: str) -> str:
    """``accuracy`` and ``mismatched`` -> ``accuracy (mismatched)``."""
    return f"{name} ({suffix})" if suffix else name


def split_of(metric: str) -> tuple[str, str]:
    """``accuracy (mismatched)`` -> (``accuracy``, ``mismatched``); the inverse of :func:`with_suffix`."""
    base, _, rest = metric.partition(" (")
    return base, rest.removesuffix(")")


def clean_stage(metrics: Metrics) -> str | None:
    """The stage the clean score comes from: the latest with a dev split."""
    return next((s for s in _stage_order(metrics) if dev_splits(metrics[s])), None)


def dev_metrics(metrics: Metrics) -> dict[str, float]:
    """The clean dev metrics of a run, from the latest stage with a dev split.

    The first dev split (``validation`` before ``validation_matched`` before the rest) gives plain
    names; other dev splits are suffixed: MNLI's mismatched accuracy becomes ``accuracy (mismatched)``.
    """
    stage = clean_stage(metrics)
    if stage is None:
        return {}
    out: dict[str, float] = {}
    for split, suffix in dev_splits(metrics[stage]):
        out.update({with_suffix(name, suffix): v for name, v in _numbers(metrics[stage][split]).items()})
    return out


def _advglue_name(split: str, task: str, n_splits: int) -> str:
    if n_splits == 1:
        return ADVGLUE_NAME
    rest = split.removeprefix(ADVGLUE).strip("_").removeprefix(task.lower()).strip("_")
    return f"{ADVGLUE_NAME} ({rest})" if rest else ADVGLUE_NAME


def robust_metrics(metrics: Metrics, task: str) -> dict[str, float]:
    """Robust accuracies: ``AdvGLUE acc`` from ``advglue*`` splits, ``robust acc`` from attacks.

    Each AdvGLUE split is read from the latest stage that has it (compressed over trained).
    """
    found: dict[str, float] = {}
    for stage in [*_stage_order(metrics), "attacked"]:
        for split, values in metrics.get(stage, {}).items():
            value = values.get("accuracy", values.get("robust_accuracy"))
            if split.startswith(ADVGLUE) and split not in found and _is_finite(value):
                found[split] = float(value)
    out = {_advglue_name(s, task, len(found)): v for s, v in sorted(found.items())}
    attacked = {
        s: v["robust_accuracy"]
        for s, v in metrics.get("attacked", {}).items()
        if _is_finite(v.get("robust_accuracy")) and not s.startswith(ADVGLUE)
    }
    for split, value in sorted(attacked.items()):
        out[ATTACK_NAME if len(attacked) == 1 else f"{ATTACK_NAME} ({split})"] = float(value)
    return out
