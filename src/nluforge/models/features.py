"""Frozen features and closed-form heads: what the classifier reads, and a head fitted on it.

``embed`` runs a classifier over an encoded split and returns the input of its last ``nn.Linear`` (for
BERT: the pooled vector, mean-pooled or [CLS] pooler as :mod:`nluforge.models.pooling` set it), in
the split's order. ``fit_linear`` fits that Linear to convergence on those features: multinomial
logistic regression (scikit-learn, L-BFGS) for classification, ridge regression for regression, on
standardised features, with the standardisation folded exactly into the weights, so the model's own
head reproduces the fitted classifier. Used by the linear probe, SetFit's head and the frozen
embedding baselines.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.models.arch import arch_of
from nluforge.models.inputs import Encoded, collate, eval_batches


def head_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of the task head (the architecture table's head modules)."""
    names = arch_of(model).head
    linears = [m for n in names if hasattr(model, n) for m in getattr(model, n).modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"found no linear layer in the task head ({', '.join(names)}) of {type(model).__name__}")
    return linears[-1]


@torch.inference_mode()
def embed(model: nn.Module, enc: Encoded, *, batch_size: int, pad_id: int) -> np.ndarray:
    """The head's last Linear's input for each example of ``enc``: (N, H) float32, in ``enc``'s order."""
    layer = head_linear(model)
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    out = np.zeros((len(enc), layer.in_features), dtype=np.float32)
    try:
        for idx in eval_batches(enc.lengths(), batch_size):
            batch = collate(enc, idx, pad_id, regression=False)
            captured.clear()
            model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})
            out[idx] = captured[-1].float().cpu().numpy()  # (B, H)
    finally:
        handle.remove()
        model.train(was_training)
    return out


@dataclass
class LinearFit:
    weight: np.ndarray  # (C, H) for C classes, (1, H) for regression; applies to raw (unscaled) features
    bias: np.ndarray  # (C,)
    train_score: float  # accuracy (classification) or R^2 (regression) on the fitted features

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias


C_GRID = np.logspace(-3, 0, 7)  # inverse L2 strengths tried by cross-validation (1e-3 .. 1)


def fit_linear(x: np.ndarray, y, *, num_labels: int, c: float | None = None, max_iter: int = 2000,
               seed: int = 0, standardize: bool = True) -> LinearFit:
    """Logistic regression (``num_labels`` >= 2) or ridge (1), fitted on standardised ``x`` (N, H).

    ``c`` is scikit-learn's inverse L2 strength (ridge: alpha = 1 / c); None picks it from
    :data:`C_GRID` by (up to) 5-fold cross-validation on the training data itself. Binary logistic
    regression gives one weight vector w; the two logits are -(w·x + b)/2 and +(w·x + b)/2, whose
    softmax is the same. ``standardize=False`` fits on ``x`` as given (SetFit's head).
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV

    y = np.asarray(y)
    if len(x) == 0:
        raise UserError("cannot fit a head on an empty training split")
    mean, std = (x.mean(0), x.std(0) + 1e-6) if standardize else (np.zeros(x.shape[1]), np.ones(x.shape[1]))
    z = (x - mean) / std
    if num_labels == 1:
        y = y.astype(np.float64)
        reg = Ridge(alpha=1.0 / c) if c else RidgeCV(alphas=1.0 / C_GRID)
        reg.fit(z, y)
        w, b, score = reg.coef_[None, :], np.atleast_1d(reg.intercept_), reg.score(z, y)
    else:
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise UserError("the training split has a single class; a classifier head needs at least two")
        folds = min(5, int(counts.min()))
        if c is None and folds >= 2:
            from sklearn.model_selection import StratifiedKFold

            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            with warnings.catch_warnings():  # scikit-learn 1.9 announces default changes we do not rely on
                warnings.simplefilter("ignore", FutureWarning)
                clf = LogisticRegressionCV(Cs=C_GRID, cv=cv, max_iter=max_iter, scoring="accuracy").fit(z, y)
        else:  # a class with a single example: no cross-validation, the grid's middle
            clf = LogisticRegression(C=c or float(np.median(C_GRID)), max_iter=max_iter).fit(z, y)
        w = np.zeros((num_labels, x.shape[1]))
        b = np.full(num_labels, -30.0)  # classes absent from the training data are never predicted
        if len(clf.classes_) == 2:
            coef, icpt = clf.coef_[0] / 2, clf.intercept_[0] / 2
            w[clf.classes_[0]], b[clf.classes_[0]] = -coef, -icpt
            w[clf.classes_[1]], b[clf.classes_[1]] = coef, icpt
        else:
            w[clf.classes_], b[clf.classes_] = clf.coef_, clf.intercept_
        score = clf.score(z, y)
    w_raw = w / std  # fold the standardisation: w·(x - mean)/std + b = (w/std)·x + (b - (w/std)·mean)
    return LinearFit(w_raw.astype(np.float32), (b - w_raw @ mean).astype(np.float32), float(score))


def set_linear(layer: nn.Linear, fit: LinearFit) -> None:
    """Copy a fitted head into ``layer`` (shapes must match)."""
    weight = torch.as_tensor(fit.weight, dtype=layer.weight.dtype, device=layer.weight.device)
    if weight.shape != layer.weight.shape:
        raise UserError(f"fitted head has shape {tuple(weight.shape)}, the model's head {tuple(layer.weight.shape)}")
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.as_tensor(fit.bias, dtype=layer.bias.dtype, device=layer.bias.device))
