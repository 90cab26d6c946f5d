"""Membership-inference audits of a finished run: the member split, shadow runs, scores, records.

At training time ``data.audit_holdout: N`` (``--audit-holdout N``) reserves N seeded training
examples as non-members (the run never sees them) and names N of the remaining training examples as
members; ``audit_split.json`` in the run directory records both (indices into the task's loaded
training split, and the seed). ``nluforge audit RUN`` and the ``audit:`` grid step then score them:

- ``loss``: the audited model's per-example loss (``nluforge.privacy.audit``);
- ``lira``: k shadow runs, each the audited run's own config trained on the audited run's data outside
  the pool plus a random half of the pool (members and non-members; every example in exactly k/2
  shadows), so a shadow sees as many examples as the audited run. The shadows are grid cells run by
  :func:`~nluforge.experiments.runners.run_grid` into ``RUN/shadows/`` (parallel with a process
  backend, and resumable: a finished shadow is not trained again).

Results: ``metrics["audited"][<attack>]`` (for the grid step) and ``RUN/evals/audit-<attack>.json``
with the metrics and the ROC points (the report reads files only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from nluforge.core.errors import UserError
from nluforge.experiments.audit_split import read_split


def _logits(servable, texts) -> np.ndarray:
    from nluforge.eval.predict import predict_texts

    return predict_texts(servable.model, servable.tokenizer, texts, max_length=servable.cfg.data.max_length,
                         batch_size=servable.cfg.train.eval_batch_size, regression=False)


def audit_run(run_dir: Path, attack: str, options, *, runner=None, servable=None) -> dict[str, Any]:
    """Run one attack on a finished run; write ``evals/audit-<attack>.json``; return its record."""
    from nluforge.eval.records import eval_record, write_eval
    from nluforge.experiments.data import load_data
    from nluforge.experiments.servable import load_servable
    from nluforge.privacy import audit as mia

    run_dir = Path(run_dir)
    split = read_split(run_dir)
    s = servable or load_servable(run_dir)
    if s.spec.is_regression:
        raise UserError("membership audits need a classification task (per-example cross-entropy)")
    _, splits, _ = load_data(dataclasses.replace(s.cfg, eval=dataclasses.replace(s.cfg.eval, advglue=False)))
    train = splits["train"]
    members, nonmembers = np.array(split["members"]), np.array(split["nonmembers"])
    if options.max_examples:
        members, nonmembers = members[:options.max_examples], nonmembers[:options.max_examples]
    pool = np.r_[members, nonmembers]
    texts, labels = [train.texts[i] for i in pool], np.array([train.labels[i] for i in pool])
    logits = _logits(s, texts)  # (N, C)
    m = len(members)
    if attack == "loss":
        scores = -mia.example_loss(logits, labels)
        info = {}
    else:
        scores, info = _lira(run_dir, s.cfg, options, split, logits, labels, texts, runner)
    delta = ((s.result.meta.get("privacy") or {}).get("delta", 0.0) if s.result else 0.0)
    metrics, roc = mia.membership_metrics(scores[:m], scores[m:], delta=delta)
    record = eval_record(f"audit-{attack}", {"attack": attack, "options": dataclasses.asdict(options), **info},
                         len(pool), metrics)
    record["roc"] = roc
    if s.result is not None and s.result.meta.get("privacy"):
        record["epsilon_spent"] = s.result.meta["privacy"]["epsilon_spent"]
    write_eval(run_dir, record)
    return record


def shadow_cells(cfg, options):
    """The k shadow runs: the audited config on the data outside the pool plus the shadow's half of it,
    no steps, no extras."""
    ev = dataclasses.replace(cfg.eval, baselines=False, latency=False, advglue=False, save_predictions=False)
    return [dataclasses.replace(cfg, name=f"shadow{i}of{options.shadows}", audit=[], attack=[],
                                compress=[], eval=ev,
                                data=dataclasses.replace(cfg.data, audit_shadow=[i, options.shadows, options.seed]))
            for i in range(options.shadows)]


def _lira(run_dir, cfg, options, split, logits, labels, texts, runner):
    from nluforge.experiments.runners import run_grid
    from nluforge.experiments.servable import load_servable
    from nluforge.privacy import audit as mia

    full_pool = len(split["members"]) + len(split["nonmembers"])
    cells = shadow_cells(cfg, options)
    shadows_dir = Path(run_dir) / "shadows"
    results = {r.run_info.id: r for r in run_grid(cells, shadows_dir, runner)}
    mask_full = mia.shadow_mask(full_pool, options.shadows, options.seed)  # over members + non-members
    m_all, m = len(split["members"]), len(texts) // 2
    cols = np.r_[np.arange(m), m_all + np.arange(len(texts) - m)]  # the examples audited here
    phis = []
    for cell in cells:
        path = shadows_dir / cell.run_id()
        result = results.get(cell.run_id())
        if result is not None and result.run_info.status != "completed":
            raise UserError(f"shadow run {path.name} failed: {result.run_info.error}")
        phis.append(mia.logit_confidence(_logits(load_servable(path), texts), labels))
    target = mia.logit_confidence(logits, labels)
    scores = mia.lira_scores(target, np.stack(phis), mask_full[:, cols])
    return scores, {"shadows": options.shadows, "shadows_dir": "shadows"}


def run_audit_step(state, step) -> dict[str, dict[str, float]]:
    """The ``audit:`` grid step: ``{attack: metrics}`` into ``metrics["audited"]``."""
    from nluforge.experiments.servable import Servable

    s = Servable(state.run_dir, state.cfg, state.prep.spec, state.prep.tokenizer, state.model.eval(),
                 state.prep.method, state.prep.method_cfg, _partial_result(state), False)
    record = audit_run(state.run_dir, step.method, step.config, servable=s)
    return {step.method: {k: v for k, v in record["metrics"].items()}}


def _partial_result(state):
    """What the audit reads of result.json before it exists: the privacy record."""
    return dataclasses.make_dataclass("Partial", [("meta", dict)])(dict(state.meta))
