"""The attack engine, in TextAttack's four parts (Morris et al. 2020, "TextAttack: A Framework for
Adversarial Attacks, Data Augmentation, and Adversarial Training in NLP").

- **goal** (:class:`Goal`): untargeted misclassification. An example's score is ``1 - p(label)``
  with ``p = softmax(logits / T)``; the attack succeeds when the prediction (argmax, independent of
  T) differs from the label. Examples the model already gets wrong are *skipped*, not successes.
- **transformation**: a recipe's source of replacement words (:mod:`nluforge.attack.transformations`).
- **constraints** (:func:`modifiable`): no stopword, no word modified twice, only the last field
  (a pair's premise is left alone), at most ``max_perturbed`` of the field's words
  (``floor(max_perturbed * words)``: strict, so a short text may allow none).
- **search**: greedy by word importance (TextAttack's ``GreedyWordSwapWIR``: visit words from most
  to least important, keep a word's best swap only when it raises the score, stop at success), or a
  beam over the same order (departs from TextAttack's ``BeamSearch``, which expands every position
  at every step: here each step expands one word, in importance order, so the cost stays linear).

Model queries are batched (length-sorted, one forward per batch) and counted per example as
TextAttack counts them: a text already scored for this example is not queried (nor counted) again.
Hand-written rather than TextAttack itself, which cannot share an environment with transformers 5
and pulls in flair (../shared/DEPENDENCIES.md); the benchmark compares the two on the same examples.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.special import softmax

from nluforge.attack.words import STOPWORDS, Text
from nluforge.models.inputs import collate, encode, eval_batches


class Victim:
    """The attacked classifier: texts in, logits out, in length-sorted batches; counts its queries."""

    def __init__(self, model, tokenizer, *, batch_size: int = 64, max_length: int = 128):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.queries = 0

    @torch.inference_mode()
    def logits(self, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        """(N, C) logits for ``texts`` in their order."""
        self.queries += len(texts)
        enc = encode(list(texts), [0] * len(texts), self.tokenizer, self.max_length)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = None
        for idx in eval_batches(enc.lengths(), self.batch_size):
            batch = collate(enc, idx, self.pad_id, regression=False)
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            rows = self.model(**inputs).logits.float().cpu().numpy()  # (B, C)
            if out is None:
                out = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)  # (N, C)
            out[idx] = rows
        self.model.train(was_training)
        return out


class Goal:
    """Untargeted misclassification of one example at temperature T; memoises its queries."""

    def __init__(self, victim: Victim, label: int, temperature: float = 1.0):
        self.victim, self.label, self.temperature = victim, label, temperature
        self.memo: dict[tuple[str, ...], np.ndarray] = {}
        self.queries = 0

    def _ensure(self, texts: Sequence[Text]) -> None:
        missing = list(dict.fromkeys(t.fields for t in texts if t.fields not in self.memo))
        if missing:
            for fields, row in zip(missing, self.victim.logits(missing), strict=True):
                self.memo[fields] = row
            self.queries += len(missing)

    def scores(self, texts: Sequence[Text]) -> np.ndarray:
        """``1 - p(label)`` under ``softmax(logits / T)``, one per text."""
        self._ensure(texts)
        logits = np.stack([self.memo[t.fields] for t in texts]).astype(np.float64) / self.temperature  # (N, C)
        return 1.0 - softmax(logits, axis=1)[:, self.label]

    def prediction(self, text: Text) -> int:
        self._ensure([text])
        return int(np.argmax(self.memo[text.fields]))

    def succeeded(self, text: Text) -> bool:
        return self.prediction(text) != self.label


@dataclass
class Outcome:
    """One example's attack: its status and what it cost. Written as a line of ``attack.jsonl``."""

    status: str  # "success" | "failed" | "skipped" (already misclassified)
    label: int
    original: tuple[str, ...]
    perturbed: tuple[str, ...]
    original_prediction: int
    perturbed_prediction: int
    words: int  # words in the attacked field
    perturbed_words: int
    queries: int
    time_s: float

    @property
    def perturbed_fraction(self) -> float:
        return self.perturbed_words / self.words if self.words else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "original": list(self.original), "perturbed": list(self.perturbed)}

    @classmethod
    def from_json(cls, d: dict) -> Outcome:
        return cls(**{**d, "original": tuple(d["original"]), "perturbed": tuple(d["perturbed"])})


