"""Membership-inference scores and what they imply, from per-example logits (numpy/scipy only).

- Loss threshold (Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the Connection to
  Overfitting"): score = -loss; members tend to have lower loss.
- LiRA, online, fixed variance (Carlini et al. 2022, "Membership Inference Attacks From First
  Principles", Sections IV-B/C): per example, the logit-scaled confidence
  phi = log p_y - log(1 - p_y) of shadow models that trained on it (IN) and that did not (OUT) gives
  two Gaussians; the score is the log likelihood ratio of the target's phi. Departures: with few
  shadows we use one variance per side pooled over all examples (the paper's recommendation below
  64 shadows), and no augmentation queries (text has no cheap label-preserving augmentation here).
- Metrics: AUC, TPR at 1% and 0.1% FPR, and the empirical epsilon lower bound of a (eps, delta)-DP
  guarantee implied by the attack's TPR/FPR (Jagielski et al. 2020, Nasr et al. 2021):
  eps >= log((TPR - delta) / FPR) and log((1 - FPR - delta) / FNR), with TPR/FPR replaced by their
  95% Clopper-Pearson bounds (lower TPR, upper FPR), maximised over thresholds. Maximising over
  thresholds on the same examples makes the bound slightly optimistic (no correction).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

FPR_TARGETS = (0.01, 0.001)


def example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy per example (N,)."""
    return -log_softmax(logits, axis=1)[np.arange(len(labels)), labels]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) per example (N,), computed stably from the logits."""
    lp = log_softmax(logits, axis=1)  # (N, C)
    own = lp[np.arange(len(labels)), labels]
    others = lp.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    rest = logsumexp(others, axis=1)  # log(1 - p_y)
    return own - rest


def shadow_mask(n: int, k: int, seed: int) -> np.ndarray:
    """(k, n) bool: shadow i trains on example j; every example is IN for exactly k/2 shadows."""
    rng = np.random.default_rng([seed, 0x5EAD])
    order = np.argsort(rng.random((k, n)), axis=0)  # a random permutation of shadows per example
    return order < k // 2


def lira_scores(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """Online LiRA log-likelihood ratio per example (N,); ``shadow_phi``/``shadow_in``: (k, N)."""
    from scipy.stats import norm

    phi_in = np.where(shadow_in, shadow_phi, np.nan)
    phi_out = np.where(~shadow_in, shadow_phi, np.nan)
    mu_in, mu_out = np.nanmean(phi_in, axis=0), np.nanmean(phi_out, axis=0)  # (N,)
    s_in = max(float(np.nanstd(phi_in - mu_in)), 1e-3)  # pooled (fixed) variance per side
    s_out = max(float(np.nanstd(phi_out - mu_out)), 1e-3)
    return norm.logpdf(target_phi, mu_in, s_in) - norm.logpdf(target_phi, mu_out, s_out)


def clopper_pearson(k: np.ndarray, n: int, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided (1 - alpha) Clopper-Pearson interval for k successes out of n."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=float)
    lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


def _eps(tpr, fpr, delta: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(tpr - delta, 0, None) / fpr)
        b = np.log(np.clip(1 - fpr - delta, 0, None) / (1 - tpr))
    out = np.fmax(a, b)
    return np.where(np.isfinite(out), out, np.nan)


def membership_metrics(member_scores: np.ndarray, nonmember_scores: np.ndarray, *, delta: float = 0.0,
                       roc_points: int = 200) -> tuple[dict[str, float], dict[str, list[float]]]:
    """AUC, TPR at low FPR and the epsilon lower bound; plus ROC points ``{"fpr", "tpr"}`` for a plot."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    s = np.r_[member_scores, nonmember_scores]
    fpr, tpr, _ = roc_curve(y, s)
    n_pos, n_neg = len(member_scores), len(nonmember_scores)
    tp, fp = np.round(tpr * n_pos), np.round(fpr * n_neg)
    tpr_lo, _ = clopper_pearson(tp, n_pos)
    _, fpr_hi = clopper_pearson(fp, n_neg)
    eps_cp = np.nanmax(np.r_[_eps(tpr_lo, fpr_hi, delta), 0.0])
    eps_point = np.nanmax(np.r_[_eps(tpr, fpr, delta), 0.0])
    metrics = {"auc": float(roc_auc_score(y, s)), "members": n_pos, "nonmembers": n_neg,
               "eps_lower_bound": float(eps_cp), "eps_point_estimate": float(eps_point)}
    for target in FPR_TARGETS:
        metrics[f"tpr_at_{target:g}_fpr"] = float(tpr[fpr <= target].max()) if (fpr <= target).any() else 0.0
    keep = np.unique(np.r_[0, np.round(np.geomspace(1, len(fpr) - 1, min(roc_points, len(fpr)))).astype(int)])
    roc = {"fpr": fpr[keep].round(6).tolist(), "tpr": tpr[keep].round(6).tolist()}
    return metrics, roc
