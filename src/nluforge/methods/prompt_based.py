"""Prompt-based fine-tuning: a cloze pattern and a verbalizer scored by the masked-LM head (PET, LM-BFF).

Papers: Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL; PET); Gao, Fisch & Chen 2021, "Making Pre-trained Language Models Better
Few-shot Learners" (ACL; LM-BFF, whose manual templates and label words the task specs carry).

Each example is rewritten by a pattern such as ``"{sentence} It was {mask} ."`` and the class logits are
the MLM logits at the mask restricted to the verbalizer's words (one per label), shape (B, num_labels).
Patterns and label words are task data: the task spec's ``template``, ``extra_templates`` and
``verbalizer`` (``tasks/specs/*.yaml``); ``prompts`` picks them by index or gives strings.
All weights are trained (LM-BFF fine-tunes the whole MLM). Regression (STS-B) follows LM-BFF's two-pole
mapping: with words (low, high) and range [lo, hi], the score is ``lo + (hi - lo) · p(high)``; the
training loop's MSE on that score replaces LM-BFF's KL loss.

Where patterns are applied: inside ``forward``, on token ids. The pipeline tokenizes the raw text fields
as usual (``[CLS] a [SEP] b [SEP]``); the model splits them back into fields and assembles
``[CLS] pattern(a, b) [SEP]`` per pattern, with the pattern's own words tokenized once at ``adapt``. So
the text is never rewritten before tokenization, truncation never removes the mask (the data's ``max_length`` limits
the text fields; the pattern adds a few tokens), and several patterns can be scored in one forward.

Several patterns (``prompts: [0, 1]``): one model is trained on all of them at once (every step scores
each example under every pattern) and the logits are the patterns' mean, PET's ensemble with uniform
weights. PET instead trains one model per pattern (weighting each by its training-set accuracy
before training, or uniformly).

PET's distillation (``distill: true``, classification only): after the prompt model is trained, the
ensemble soft-labels unlabeled text, ``softmax(mean logits / T)`` with T = ``distill_temperature`` (2, as
PET; :func:`soft_labels`), and a fresh ``AutoModelForSequenceClassification`` of the same base model is
fully fine-tuned on those labels alone with :func:`soft_label_loss` (PET's: cross-entropy against
``softmax(student logits / T)``, times T²). That classifier is the run's model: saved as a plain
``save_pretrained`` folder (:func:`load` reads it back), evaluated into ``metrics["trained"]``; the
ensemble's own scores go to ``metrics["pet_ensemble"]``. The unlabeled text is ``unlabeled_file``
(CSV/TSV/JSONL with the task's text columns; labels ignored) or ``unlabeled_from_train`` = N seeded
training examples outside the labeled ``k_shot`` / ``max_train_samples`` subset. The pipeline does the
training (:mod:`nluforge.experiments.pet_distill`). Departures from PET: one model for all patterns (above);
no auxiliary MLM loss while training the patterns and no iPET rounds; the classifier's learning rate,
epochs and batch size are ours (``distill_lr`` defaults to the ``full`` method's); and, as in every nluforge
run, ``train.keep_best`` (on by default) picks the best checkpoint of each training on the dev set, which a
strict few-shot setting does not have: set ``train.keep_best: false`` for that.

A checkpoint without a trained MLM head (``default`` is a sentence-transformers MiniLM saved as a bare
``BertModel``; transformers then initialises ``cls.predictions.*`` at random, with the decoder tied to the
word embeddings) is detected (every LayerNorm weight 1, every bias 0): the head's square transforms are
set to the identity, biases stay 0 and the decoder is tied to the word embeddings, with a warning. The
head then starts as "hidden state · word embedding" instead of a random projection.

Departures: patterns are single-segment (token type 0 throughout, as LM-BFF's single-sentence
templates); a field's tokens come from the pair encoding, so with BPE tokenizers the first word of the
second field lacks its leading-space form; patterns other than the task's template come from the small
task spec's ``extra_templates`` (PET/LM-BFF-style variants, in ``tasks/specs/*.yaml``), or are given as
strings.
"""

from __future__ import annotations

import math
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from nluforge.core.errors import UserError
from nluforge.methods import base
from nluforge.methods.base import count_params, unfreeze
from nluforge.models.arch import arch_of

HEAD = "masked_lm"
MASK = "{mask}"