def modifiable(text: Text, modified: set[int], n_words: int, max_perturbed: float) -> list[int]:
    """Indices the constraints allow: not a stopword, not modified before, within the budget."""
    if len(modified) >= math.floor(max_perturbed * n_words):
        return []
    return [i for i, w in enumerate(text.words()) if i not in modified and w.lower() not in STOPWORDS]


def unk_importance(goal: Goal, text: Text, indices: list[int], unk: str) -> dict[int, float]:
    """Replace-1 / leave-one-out importance: the score after word i becomes ``unk`` minus the score."""
    base = goal.scores([text])[0]
    scores = goal.scores([text.replace({i: unk}) for i in indices]) if indices else []
    return {i: float(s - base) for i, s in zip(indices, scores, strict=True)}


@dataclass
class State:
    text: Text
    modified: frozenset[int]
    score: float


def search(goal: Goal, transformation, original: Text, order: list[int], *, beam_width: int, greedy: bool,
           max_perturbed: float, max_words: int | None = None) -> State:
    """Greedy (beam width 1, TextAttack's rule) or beam search over words in ``order``."""
    n_words = len(original.words())
    beams = [State(original, frozenset(), float(goal.scores([original])[0]))]
    width = 1 if greedy else beam_width
    for i in order:
        expanded: list[tuple[Text, frozenset[int]]] = []
        for b in beams:
            if i in b.modified or i not in modifiable(b.text, set(b.modified), n_words, max_perturbed):
                continue
            if max_words is not None and len(b.modified) >= max_words:
                continue
            word = b.text.words()[i]
            for cand in transformation.candidates(b.text, i, word):
                expanded.append((b.text.replace({i: cand}), b.modified | {i}))
        if not expanded:
            continue
        scores = goal.scores([t for t, _ in expanded])
        ranked = sorted(range(len(expanded)), key=lambda j: -scores[j])
        if greedy:
            best = ranked[0]
            if scores[best] <= beams[0].score:
                continue  # TextAttack keeps a swap only when it raises the score
            beams = [State(expanded[best][0], expanded[best][1], float(scores[best]))]
        else:
            pool = beams + [State(expanded[j][0], expanded[j][1], float(scores[j])) for j in ranked]
            beams = sorted(pool, key=lambda s: -s.score)[:width]
        won = [b for b in beams if goal.succeeded(b.text)]
        if won:
            return min(won, key=lambda s: len(s.modified))
    return beams[0]


def attack_one(victim: Victim, recipe, fields: tuple[str, ...], label: int, *, temperature: float,
               search_kind: str, beam_width: int, max_perturbed: float, seed: int) -> Outcome:
    """Attack one example with ``recipe`` (its transformation and its word order)."""
    t0 = time.perf_counter()
    goal = Goal(victim, label, temperature)
    original = Text(tuple(fields))
    n_words = len(original.words())
    first = goal.prediction(original)
    if first != label:
        return Outcome("skipped", label, original.fields, original.fields, first, first, n_words, 0,
                       goal.queries, round(time.perf_counter() - t0, 4))
    rng = random.Random(f"{seed}:{fields}")
    transformation = recipe.transformation(original, rng)
    indices = modifiable(original, set(), n_words, max_perturbed)
    order = recipe.order(goal, original, indices, transformation)
    best = search(goal, transformation, original, order, beam_width=beam_width, greedy=search_kind == "greedy",
                  max_perturbed=max_perturbed, max_words=recipe.max_words)
    pred = goal.prediction(best.text)
    status = "success" if pred != label else "failed"
    return Outcome(status, label, original.fields, best.text.fields, first, pred, n_words,
                   len(best.modified), goal.queries,
                   round(time.perf_counter() - t0, 4))
