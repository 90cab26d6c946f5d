"""Attack a set of examples with one recipe over a sweep of temperatures, with an on-disk cache.

Temperature (the "illusion of robustness" of a miscalibrated model): with logits scaled up, softmax
saturates, every word looks unimportant and no swap raises the score, so a score-based attack fails
although the decision is as fragile as before. The goal therefore scores ``softmax(logits / T)`` for
each T of the sweep; the robust accuracy is the minimum over T, reported with the worst T.

Cache: one JSON file per (model hash, recipe, options, T) under ``cache_dir``, holding each
example's outcome by a hash of its text and label, rewritten atomically every 20 examples, so a rerun
(or a grid resumed after a crash) does not redo finished attacks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nluforge.attack.config import AttackConfig
from nluforge.attack.engine import Outcome, Victim, attack_one
from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_json

CACHE_VERSION = 1  # bump when an outcome's definition changes: old cache files stop matching


def model_hash(model) -> str:
    """A hash of every parameter and buffer (names, shapes, values), quantized models' state included
    (their packed parameters are tuples of quantized tensors: integer codes, scales and zero points)."""
    h = hashlib.blake2b(digest_size=16)
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        _hash_value(h, value)
    return h.hexdigest()


def _hash_value(h, value) -> None:
    import torch

    if isinstance(value, (tuple, list)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _hash_value(h, item)
    elif isinstance(value, torch.Tensor):
        h.update(f"{tuple(value.shape)}{value.dtype}".encode())
        if value.is_quantized:
            if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                _hash_value(h, (value.q_per_channel_scales(), value.q_per_channel_zero_points()))
            else:
                h.update(f"{value.q_scale()},{value.q_zero_point()}".encode())
            value = value.int_repr()
        if value.numel():
            h.update(value.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    else:  # e.g. a packed-params dtype or scheme
        h.update(repr(value).encode())


def example_key(fields: Sequence[str], label: int) -> str:
    return hashlib.sha1(json.dumps([list(fields), label]).encode()).hexdigest()[:20]


@dataclass
class Sweep:
    """Outcomes per temperature, and the summary the run records."""

    recipe: str
    outcomes: dict[float, list[Outcome]]
    cache_hits: int = 0
    notes: list[str] = field(default_factory=list)

    def metrics_at(self, t: float) -> dict[str, float]:
        return summarize(self.outcomes[t])

    def worst_temperature(self) -> float:
        return min(self.outcomes, key=lambda t: (self.metrics_at(t)["accuracy_under_attack"], t))

    def metrics(self) -> dict[str, Any]:
        """The worst T's metrics, plus per-T accuracy when there are several T."""
        worst = self.worst_temperature()
        out: dict[str, Any] = dict(self.metrics_at(worst))
        if len(self.outcomes) > 1:
            out["worst_temperature"] = worst
            out["accuracy_under_attack_t1"] = self.metrics_at(1.0)["accuracy_under_attack"] \
                if 1.0 in self.outcomes else None
            for t in self.outcomes:
                out[f"accuracy_under_attack@T={t:g}"] = self.metrics_at(t)["accuracy_under_attack"]
                out[f"attack_success_rate@T={t:g}"] = self.metrics_at(t)["attack_success_rate"]
        return out


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """TextAttack's summary: success rate over attacked (non-skipped) examples; perturbed-word fraction
    over successes; queries over attacked examples; time over all."""
    n = len(outcomes)
    won = [o for o in outcomes if o.status == "success"]
    lost = [o for o in outcomes if o.status == "failed"]
    attacked = won + lost
    return {
        "examples": n, "successes": len(won), "failures": len(lost), "skipped": n - len(attacked),
        "clean_accuracy": len(attacked) / n if n else math.nan,
        "accuracy_under_attack": len(lost) / n if n else math.nan,
        "attack_success_rate": len(won) / len(attacked) if attacked else math.nan,
        "mean_perturbed_fraction": sum(o.perturbed_fraction for o in won) / len(won) if won else math.nan,
        "mean_words": sum(o.words for o in outcomes) / n if n else math.nan,
        "mean_queries": sum(o.queries for o in attacked) / len(attacked) if attacked else math.nan,
        "time_s": round(sum(o.time_s for o in outcomes), 3),
        "s_per_example": sum(o.time_s for o in outcomes) / n if n else math.nan,
    }