@dataclass
class Config:
    method: ClassVar[str] = "prompt_based"
    prompts: list[int | str] = field(default_factory=lambda: [0])  # pattern indices (0 = the task's) or strings
    verbalizer: list[str] | None = None  # one word per label (regression: low, high); None: the task's
    regression_range: list[float] = field(default_factory=lambda: [0.0, 5.0])  # [lo, hi] (STS-B: 0..5)
    # PET's distillation (classification only): soft-label unlabeled text with the pattern ensemble, then
    # train a plain sequence classifier on it; that classifier becomes the run's model.
    distill: bool = False
    unlabeled_file: str | None = None  # CSV/TSV/JSONL with the task's text columns (labels ignored)
    unlabeled_from_train: int | None = None  # N seeded train examples outside the labeled subset, labels dropped
    distill_temperature: float = 2.0  # T in softmax(logits / T) for targets and student (PET: 2)
    distill_epochs: float = 3.0  # epochs over the unlabeled set (PET: 3)
    distill_max_steps: int | None = None  # overrides distill_epochs when set
    distill_batch_size: int | None = None  # None: train.batch_size (small in k-shot runs; the unlabeled set is larger)
    distill_lr: float | None = None  # None: the `full` method's default (the student is fully fine-tuned)

    def __post_init__(self):
        if not self.prompts:
            raise UserError("prompt_based: prompts is empty; give pattern indices (e.g. [0]) or pattern strings")
        if len(self.regression_range) != 2 or self.regression_range[0] >= self.regression_range[1]:
            raise UserError(f"prompt_based: regression_range must be [low, high], got {self.regression_range}")
        self._check_distill()

    def _check_distill(self) -> None:
        sources = [n for n in ("unlabeled_file", "unlabeled_from_train") if getattr(self, n) is not None]
        if self.distill and not sources:
            raise UserError("prompt_based: distill=true needs unlabeled text; set unlabeled_from_train=N (train "
                            "examples outside the labeled subset) or unlabeled_file=PATH (CSV/TSV/JSONL)")
        if sources and not self.distill:
            raise UserError(f"prompt_based: {sources[0]} is set but distill is off; add distill=true or drop it")
        if len(sources) == 2:
            raise UserError("prompt_based: give unlabeled_file or unlabeled_from_train, not both")
        if self.unlabeled_file is not None and not self.unlabeled_file.strip():
            raise UserError("prompt_based: unlabeled_file is empty; give the path of a CSV/TSV/JSONL file")
        for name in ("unlabeled_from_train", "distill_max_steps", "distill_batch_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"prompt_based: {name} must be a positive integer, got {value}")
        for name in ("distill_temperature", "distill_epochs", "distill_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"prompt_based: {name} must be a positive number, got {value}")


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern: parts are token-id lists (pattern words), field indices, or the mask."""

    text: str
    parts: tuple[tuple[int, ...] | int | None, ...]  # ids | field index | None = mask


def _patterns_for(cfg: Config, task) -> list[str]:
    """The task spec's templates (index 0: ``template``, then ``extra_templates``) picked by ``prompts``."""
    table = ([task.template] if task is not None and task.template else []) + list(
        getattr(task, "extra_templates", ()))
    out = []
    for p in cfg.prompts:
        if isinstance(p, str):
            out.append(p)
        elif 0 <= p < len(table):
            out.append(table[p])
        else:
            raise UserError(f"prompt_based: prompt index {p} is out of range; this task has {len(table)} "
                            f"pattern(s) (0..{len(table) - 1}); or give a pattern string with {MASK}")
    return out


def parse_pattern(text: str, fields: tuple[str, ...], tokenizer) -> Pattern:
    """Split ``text`` into pattern words, ``{field}`` slots and the one ``{mask}`` (``[MASK]`` is accepted)."""
    text = text.replace("[MASK]", MASK)
    names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    if names.count("mask") != 1:
        raise UserError(f"prompt_based: pattern '{text}' needs exactly one mask slot {MASK} "
                        f"(e.g. '{{{fields[0]}}} It was {MASK} .')")
    unknown = [n for n in names if n != "mask" and n not in fields]
    missing = [f for f in fields if f not in names]
    if unknown or missing:
        raise UserError(f"prompt_based: pattern '{text}' must use each text field once: "
                        f"{', '.join('{' + f + '}' for f in fields)} (found {unknown or 'none of'} {missing or ''})")
    parts: list[tuple[int, ...] | int | None] = []
    for literal, name, _, _ in string.Formatter().parse(text):
        if literal.strip():
            parts.append(tuple(tokenizer(literal.rstrip(), add_special_tokens=False)["input_ids"]))
        if name is not None:
            parts.append(None if name == "mask" else fields.index(name))
    return Pattern(text, tuple(parts))


def verbalizer_ids(words: list[str], tokenizer) -> list[int]:
    """One token id per word (the word's in-sentence form, with a leading space); else a one-line error."""
    ids = []
    for word in words:
        pieces = tokenizer.tokenize(" " + word)
        if len(pieces) != 1:
            raise UserError(f"prompt_based: verbalizer word '{word}' is {len(pieces)} tokens {pieces} for this "
                            "tokenizer; choose a word that is a single token (check tokenizer.tokenize(' word'))")
        ids.append(tokenizer.convert_tokens_to_ids(pieces[0]))
    return ids


class PromptModel(nn.Module):
    """A masked LM scored at the mask of each pattern; logits (B, num_labels) or (B, 1) for regression."""

    def __init__(self, model: nn.Module, patterns: list[Pattern], word_ids: list[int], tokenizer,
                 regression_range: tuple[float, float] | None):
        super().__init__()
        self.model = model
        self.config = model.config
        self.patterns = patterns
        self.tokenizer = tokenizer  # the mask token id; not saved
        self.register_buffer("word_ids", torch.tensor(word_ids), persistent=False)
        self.regression_range = regression_range
        self.special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0)
        limit = getattr(model.config, "max_position_embeddings", 512) - 2
        self.max_len = min(limit, tokenizer.model_max_length or limit)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, inputs_embeds=None, **_kw):
        if inputs_embeds is not None:  # never drop it silently: the patterns are rebuilt from input_ids
            raise ValueError("PromptModel rebuilds each pattern's sequence from input_ids, so inputs_embeds "
                             "cannot be placed; perturb the embedding module's output instead "
                             "(nluforge.train.adversarial hooks it, once per pattern)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(1).tolist()
        rows = [ids[: int(n)] for ids, n in zip(input_ids.tolist(), lengths, strict=True)]
        fields = [self._fields(r) for r in rows]
        scores = torch.stack([self._score(fields, p, input_ids.device) for p in self.patterns])  # (P, B, L)
        logits = scores.mean(0)  # (B, L): PET's uniform ensemble
        if self.regression_range is not None:
            lo, hi = self.regression_range
            logits = lo + (hi - lo) * logits.softmax(-1)[:, 1:]  # (B, 1)
        return SequenceClassifierOutput(logits=logits)

    def _fields(self, ids: list[int]) -> list[list[int]]:
        """Token ids of each text field, from ``[CLS] a [SEP] (b [SEP])`` (RoBERTa: ``</s></s>``)."""
        cls, sep, _ = self.special
        ids = ids[1:] if ids and ids[0] == cls else ids
        segments, current = [], []
        for t in ids:
            if t == sep:
                segments.append(current)
                current = []
            else:
                current.append(t)
        return [s for s in segments + [current] if s]

    def assemble(self, fields: list[list[list[int]]], pattern: Pattern) -> tuple[list[list[int]], list[int]]:
        """Per example: ``[CLS] pattern [SEP]`` ids and the mask's position."""
        cls, sep, _ = self.special
        out, positions = [], []
        for f in fields:
            f = self._fit(f, pattern)
            ids = [cls]
            for part in pattern.parts:
                if part is None:
                    positions.append(len(ids))
                    ids.append(self.tokenizer.mask_token_id)
                else:
                    ids.extend(part if isinstance(part, tuple) else (f[part] if part < len(f) else []))
            out.append(ids + [sep])
        return out, positions

    def _fit(self, f: list[list[int]], pattern: Pattern) -> list[list[int]]:
        """Trim the longest field until the assembled sequence fits the model's positions."""
        fixed = 3 + sum(len(p) for p in pattern.parts if isinstance(p, tuple))
        f = [list(x) for x in f]
        while f and fixed + sum(map(len, f)) > self.max_len:
            max(f, key=len).pop()
        return f

    def _score(self, fields, pattern: Pattern, device) -> torch.Tensor:
        seqs, positions = self.assemble(fields, pattern)
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.special[2], dtype=torch.long)  # (B, T')
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return self.mask_logits(ids.to(device), mask.to(device), torch.tensor(positions, device=device))

    def mask_logits(self, ids, mask, positions) -> torch.Tensor:
        """MLM logits at ``positions`` restricted to the verbalizer ids: (B, L)."""
        arch = arch_of(self.model)
        hidden = getattr(self.model, arch.base)(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T', d)
        x = hidden[torch.arange(len(ids), device=ids.device), positions]  # (B, d)
        for name in arch.mlm_head:
            x = getattr(self.model, name)(x)  # ... -> (B, V)
        return x[:, self.word_ids]  # (B, L)


def _head_modules(model: nn.Module) -> list[nn.Module]:
    return [getattr(model, n) for n in arch_of(model).mlm_head if hasattr(model, n)]


def _fresh_head(model: nn.Module) -> bool:
    """True when the MLM head is transformers' fresh init: every LayerNorm weight 1, every bias 0."""
    params = [(n, p) for m in _head_modules(model) for n, p in m.named_parameters()]
    norms = [m.weight for h in _head_modules(model) for m in h.modules() if isinstance(m, nn.LayerNorm)]
    biases = [p for n, p in params if n.endswith("bias")]
    return bool(params) and all(bool((w == 1).all()) for w in norms) and all(bool((b == 0).all()) for b in biases)


@torch.no_grad()
def _init_untrained_head(model: nn.Module) -> None:
    decoder, words = model.get_output_embeddings(), model.get_input_embeddings()
    for m in _head_modules(model):
        for linear in m.modules():
            if isinstance(linear, nn.Linear) and linear is not decoder and linear.in_features == linear.out_features:
                linear.weight.copy_(torch.eye(linear.in_features))
                if linear.bias is not None:
                    linear.bias.zero_()
    if decoder.weight is not words.weight:
        decoder.weight = words.weight
    warnings.warn("prompt_based: the model's masked-LM head is untrained (newly initialised): tying its "
                  "decoder to the word embeddings and setting its transform to the identity", stacklevel=4)


def adapt(model: nn.Module, cfg: Config, *, tokenizer=None, task=None, **_context) -> nn.Module:
    if tokenizer is None or tokenizer.mask_token_id is None:
        raise UserError("prompt_based needs the model's tokenizer, with a mask token")
    if model.get_output_embeddings() is None:
        raise UserError("prompt_based needs a masked-LM model (HEAD = 'masked_lm'); got "
                        f"{type(model).__name__} without an LM head")
    fields = tuple(task.text_fields) if task is not None else ("sentence",)
    regression = task is not None and task.is_regression
    words = cfg.verbalizer or (list(task.verbalizer) if task is not None and task.verbalizer else None)
    n_words = 2 if regression else (task.num_labels if task is not None else len(words or ()))
    if not words or len(words) != n_words:
        raise UserError(f"prompt_based: the verbalizer needs {n_words} words (one per label"
                        f"{'; regression: low, high' if regression else ''}), got {words}")
    patterns = [parse_pattern(p, fields, tokenizer) for p in _patterns_for(cfg, task)]
    ids = verbalizer_ids(words, tokenizer)
    if _fresh_head(model):
        _init_untrained_head(model)
    unfreeze(model.parameters())
    span = tuple(cfg.regression_range) if regression else None
    return PromptModel(model, patterns, ids, tokenizer, span)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """Every weight of the masked LM (tied weights once); an untrained, untied decoder gets tied."""
    decoder, words = model.get_output_embeddings(), model.get_input_embeddings()
    untied = decoder is not None and decoder.weight is not words.weight and _fresh_head(model)
    return count_params(model) - (decoder.weight.numel() if untied else 0)


def load(path: str | Path, base_model: nn.Module, cfg: Config, *, tokenizer=None, task=None) -> nn.Module:
    """A distilled run saved a plain classifier (``save_pretrained``); any other run, the prompt model's state."""
    path = Path(path)
    if not cfg.distill:
        return base.load(path, base_model, cfg, adapt, tokenizer=tokenizer, task=task)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} holds no distilled classifier (no config.json); retrain the run")
    from transformers import AutoModelForSequenceClassification

    from nluforge.models.loading import quiet_transformers

    with quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(path)


def soft_labels(logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """PET's soft labels: ``softmax(logits / T)`` per row; T > 1 flattens, T < 1 sharpens. (N, L) -> (N, L)."""
    return (logits.float() / temperature).softmax(-1)


def soft_label_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """PET's distillation loss: cross-entropy of ``softmax(logits / T)`` against ``targets``, times T², mean.

    Equals T² · KL(targets ‖ softmax(logits / T)) plus T² · H(targets), which does not depend on the
    logits: the gradient, T · (softmax(logits / T) − targets) / B, is zero exactly at the targets. The T²
    factor (Hinton et al. 2015, as PET's code) keeps gradient sizes comparable across temperatures.
    logits (B, L), targets (B, L) rows summing to 1 -> () scalar.
    """
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, L)
    return -(targets * log_p).sum(-1).mean() * temperature**2
