"""The attack stage: a registered recipe (``nluforge.attack``) run on a trained model's dev examples.

Used by the grid (an ``attack:`` step; the ``ATTACKS`` entries name :func:`run_step` as their runner)
and by ``nluforge attack RUN``. Per-example outcomes go to ``RUN/attacks/<recipe>.jsonl`` (atomic);
the summary metrics return as ``{split: {"<recipe>.<metric>": value}}`` and land in
``metrics["attacked"]`` of the run, with ``robust_accuracy`` (the report's "robust acc", beside the
clean accuracy): the lowest accuracy under attack over the run's recipes and temperatures. Outcomes are cached in ``<results dir>/.attacks/`` per (model hash,
recipe, options, temperature, example), so a rerun does not redo them.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_text
from nluforge.core.steps import ATTACKS, Step, resolve_step

ATTACKS_DIR = "attacks"
CACHE_DIR = ".attacks"


def recipe_step(recipe: str, options: dict[str, Any]) -> Step:
    """The typed step for ``recipe`` with ``options``; unknown recipe or option: one-line error."""
    import nluforge.attack

    nluforge.attack.register()

    return resolve_step(ATTACKS, "attack", {"method": recipe, **options}, f"attack '{recipe}'")


def recipe_config(recipe: str, options: dict[str, Any]):
    return recipe_step(recipe, options).config


def check_attackable(spec, split: str | None, splits: dict) -> str:
    """The split to attack; one-line errors for a regression task or a split that is not there."""
    if spec.is_regression:
        raise UserError(f"cannot attack {spec.name}: it is a regression task, and the attacks' goal is "
                        "misclassification; attack a classification run instead")
    name = split or spec.eval_splits[0]
    if name not in splits:
        raise UserError(f"split '{name}' is not loaded for {spec.name}; choose one of: {', '.join(splits)}")
    return name


def sample(n: int, max_examples: int | None, seed: int) -> list[int]:
    if max_examples is None or max_examples >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_examples))


def attack_split(model, tokenizer, spec, data, split: str, step: Step, run_dir: Path | None,
                 cache_dir: Path | None, progress: bool = False):
    """Attack a seeded sample of ``data``; write ``run_dir/attacks/<recipe>.jsonl``; return the sweep."""
    from nluforge.attack.sweep import attack

    cfg = step.config
    picked = sample(len(data.texts), cfg.max_examples, cfg.seed)
    sweep = attack(model, tokenizer, [data.texts[i] for i in picked], [data.labels[i] for i in picked],
                   step.method, cfg, cache_dir=cache_dir if cfg.cache else None, progress=progress)
    if run_dir is not None:
        lines = [json.dumps({"split": split, "idx": i, "temperature": t, **o.to_json()})
                 for t, outcomes in sweep.outcomes.items() for i, o in zip(picked, outcomes, strict=True)]
        atomic_write_text(run_dir / ATTACKS_DIR / f"{step.method}.jsonl", "\n".join(lines) + "\n")
    return sweep


def flat_metrics(recipe: str, metrics: dict[str, Any]) -> dict[str, float]:
    """``{"<recipe>.<metric>": float}``, leaving out what is undefined (no success: no perturbed %)."""
    return {f"{recipe}.{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}


def run_step(state, step: Step) -> dict[str, dict[str, float]]:
    """The grid's attack stage for one step (``meta["run"]`` of every ATTACKS entry).

    A regression task is skipped with a note in ``meta["attack"]``, not failed: one grid's ``attack:``
    step applies to all its tasks, and STS-B beside SST-2 is a normal grid (``nluforge attack`` on a
    regression run is still a one-line error)."""
    prep = state.prep
    if prep.spec.is_regression:
        state.meta.setdefault("attack", {})[step.method] = {
            "options": step.options(), "skipped": f"{prep.spec.name} is a regression task: attacks need a class "
                                                  "to flip"}
        return {}
    split = check_attackable(prep.spec, step.config.split, prep.splits)
    sweep = attack_split(state.model, prep.tokenizer, prep.spec, prep.splits[split], split, step, state.run_dir,
                         state.run_dir.parent / CACHE_DIR, progress=state.show_progress)
    state.meta.setdefault("attack", {})[step.method] = {"options": step.options(), "cache_hits": sweep.cache_hits,
                                                        "notes": sweep.notes}
    out = flat_metrics(step.method, sweep.metrics())
    # the report's "robust acc": the worst over this run's recipes (and temperatures)
    before = state.metrics.get("attacked", {}).get(split, {}).get("robust_accuracy")
    mine = out[f"{step.method}.accuracy_under_attack"]
    out["robust_accuracy"] = mine if before is None else min(before, mine)
    return {split: out}
