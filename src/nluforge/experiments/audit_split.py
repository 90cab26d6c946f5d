"""The member / non-member split of a membership audit, chosen at training time (``data.audit_holdout``)
and recorded in ``RUN/audit_split.json``; LiRA shadow runs (``data.audit_shadow``) train on the
audited run's data outside the pool plus their half of the pool, so each shadow sees as many examples
as the audited run. Kept apart from :mod:`nluforge.experiments.audit` (which runs shadow grids) so the
pipeline can use it without an import cycle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_json

SPLIT_FILE = "audit_split.json"
SPLIT_SALT = 0xA0D17


def _holdout(cfg, n: int) -> tuple[np.ndarray, np.ndarray]:
    size = cfg.data.audit_holdout
    if not size:
        raise UserError("data.audit_shadow needs data.audit_holdout (the audited run's pool)")
    if 2 * size > n:
        raise UserError(f"--audit-holdout {size} needs at least {2 * size} training examples (members and "
                        f"non-members), the task has {n}; lower it or raise max_train_samples")
    perm = np.random.default_rng([cfg.seed, SPLIT_SALT]).permutation(n)
    return np.sort(perm[size:2 * size]), np.sort(perm[:size])  # members, non-members


def reserve_members(cfg, train):
    """``(train split to fit, audit split)``: the run's own training data without the non-members, or a
    shadow's: the examples outside the pool (which the audited run trained on too) and the shadow's
    random half of the pool. The audit split is None for a shadow run.

    A shadow thus trains on as many examples as the audited run, from the same distribution, as
    Carlini et al. (2022) train theirs. Training a shadow on its half of the pool alone (our first
    version) made the shadows of a 20,000-example run 500-example runs, a different model than the one
    audited."""
    from nluforge.privacy.audit import shadow_mask

    members, nonmembers = _holdout(cfg, len(train.texts))
    pool = np.r_[members, nonmembers]
    outside = np.setdiff1d(np.arange(len(train.texts)), pool)  # trained on by the run and every shadow
    if cfg.data.audit_shadow:
        index, k, seed = cfg.data.audit_shadow
        keep = np.sort(np.r_[outside, pool[shadow_mask(len(pool), k, seed)[index]]])
        return _subset(train, keep), None
    keep = np.sort(np.r_[outside, members])
    split = {"seed": cfg.seed, "members": members.tolist(), "nonmembers": nonmembers.tolist(),
             "note": "indices into the task's training split as loaded for this config (before the holdout)"}
    return _subset(train, keep), split


def _subset(split, idx):
    return dataclasses.replace(split, texts=[split.texts[i] for i in idx], labels=[split.labels[i] for i in idx])


def write_split(run_dir: Path, split: dict[str, Any]) -> dict[str, Any]:
    atomic_write_json(Path(run_dir) / SPLIT_FILE, split)
    return {"file": SPLIT_FILE, "seed": split["seed"], "members": len(split["members"]),
            "nonmembers": len(split["nonmembers"])}


def read_split(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} has no recorded member split ({SPLIT_FILE}); train it with "
                        "--audit-holdout N (e.g. 500) to audit it")
    import json

    return json.loads(path.read_text(encoding="utf-8"))
