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
_RECIPES = {
    "deepwordbug": ("DeepWordBugConfig", "character edits on the most important words (Gao et al. 2018)"),
    "pwws": ("PWWSConfig", "WordNet synonyms by probability-weighted saliency (Ren et al. 2019)"),
    "bert_attack": ("BertAttackConfig", "masked-LM substitutions (Li et al. 2020)"),
}


def register() -> None:
    """Put the recipes into ``ATTACKS`` (idempotent: resolving a config calls it every time)."""
    for name, (cls, summary) in _RECIPES.items():
        if name not in ATTACKS.names():
            ATTACKS.register(name, f"nluforge.attack.config:{cls}", run=_RUN, summary=summary)


register()
