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

ATTACKS.register("deepwordbug", "nluforge.attack.config:DeepWordBugConfig", run=_RUN,
                 summary="character edits on the most important words (Gao et al. 2018)")
ATTACKS.register("pwws", "nluforge.attack.config:PWWSConfig", run=_RUN,
                 summary="WordNet synonyms by probability-weighted saliency (Ren et al. 2019)")
ATTACKS.register("bert_attack", "nluforge.attack.config:BertAttackConfig", run=_RUN,
                 summary="masked-LM substitutions (Li et al. 2020)")
