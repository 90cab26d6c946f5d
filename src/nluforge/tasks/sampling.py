"""Seeded subsets: K examples per class (the few-shot setting of LM-BFF, Gao et al. 2021) and random
subsets of N examples.

Each split draws from its own generator, ``random.Random(f"{seed}:{split}")`` (string seeds are
hashed with SHA-512, so results are the same across processes and Python runs). Random subsets keep
file order; a K-shot set is shuffled. LM-BFF also draws its dev set K per class from train; we keep
the real dev set instead, so scores stay comparable with full-data runs.
"""

from __future__ import annotations

import random

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split
from nluforge.tasks.spec import TaskSpec


def _rng(seed: int, split: str) -> random.Random:
    return random.Random(f"{seed}:{split}")


def k_shot(split: Split, spec: TaskSpec, k: int, seed: int) -> Split:
    """``k`` examples of every class of ``spec``, drawn without replacement, then shuffled."""
    if spec.is_regression:
        raise UserError(
            f"k_shot needs a classification task, and {spec.name} is regression; "
            "use max_train_samples instead"
        )
    by_class: dict[int, list[int]] = {c: [] for c in range(spec.num_labels)}
    for i, label in enumerate(split.labels):
        by_class[label].append(i)
    rng = _rng(seed, split.name)
    chosen: list[int] = []
    for c, indices in by_class.items():
        if len(indices) < k:
            raise UserError(
                f"k_shot={k} needs {k} '{split.name}' examples of every class, but "
                f"'{spec.label_names[c]}' has {len(indices)} in {split.source}; lower k_shot"
            )
        chosen += rng.sample(indices, k)
    rng.shuffle(chosen)
    return split.select(chosen)


def subsample(split: Split, n: int, seed: int) -> Split:
    """A seeded random subset of ``n`` examples in file order (the whole split if it is smaller)."""
    if n >= len(split):
        return split
    return split.select(sorted(_rng(seed, split.name).sample(range(len(split)), n)))


def check_counts(**counts: int | None) -> None:
    """Positive integers or None; one-line error naming the bad argument."""
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise UserError(f"{name} must be a positive integer, got {value!r}")
