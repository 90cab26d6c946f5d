"""The official GLUE metrics, as fractions in [0, 1] (correlations in [-1, 1]), not percentages.

GLUE (Wang et al. 2019) scores CoLA by Matthews correlation, STS-B by Pearson and Spearman
correlation, MRPC and QQP by F1 and accuracy, and every other task by accuracy. F1 is binary F1 of
class 1 (``equivalent`` / ``duplicate``), as in GLUE. scikit-learn and scipy are imported on first
use, so importing this module stays cheap.

Deviation: a correlation with a constant input is undefined (NaN); we report 0.0 instead so that an
untrained or collapsed regressor gives a number that JSON results and tables can hold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nluforge.tasks.spec import TaskSpec

METRICS = ("accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman")
REGRESSION_METRICS = ("pearson", "spearman")


def _accuracy(preds, labels) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(labels, preds)


def _f1(preds, labels) -> float:
    from sklearn.metrics import f1_score

    return f1_score(labels, preds, pos_label=1, average="binary", zero_division=0)


def _macro_f1(preds, labels) -> float:
    from sklearn.metrics import f1_score

    return f1_score(labels, preds, average="macro", zero_division=0)


def _mcc(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(labels, preds)


def _correlation(kind: str) -> Callable:
    def corr(preds, labels) -> float:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConstantInputWarning: handled as 0.0 below
            value = (stats.pearsonr if kind == "pearson" else stats.spearmanr)(preds, labels)[0]
        return 0.0 if math.isnan(value) else value

    return corr


_FUNCS: dict[str, Callable] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "macro_f1": _macro_f1,
    "mcc": _mcc,
    "pearson": _correlation("pearson"),
    "spearman": _correlation("spearman"),
}


def compute_metrics(spec: TaskSpec, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """Score ``predictions`` against ``labels`` with every metric of ``spec``, in its order.

    ``predictions`` are class ids (classification) or floats (regression), one per example.
    """
    import numpy as np

    preds, golds = np.asarray(predictions), np.asarray(labels)
    if preds.ndim != 1 or preds.shape != golds.shape or len(preds) == 0:
        raise ValueError(
            f"need equal, non-empty 1-D predictions and labels, got {preds.shape} and {golds.shape}"
        )
    if spec.is_regression:
        preds, golds = preds.astype(float), golds.astype(float)
    else:
        if np.issubdtype(preds.dtype, np.floating) and not np.all(preds == np.round(preds)):
            raise ValueError(f"{spec.name} is a classification task: predictions must be class ids")
        preds, golds = preds.astype(int), golds.astype(int)
    return {name: float(_FUNCS[name](preds, golds)) for name in spec.metrics}