def build_recipe(name: str, config: AttackConfig, tokenizer):
    """The recipe object for ``name`` (its transformation and word order); loads WordNet / the MLM."""
    from nluforge.attack import recipes

    unk = tokenizer.unk_token or "[UNK]"
    if name == "deepwordbug":
        return recipes.DeepWordBug(config, unk)
    if name == "pwws":
        from nluforge.attack.wordnet import load_wordnet

        return recipes.PWWS(config, unk, load_wordnet(config.wordnet_dir))
    if name == "bert_attack":
        from nluforge.attack.mlm import MaskedLM

        return recipes.BertAttack(config, unk, MaskedLM(config.mlm))
    raise UserError(f"unknown attack recipe '{name}'; known: deepwordbug, pwws, bert_attack")


class _Cache:
    def __init__(self, cache_dir: Path | None, key_parts: dict[str, Any]):
        self.path = None
        self.entries: dict[str, dict] = {}
        if cache_dir is None:
            return
        key = hashlib.sha1(json.dumps(key_parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.path = Path(cache_dir) / f"{key_parts['recipe']}-{key}.json"
        self.key_parts = key_parts
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("key") == key_parts:
                    self.entries = data["outcomes"]
            except (OSError, ValueError, KeyError):
                self.entries = {}  # an unreadable cache is recomputed, never trusted

    def get(self, k: str) -> Outcome | None:
        return Outcome.from_json(self.entries[k]) if k in self.entries else None

    def put(self, k: str, outcome: Outcome) -> None:
        self.entries[k] = outcome.to_json()

    def flush(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, {"key": self.key_parts, "outcomes": self.entries})


def attack(model, tokenizer, examples: Sequence[tuple[str, ...]], labels: Sequence[int], recipe: str,
           config: AttackConfig, *, cache_dir: Path | None = None, progress: bool = False) -> Sweep:
    """Attack every example at every temperature of ``config``; cached outcomes are reused."""
    from tqdm.auto import tqdm

    built = build_recipe(recipe, config, tokenizer)
    victim = Victim(model, tokenizer, batch_size=config.batch_size, max_length=config.max_length)
    mhash = model_hash(model) if (cache_dir is not None and config.cache) else None
    sweep = Sweep(recipe, {})
    if getattr(getattr(built, "mlm", None), "note", None):
        sweep.notes.append(built.mlm.note)
    total = len(examples) * len(config.temperatures)
    with tqdm(total=total, desc=f"attack:{recipe}", unit="ex", disable=None if progress else True,
              dynamic_ncols=True) as bar:
        for t in config.temperatures:
            key = {"version": CACHE_VERSION, "model": mhash, "recipe": recipe, "options": config.cache_options(),
                   "temperature": t}
            cache = _Cache(cache_dir if mhash else None, key)
            done: list[Outcome] = []
            for j, (fields, label) in enumerate(zip(examples, labels, strict=True)):
                k = example_key(fields, int(label))
                outcome = cache.get(k)
                if outcome is None:
                    outcome = attack_one(victim, built, tuple(fields), int(label), temperature=t,
                                         search_kind=config.search, beam_width=config.beam_width,
                                         max_perturbed=config.max_perturbed, seed=config.seed)
                    cache.put(k, outcome)
                    if (j + 1) % 20 == 0:
                        cache.flush()
                else:
                    sweep.cache_hits += 1
                done.append(outcome)
                bar.update(1)
            cache.flush()
            sweep.outcomes[t] = done
    return sweep


def result_table(metrics: dict[str, float], title: str = "Attack Results") -> str:
    """TextAttack's attack-summary table layout (``AttackSummary`` in its text logger)."""

    def pct(x):
        return "nan" if x != x else f"{100 * x:.2f}%"

    rows = [
        ("Number of successful attacks:", str(metrics["successes"])),
        ("Number of failed attacks:", str(metrics["failures"])),
        ("Number of skipped attacks:", str(metrics["skipped"])),
        ("Original accuracy:", pct(metrics["clean_accuracy"])),
        ("Accuracy under attack:", pct(metrics["accuracy_under_attack"])),
        ("Attack success rate:", pct(metrics["attack_success_rate"])),
        ("Average perturbed word %:", pct(metrics["mean_perturbed_fraction"])),
        ("Average num. words per input:", f"{metrics['mean_words']:.2f}"),
        ("Avg num queries:", f"{metrics['mean_queries']:.2f}"),
    ]
    if "worst_temperature" in metrics:
        rows.append(("Worst temperature:", f"{metrics['worst_temperature']:g}"))
    w1 = max(len(a) for a, _ in rows + [(title, "")])
    w2 = max(len(b) for _, b in rows)
    line = f"+-{'-' * w1}-+-{'-' * w2}-+"
    out = [line, f"| {title.ljust(w1)} | {''.ljust(w2)} |", line]
    out += [f"| {a.ljust(w1)} | {b.ljust(w2)} |" for a, b in rows]
    out.append(line)
    return "\n".join(out)
