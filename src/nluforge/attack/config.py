"""Typed options of the attack recipes (``-p key=value`` on the command line, or an ``attack:`` step).

Light on purpose: resolving an ``attack:`` step imports only this module (no torch), so an unknown
recipe or option fails in well under a second. Every recipe shares :class:`AttackConfig`; a recipe adds
only the options its transformation needs, so ``-p mlm=...`` on ``pwws`` is an error, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nluforge.core.errors import UserError


@dataclass
class AttackConfig:
    """Options every recipe takes."""

    split: str | None = None  # None: the task's first dev split
    max_examples: int | None = 200  # a seeded sample of the split (the benchmark size); None: all
    seed: int = 0  # the sample and the random character edits
    search: Literal["greedy", "beam"] = "greedy"  # greedy by word importance (TextAttack's WIR), or beam
    beam_width: int = 5  # beam search only
    max_perturbed: float = 1.0  # the largest fraction of the attacked field's words that may change
    # Temperature sweep (the goal scores softmax(logits / T)); robust accuracy = the minimum over T.
    temperatures: list[float] = field(default_factory=lambda: [1.0])
    batch_size: int = 64  # model queries per forward pass
    max_length: int = 128  # tokens per query
    cache: bool = True  # reuse outcomes cached per (model hash, recipe, options, example)

    def __post_init__(self):
        if self.max_examples is not None and self.max_examples <= 0:
            raise UserError(f"attack max_examples must be positive, got {self.max_examples}")
        if not 0 < self.max_perturbed <= 1:
            raise UserError(f"attack max_perturbed is a fraction of the words in (0, 1], got {self.max_perturbed}")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise UserError(f"attack temperatures must be a non-empty list of positive numbers, got {self.temperatures}")
        for name in ("beam_width", "batch_size", "max_length"):
            if getattr(self, name) <= 0:
                raise UserError(f"attack {name} must be a positive integer, got {getattr(self, name)}")

    def cache_options(self) -> dict:
        """The options that change an example's outcome (not the sample, batch size or caching)."""
        skip = {"split", "max_examples", "batch_size", "cache", "temperatures"}
        return {k: v for k, v in vars(self).items() if k not in skip}


@dataclass
class DeepWordBugConfig(AttackConfig):
    """Gao et al. 2018: character edits on the most important words."""

    # replace1: score a word by the drop when it is replaced by [UNK] (the paper's Replace-1 score, and
    # TextAttack's "unk"); combined: the paper's temporal head + lambda * temporal tail score.
    scoring: Literal["replace1", "combined"] = "replace1"
    combined_lambda: float = 1.0
    edits: list[Literal["swap", "substitute", "delete", "insert"]] = field(
        default_factory=lambda: ["swap", "substitute", "delete", "insert"])
    max_edit_distance: int = 30  # Levenshtein distance over the whole text (the paper's power, TextAttack's 30)


@dataclass
class PWWSConfig(AttackConfig):
    """Ren et al. 2019: WordNet synonyms ordered by softmax(saliency) x best probability drop."""

    wordnet_dir: str | None = None  # None: $NLUFORGE_WORDNET_DIR, else /usr/share/wordnet


@dataclass
class BertAttackConfig(AttackConfig):
    """Li et al. 2020: masked-LM substitutions at the most important words."""

    mlm: str | None = None  # a masked LM (folder or hub id); None: the default encoder's tied-embedding head
    k: int = 48  # candidates per word (the paper's K)

    def __post_init__(self):
        super().__post_init__()
        if self.k <= 0:
            raise UserError(f"attack k must be a positive integer, got {self.k}")
