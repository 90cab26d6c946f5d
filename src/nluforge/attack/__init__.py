"""Adversarial attacks on a trained classifier: an engine in TextAttack's four parts and three
offline recipes (``deepwordbug``, ``pwws``, ``bert_attack``), with temperature-scaled goals.

The verb is :func:`nluforge.attack.sweep.attack` ``(model, tokenizer, examples, labels, recipe,
config)``; it works on any ``nn.Module`` classifier without a run. The grid reaches it through the
``ATTACKS`` registry (each entry names its runner in ``meta["run"]``), and ``nluforge attack RUN``.
Importing this package registers the recipes and imports no torch.
"""

from __future__ import annotations

from nluforge.core.steps import ATTACKS

_RUN = "nluforge.experiments.attacks:run_step"
# name: (config class, summary, queries_per_word). queries_per_word is a measured figure, for the bench's
# time estimate (experiments/calibrate.py): model queries per word of the attacked field, over attacked
# (not skipped) examples, on the fully trained SST-2 `default` model (dev 90.7), 179 attacked of 200
# dev examples, benchmarks/robustness.py on 2026-12-01 (BENCHMARKS.md, "Attacks against TextAttack").
# None: not measured; the calibration then counts the queries on its own model.
_RECIPES = {
    "deepwordbug": ("DeepWordBugConfig", "character edits on the most important words (Gao et al. 2018)", 1.37),
    "pwws": ("PWWSConfig", "WordNet synonyms by probability-weighted saliency (Ren et al. 2019)", 6.07),
    "bert_attack": ("BertAttackConfig", "masked-LM substitutions (Li et al. 2020)", None),
}


def register() -> None:
    """Put the recipes into ``ATTACKS`` (idempotent: resolving a config calls it every time)."""
    for name, (cls, summary, per_word) in _RECIPES.items():
        if name not in ATTACKS.names():
            ATTACKS.register(name, f"nluforge.attack.config:{cls}", run=_RUN, summary=summary,
                             queries_per_word=per_word)


register()
