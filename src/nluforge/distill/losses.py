"""The distillation losses, as plain functions on tensors.

- Logit KD: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the student
  matches the teacher's ``softmax(z / T)``; the loss is scaled by T² so its gradients keep their size
  across temperatures. We use the KL form, T² · KL(p_T ‖ q_T), which differs from the paper's soft
  cross-entropy only by the teacher's entropy (a constant): same gradients, and zero at a perfect match.
- MiniLM: Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
  Pre-Trained Transformers" (NeurIPS): KL between the teacher's and the student's last-layer self-attention
  distributions ``softmax(Q Kᵀ / √d)`` and value relations ``softmax(V Vᵀ / √d)``, per head, averaged
  over heads and (non-padding) query positions. Relations are T × T, so teacher and student may differ in
  hidden size. Heads: with ``heads`` equal to both models' head count this is MiniLM (v1) exactly; any
  other ``heads`` R re-splits the concatenated Q/K/V into R relation heads, as MiniLMv2 (Wang et al. 2021)
  does, so a student with another head count can learn from the teacher. Departures: MiniLM distils the
  pretraining (task-agnostic) model; here it is one term of task-specific distillation, beside logit KD.
- The hard-label loss: cross-entropy (MSE for regression) against the gold labels; unlabeled examples
  carry the label ``IGNORE`` (classification) or NaN (regression) and add nothing to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100  # the label of an unlabeled example (classification); regression uses NaN


def soft_labels(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` per row; T > 1 flattens, T < 1 sharpens. (N, L) -> (N, L)."""
    return (logits.float() / temperature).softmax(-1)


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher_probs ‖ softmax(student_logits / T)), mean over the batch.

    student_logits (B, L), teacher_probs (B, L) rows summing to 1 (``soft_labels(teacher_logits, T)``) -> ().
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, L)
    p = teacher_probs.float()
    kl = (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(-1)  # (B,)
    return kl.mean() * temperature**2


def regression_kd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """A regression teacher's KD term: MSE to its score (no distribution, so no temperature). (B,) (B,) -> ()."""
    return F.mse_loss(student_scores.float().view(-1), teacher_scores.float().view(-1))


def hard_loss(logits: torch.Tensor, labels: torch.Tensor, *, regression: bool) -> torch.Tensor:
    """Cross-entropy (MSE) on the labelled rows of the batch; 0 (with a gradient path) when none is."""
    if regression:
        keep = ~torch.isnan(labels)  # (B,)
        if not keep.any():
            return logits.sum() * 0.0
        return F.mse_loss(logits.float().view(-1)[keep], labels.float()[keep])
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)


def relation_log_probs(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """``log softmax(a_h b_hᵀ / √d)`` per relation head h: (B, T, D), (B, T, D), mask (B, T) -> (B, R, T, T).

    ``a``/``b`` are the concatenated per-head projections (Q and K for attention, V and V for value
    relations); they are split into ``heads`` heads of D / R dims (D must be divisible by R).
    """
    bsz, length, dim = a.shape
    d = dim // heads
    a = a.float().view(bsz, length, heads, d).transpose(1, 2)  # (B, R, T, d)
    b = b.float().view(bsz, length, heads, d).transpose(1, 2)  # (B, R, T, d)
    scores = a @ b.transpose(-1, -2) / math.sqrt(d)  # (B, R, T, T)
    keys = mask[:, None, None, :].bool()  # (B, 1, 1, T): padding keys get no probability
    scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(teacher_log: torch.Tensor, student_log: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) over keys, averaged over heads and real (non-padding) query rows.

    (B, R, T, T), (B, R, T, T), mask (B, T) -> ().
    """
    p = teacher_log.exp()
    kl = (p * (teacher_log - student_log)).sum(-1)  # (B, R, T); padded keys: p = 0
    rows = mask[:, None, :].to(kl.dtype)  # (B, 1, T)
    return (kl * rows).sum() / (rows.sum() * kl.shape[1]).clamp_min(1.0)


def minilm_loss(teacher_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                student_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor], mask: torch.Tensor,
                heads: int) -> torch.Tensor:
    """MiniLM's deep self-attention distillation: attention KL + value-relation KL of the last layers.

    Each ``*_qkv`` holds the last layer's query, key and value projections (B, T, D_teacher or D_student).
    """
    (tq, tk, tv), (sq, sk, sv) = teacher_qkv, student_qkv
    attention = relation_kl(relation_log_probs(tq, tk, mask, heads), relation_log_probs(sq, sk, mask, heads), mask)
    values = relation_kl(relation_log_probs(tv, tv, mask, heads), relation_log_probs(sv, sv, mask, heads), mask)
    return attention + values
