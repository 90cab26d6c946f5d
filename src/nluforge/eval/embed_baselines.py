"""Frozen-embedding baselines: what the pretrained encoder's own pooled embeddings give, untrained.

For each task, from the model's pooled features (:func:`nluforge.models.features.embed`; mean-pooled
for sentence-transformers checkpoints):

- ``logreg``: logistic regression on the frozen embeddings as the checkpoint gives them (L2-normalised
  when its sentence-transformers modules end with Normalize), scikit-learn's default C=1, no feature
  scaling: MTEB's classification protocol (Muennighoff et al. 2023, "MTEB: Massive Text Embedding
  Benchmark"); ridge for regression. Fitted once on the training split
  (:func:`nluforge.models.features.fit_linear`);
- ``knn``: k-nearest neighbours by cosine similarity (majority vote; mean score for regression);
- ``cosine`` (sentence-pair regression, e.g. STS-B): the zero-shot score cos(e(a), e(b)) of the two
  sentences embedded separately, as sentence-transformers reports STS (Reimers & Gurevych 2019,
  "Sentence-BERT"); its Pearson/Spearman need no training.

:func:`embedding_baselines` returns ``{split: {"logreg": {metric: v}, "knn": {...}, "cosine": {...}}}``
(the shape the report reads under ``metrics["baselines"]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from nluforge.models.features import embed, fit_linear
from nluforge.models.inputs import encode
from nluforge.models.pooling import sentence_transformers_normalizes


def _metrics(spec, preds: np.ndarray, labels) -> dict[str, float]:
    from nluforge.tasks import compute_metrics

    return {k: round(float(v), 4) for k, v in compute_metrics(spec, preds, np.asarray(labels)).items()}


def knn_predict(train_x: np.ndarray, train_y, x: np.ndarray, *, k: int, regression: bool) -> np.ndarray:
    """Cosine k-NN: majority label (ties: the nearest among them) or mean score of the k nearest."""
    def unit(a):
        return a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-9, None)

    sims = unit(x) @ unit(train_x).T  # (N, M)
    k = min(k, len(train_x))
    nearest = np.argsort(-sims, axis=1)[:, :k]  # (N, k), nearest first
    y = np.asarray(train_y)[nearest]
    if regression:
        return y.mean(1)
    out = np.empty(len(x), dtype=np.int64)
    for i, row in enumerate(y):
        values, counts = np.unique(row, return_counts=True)
        best = values[counts == counts.max()]
        out[i] = next(v for v in row if v in best)  # the nearest neighbour's label breaks ties
    return out


def cosine_scores(model: nn.Module, tokenizer, texts: Sequence[tuple[str, ...]], *, max_length: int,
                  batch_size: int, pad_id: int) -> np.ndarray:
    """cos(e(a), e(b)) for each sentence pair, each sentence embedded on its own: (N,)."""
    dummy = [0] * len(texts)
    a = embed(model, encode([(t[0],) for t in texts], dummy, tokenizer, max_length), batch_size=batch_size, pad_id=pad_id)
    b = embed(model, encode([(t[1],) for t in texts], dummy, tokenizer, max_length), batch_size=batch_size, pad_id=pad_id)
    return (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-9, None)


def embedding_baselines(model: nn.Module, tokenizer, train: tuple[Sequence, Sequence],
                        evals: dict[str, tuple[Sequence, Sequence]], spec, *, max_length: int = 128,
                        batch_size: int = 64, k: int = 10, c: float = 1.0, normalize: bool | None = None,
                        seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Baselines per evaluation split from ``(texts, labels)`` pairs; ``model`` is a pooled classifier.

    The model is only read (its head is ignored: features are the head's input). ``normalize``: None
    follows the checkpoint's sentence-transformers Normalize module.
    """
    pad_id = tokenizer.pad_token_id or 0
    regression = spec.is_regression
    if normalize is None:
        normalize = sentence_transformers_normalizes(getattr(model.config, "name_or_path", "") or "")

    def features(texts, labels) -> np.ndarray:
        x = embed(model, encode(texts, labels, tokenizer, max_length), batch_size=batch_size, pad_id=pad_id)
        return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-9, None) if normalize else x

    train_x, train_y = features(*train), np.asarray(train[1])
    fitted = fit_linear(train_x, train_y, num_labels=spec.num_labels, c=c, seed=seed, standardize=False)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (texts, labels) in evals.items():
        x = features(texts, labels)
        logits = fitted.logits(x)
        preds = logits[:, 0] if regression else logits.argmax(1)
        out[name] = {"logreg": _metrics(spec, preds, labels),
                     "knn": _metrics(spec, knn_predict(train_x, train_y, x, k=k, regression=regression), labels)}
        if regression and texts and len(texts[0]) == 2:
            scores = cosine_scores(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                                   pad_id=pad_id)
            out[name]["cosine"] = _metrics(spec, scores, labels)
    return out


def task_baselines(model: nn.Module, tokenizer, task_data, *, splits: Sequence[str] | None = None,
                   **options) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`embedding_baselines` for a loaded task (``nluforge.tasks.load_task``'s result)."""
    spec = task_data.spec
    names = list(splits or spec.eval_splits)
    tr = task_data.splits["train"]
    evals = {n: (task_data.splits[n].texts, task_data.splits[n].labels) for n in names}
    return embedding_baselines(model, tokenizer, (tr.texts, tr.labels), evals, spec, **options)
