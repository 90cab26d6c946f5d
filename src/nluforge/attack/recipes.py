"""The three recipes: a transformation (where replacement words come from) and a word order.

- ``deepwordbug`` (Gao et al. 2018, "Black-box Generation of Adversarial Text Sequences to Evade Deep
  Learning Classifiers"): one random character edit per word and edit kind (swap two neighbours,
  substitute, delete, insert a letter), as TextAttack's ``DeepWordBugGao2018``; words ordered by the
  paper's Replace-1 score (default) or its Combined score (temporal head + lambda x temporal tail).
  Each edit is Levenshtein distance 1, so the paper's edit budget (30) caps the number of words edited.
- ``pwws`` (Ren et al. 2019, "Generating Natural Language Adversarial Examples through Probability
  Weighted Word Saliency"): WordNet synonyms; words ordered by softmax(saliency) x the best synonym's
  drop in p(label). Departure: the paper also swaps named entities; as in TextAttack, we do not.
- ``bert_attack`` (Li et al. 2020, "BERT-ATTACK: Adversarial Attack Against BERT Using BERT"): the
  masked LM reads the *unmasked* sentence once and proposes its top-K tokens at each word's first
  sub-word, as the paper does; words ordered by the [MASK] (here [UNK]) importance. Departures: words
  split into several sub-words take single-token candidates only (the paper ranks sub-word
  combinations by perplexity), and no cosine-similarity filter on candidates (the paper's 0.2
  threshold needs a sentence encoder; the stopword and budget constraints still apply).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from nluforge.attack.engine import Goal, unk_importance
from nluforge.attack.words import STOPWORDS, Text

_LETTERS = string.ascii_lowercase


# ---- deepwordbug ------------------------------------------------------------------------------------


class CharEdits:
    """Per word and edit kind, one random edit (TextAttack's ``random_one=True``), drawn once per
    (example, word) so every search step sees the same candidates."""

    def __init__(self, edits: list[str], rng):
        self.edits, self.rng = edits, rng
        self.drawn: dict[tuple[int, str], list[str]] = {}

    def _edit(self, word: str, kind: str) -> str | None:
        n, r = len(word), self.rng
        if kind == "swap" and n > 1:
            i = r.randrange(n - 1)
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
        if kind == "substitute":
            i = r.randrange(n)
            return word[:i] + r.choice(_LETTERS) + word[i + 1:]
        if kind == "delete" and n > 1:
            i = r.randrange(n)
            return word[:i] + word[i + 1:]
        if kind == "insert":
            i = r.randrange(n)
            return word[:i] + r.choice(_LETTERS) + word[i:]
        return None

    def candidates(self, text: Text, i: int, word: str) -> list[str]:
        key = (i, word)
        if key not in self.drawn:
            edits = (self._edit(word, kind) for kind in self.edits)
            self.drawn[key] = list(dict.fromkeys(e for e in edits if e and e != word))
        return self.drawn[key]


@dataclass
class DeepWordBug:
    config: Any
    unk: str
    max_words: int | None = None

    def __post_init__(self):
        self.max_words = self.config.max_edit_distance  # one Levenshtein edit per perturbed word

    def transformation(self, original: Text, rng) -> CharEdits:
        return CharEdits(list(self.config.edits), rng)

    def order(self, goal: Goal, text: Text, indices: list[int], transformation) -> list[int]:
        if self.config.scoring == "replace1":
            imp = unk_importance(goal, text, indices, self.unk)
        else:
            imp = combined_importance(goal, text, indices, self.config.combined_lambda)
        return sorted(indices, key=lambda i: -imp[i])


def combined_importance(goal: Goal, text: Text, indices: list[int], lam: float) -> dict[int, float]:
    """The paper's Combined score: temporal head (how much word i adds to p(label) of the prefix
    ending at i) + lambda x temporal tail (the same for the suffix starting at i)."""
    n = len(text.words())
    keep_prefix = [text.replace({j: "" for j in range(k, n)}) for k in range(n + 1)]  # words[:k]
    keep_suffix = [text.replace({j: "" for j in range(0, k)}) for k in range(n + 1)]  # words[k:]
    p_prefix = 1.0 - goal.scores(keep_prefix)  # p(label)
    p_suffix = 1.0 - goal.scores(keep_suffix)
    return {i: float((p_prefix[i + 1] - p_prefix[i]) + lam * (p_suffix[i] - p_suffix[i + 1])) for i in indices}


# ---- pwws -------------------------------------------------------------------------------------------


class Synonyms:
    def __init__(self, wordnet):
        self.wordnet = wordnet

    def candidates(self, text: Text, i: int, word: str) -> list[str]:
        return self.wordnet.synonyms(word)


@dataclass
class PWWS:
    config: Any
    unk: str
    wordnet: Any
    max_words: int | None = None

    def transformation(self, original: Text, rng) -> Synonyms:
        return Synonyms(self.wordnet)

    def order(self, goal: Goal, text: Text, indices: list[int], transformation) -> list[int]:
        if not indices:
            return []
        saliency = unk_importance(goal, text, indices, self.unk)  # p(label) drop when the word is unknown
        weights = softmax(np.array([saliency[i] for i in indices]))
        base = goal.scores([text])[0]
        delta = []
        for i in indices:
            swaps = [text.replace({i: s}) for s in transformation.candidates(text, i, text.words()[i])]
            delta.append(float(goal.scores(swaps).max() - base) if swaps else 0.0)  # best drop in p(label)
        h = weights * np.array(delta)
        return [indices[j] for j in np.argsort(-h, kind="stable")]


# ---- bert_attack ------------------------------------------------------------------------------------


class MaskedLMCandidates:
    """Top-K single-token predictions of a masked LM at each word's first sub-word of the original text."""

    def __init__(self, mlm, original: Text, k: int):
        self.by_word = mlm.top_k(original, k)

    def candidates(self, text: Text, i: int, word: str) -> list[str]:
        return [c for c in self.by_word.get(i, []) if c.lower() != word.lower() and c.lower() not in STOPWORDS]


@dataclass
class BertAttack:
    config: Any
    unk: str
    mlm: Any
    max_words: int | None = None

    def transformation(self, original: Text, rng) -> MaskedLMCandidates:
        return MaskedLMCandidates(self.mlm, original, self.config.k)

    def order(self, goal: Goal, text: Text, indices: list[int], transformation) -> list[int]:
        imp = unk_importance(goal, text, indices, self.unk)
        return sorted(indices, key=lambda i: -imp[i])
