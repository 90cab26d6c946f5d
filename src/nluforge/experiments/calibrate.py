"""Measured throughput for the bench's time estimate: a few real optimizer steps per (task, method).

``nluforge bench`` estimates a grid (``--dry-run``) and sizes it to a time budget (``--time-budget``)
from figures measured on this machine, not from constants kept in the code. For each trained cell of a
grid (task, model, method, its options, max length, batch sizes) :func:`calibrate_cell`:

1. prepares the cell as the pipeline does (load data, tokenizer, model; adapt) and times it: ``setup_s``;
2. takes one warm-up and ``STEPS`` timed optimizer steps on real batches of the task's training data
   (a seeded subset, length-grouped as training groups it, at the cell's ``max_length`` and
   ``batch_size``): ``train_eps``, training examples per second;
3. times one pass over ``EVAL_EXAMPLES`` dev examples (a seeded sample) at ``eval_batch_size``, and
   converts it to ``eval_eps`` for the cell's whole evaluation splits by their padded tokens per
   example (their length-sorted batches pad far less than one batch of random lengths);
4. times the cell's own latency measurement (``stages.latency_ms``) and model save: ``latency_s``, ``save_s``;
5. for each compress step of the grid, compresses that model and times the compressor, the same eval
   pass, the latency measurement and the save of the compressed model (``children``);
6. for each attack step of a classification cell, attacks ``ATTACK_EXAMPLES`` dev examples (a seeded
   sample of the attacked split) with that model and times its queries: ``attacks`` (see :class:`AttackCal`).

with torch's thread count set to the one each grid cell will use. It records the sizes of the task's
splits as the cell loads them (the full training set: the ceiling for ``--time-budget``; each
evaluation split after ``max_eval_samples``). Written for nluforge (no library estimates a training
run's time from a calibration): the figures are a few seconds' sample, and the estimate assumes
throughput stays what those steps showed (no per-step hooks, e.g. AdaLoRA's budget, are timed; methods
that train themselves, e.g. ``linear_probe``, are timed through their own ``prefit``).

Entries are cached in ``<results dir>/.calibration/<key>.json`` (atomic writes), keyed by the machine
(host name, CPU model, core count), the model, task, method and its options, max length, batch sizes,
thread count, precision and the nluforge version; a second bench reuses them, ``--recalibrate`` (or a
change to any of those) measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nluforge.core.io import atomic_write_json
from nluforge.experiments.config import RunConfig, resolve

CALIBRATION_DIR = ".calibration"
CALIBRATION_VERSION = 2  # 2: attack steps
STEPS = 3  # timed optimizer steps, after one warm-up step
EVAL_EXAMPLES = 64  # timed dev examples (a seeded sample), after a warm-up batch
ATTACK_EXAMPLES = 8  # attacked dev examples per attack step (a seeded sample)
WORD_EXAMPLES = 256  # dev examples whose attacked field's words are counted (a seeded sample)


@dataclass
class Child:
    """A compress step applied to the calibrated model: its own timings."""

    compress_s: float
    eval_eps: float
    latency_s: float
    save_s: float


@dataclass
class AttackCal:
    """An attack step on this cell's model: what one attacked example costs.

    An attack's cost is its model queries. The calibration model has taken four optimizer steps, so it
    sits near its decision boundary and is flipped in far fewer queries than the trained model will be:
    the queries per example are therefore the recipe's registry figure (``queries_per_word``, queries
    per word of the attacked field over attacked examples, measured by ``benchmarks/robustness.py`` on
    a fully trained SST-2 model) times this task's mean words, when the recipe has that figure; else
    the queries measured here. The seconds per query are measured here, on this task's texts.
    """

    s_per_query: float  # measured: seconds per model query (batched, this task's perturbed texts)
    words: float  # mean words of the attacked field (the last one) in the attacked split
    queries_per_example: float  # 1 clean query + queries_per_word x words (or as measured; see above)
    examples: int  # examples one run attacks (the step's max_examples, capped by the split)
    temperatures: int  # each temperature is a separate attack of every example
    source: str = "registry"  # "registry": the recipe's queries_per_word; "measured": this calibration's

    @property
    def seconds(self) -> float:
        return self.examples * self.temperatures * self.queries_per_example * self.s_per_query


@dataclass
class Calibration:
    """One trained cell's measured figures on this machine (see the module docstring)."""

    train_eps: float  # training examples per second
    eval_eps: float  # evaluation examples per second
    setup_s: float  # prepare: data, tokenizer, model load and adapt
    latency_s: float  # the latency measurement (batch 1 and 32)
    save_s: float  # saving the trained model
    train_size: int  # the full training split
    eval_sizes: dict[str, int]  # each evaluation split, as the cell loads it (AdvGLUE included)
    children: dict[str, Child] = field(default_factory=dict)  # step label -> its timings
    num_labels: int = 2  # k-shot cells train on k x this many examples
    threads: int = 1
    seconds: float = 0.0  # how long this calibration took
    cached: bool = False  # read from the cache, not measured now
    error: str | None = None  # the cell could not be calibrated (it will likely fail): figures borrowed
    attacks: dict[str, AttackCal] = field(default_factory=dict)  # "attack:<recipe>" -> its cost (none: regression)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        data = dict(data)
        data["children"] = {k: Child(**v) for k, v in data.get("children", {}).items()}
        data["attacks"] = {k: AttackCal(**v) for k, v in data.get("attacks", {}).items()}
        return cls(**data)


def machine() -> dict[str, Any]:
    """What identifies this machine for the cache."""
    from nluforge.experiments.meta import cpu_name

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"host": platform.node(), "cpu": cpu_name(), "cores": cores}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("nluforge")
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_key(cfg: RunConfig, threads: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything a calibration's figures depend on."""
    d, t = cfg.data, cfg.train
    return {"calibration": CALIBRATION_VERSION, "machine": machine(), "nluforge": _version(),
            "model": cfg.model, "pooling": cfg.pooling, "task": cfg.task, "method": cfg.method,
            "method_params": cfg.method_params, "optimizer": cfg.optimizer, "max_length": d.max_length,
            "batch_size": t.batch_size, "eval_batch_size": t.eval_batch_size, "precision": t.precision,
            "threads": threads, "data": [d.data_dir, d.train_file, d.validation_file, d.max_eval_samples],
            "advglue": cfg.eval.advglue, "latency": [cfg.eval.latency, cfg.eval.latency_examples],
            "steps": steps, "attack": cfg.attack}


def cache_path(results_dir: str | Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(results_dir) / CALIBRATION_DIR / f"{key['task']}-{key['method']}-{digest}.json"


Measure = Callable[[RunConfig, int, list[dict[str, Any]]], Calibration]


def calibrate(cells: list[RunConfig], results_dir: str | Path, *, threads: int, recalibrate: bool = False,
              measure: Measure | None = None, on_cell: Callable[[RunConfig, Calibration], None] | None = None,
              ) -> dict[str, Calibration]:
    """A calibration for each trained config among ``cells`` (derived ones add their steps to their parent's).

    Returns ``{parent run id: Calibration}``. Cached entries are reused unless ``recalibrate``;
    ``measure`` (default :func:`calibrate_cell`) is the seam tests use to inject figures.
    """
    measure = measure or calibrate_cell
    parents: dict[str, tuple[RunConfig, list[dict[str, Any]]]] = {}
    for cfg in cells:
        parent = cfg.parent()
        entry = parents.setdefault(parent.run_id(), (parent, []))
        if cfg.step() is not None and cfg.step() not in entry[1]:
            entry[1].append(cfg.step())
    out: dict[str, Calibration] = {}
    failed: dict[str, tuple[RunConfig, str]] = {}
    for run_id, (cfg, steps) in parents.items():
        key = cache_key(cfg, threads, steps)
        path = cache_path(results_dir, key)
        if path.is_file() and not recalibrate:
            data = json.loads(path.read_text())
            if data.get("key") == json.loads(json.dumps(key, default=str)):
                cal = Calibration.from_dict(data["calibration"])
                cal.cached = True
                out[run_id] = cal
                if on_cell:
                    on_cell(cfg, cal)
                continue
        try:
            cal = measure(cfg, threads, steps)
        except Exception as err:  # noqa: BLE001  the cell fails the same way when it runs: it is recorded then
            failed[run_id] = (cfg, f"{type(err).__name__}: {err}".splitlines()[0])
            continue
        cal.cached = False
        atomic_write_json(path, {"key": key, "calibration": {k: v for k, v in asdict(cal).items()
                                                             if k != "cached"}})
        out[run_id] = cal
        if on_cell:
            on_cell(cfg, cal)
    for run_id, (cfg, error) in failed.items():  # not cached: the next bench tries again
        out[run_id] = _borrowed(cfg, error, parents[run_id][1], out, parents)
        if on_cell:
            on_cell(cfg, out[run_id])
    return out


def _borrowed(cfg: RunConfig, error: str, steps: list[dict[str, Any]], done: dict[str, Calibration],
              parents: dict[str, tuple[RunConfig, list]]) -> Calibration:
    """A cell that could not be calibrated: another calibrated cell's figures on the same task (else zeros)."""
    same = [c for rid, c in done.items() if c.error is None and parents[rid][0].task == cfg.task]
    if same:
        cal = Calibration.from_dict({k: v for k, v in asdict(same[0]).items() if k not in ("cached", "error")})
    else:
        cal = Calibration(1e9, 1e9, 0.0, 0.0, 0.0, 0, {})
    zero = Child(0.0, 1e9, 0.0, 0.0)
    cal.children = {f"compress:{s.get('method')}": cal.children.get(f"compress:{s.get('method')}", zero)
                    for s in steps}
    cal.seconds, cal.cached, cal.error = 0.0, False, error
    return cal


# ---- one measurement ----------------------------------------------------------------------------


def calibrate_cell(cfg: RunConfig, threads: int, steps: list[dict[str, Any]]) -> Calibration:
    """Measure one trained cell (and its compress steps) for a few seconds; see the module docstring."""
    import torch

    from nluforge.core.runtime import set_threads
    from nluforge.experiments.pipeline import prepare

    start = time.perf_counter()
    previous = torch.get_num_threads()
    set_threads(cfg.train.num_threads or threads)
    try:
        need = (STEPS + 1) * cfg.train.batch_size * cfg.train.grad_accum
        # a k-shot cell is timed on the same number of steps over a plain seeded subset (k_shot and
        # max_train_samples exclude each other)
        small = resolve(cfg.to_dict(), {"data": {"max_train_samples": need, "k_shot": None}, "compress": []})
        t0 = time.perf_counter()
        prep = prepare(small)
        setup_s = time.perf_counter() - t0
        from nluforge.experiments.data import encode_splits, eval_split_names

        names = eval_split_names(small, prep.spec, prep.splits)
        encoded = encode_splits(prep, ["train", *names])
        eval_sizes = {n: len(encoded[n]) for n in names}
        padding = _padding(cfg, [encoded[n] for n in names])
        train_eps = _train_speed(prep, encoded["train"])
        dev = _sample(encoded[names[0]], EVAL_EXAMPLES, cfg.seed)
        model = prep.model
        eval_eps = _eval_speed(prep, model, dev) * padding
        latency_s = _timed(lambda: _latency(prep, model, dev))
        with tempfile.TemporaryDirectory(prefix="nluforge-calibrate-") as tmp:
            save_s = _timed(lambda: _save(prep, model, Path(tmp)))
        children = {f"compress:{step.get('method')}": _child(prep, model, step, dev, padding) for step in steps}
        attacks = {} if prep.spec.is_regression else {  # the grid skips attacks on a regression task
            f"attack:{step.get('method')}": _attack(prep, model, step) for step in cfg.attack}
        train_size = _train_size(cfg)
    finally:
        torch.set_num_threads(previous)
    return Calibration(train_eps, eval_eps, setup_s, latency_s, save_s, train_size, eval_sizes, children,
                       num_labels=prep.spec.num_labels or 1, threads=cfg.train.num_threads or threads,
                       seconds=time.perf_counter() - start, attacks=attacks)


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _train_size(cfg: RunConfig) -> int:
    """The task's whole training split, as the cell would load it before its cap."""
    from nluforge.experiments.data import task_kwargs
    from nluforge.tasks import load_task

    kwargs = task_kwargs(cfg) | {"max_train_samples": None, "max_eval_samples": 1, "k_shot": None}
    key = json.dumps([cfg.task, kwargs], sort_keys=True, default=str)
    if key not in _TRAIN_SIZES:  # once per task in this process, not once per method
        _TRAIN_SIZES[key] = len(load_task(cfg.task, **kwargs).splits["train"].texts)
    return _TRAIN_SIZES[key]


_TRAIN_SIZES: dict[str, int] = {}


def _subset(enc, idx: list[int]):
    from nluforge.models.inputs import Encoded

    types = [enc.token_type_ids[i] for i in idx] if enc.token_type_ids is not None else None
    return Encoded([enc.input_ids[i] for i in idx], types, [enc.labels[i] for i in idx])


def _sample(enc, n: int, seed: int):
    """A seeded random sample of ``n`` examples (the split's lengths, not its first rows)."""
    import random

    return _subset(enc, sorted(random.Random(seed).sample(range(len(enc)), min(n, len(enc)))))


def _padded_tokens(enc, batch_size: int) -> int:
    from nluforge.models.inputs import eval_batches

    lengths = enc.lengths()
    return sum(len(b) * max(lengths[i] for i in b) for b in eval_batches(lengths, batch_size))


def _padding(cfg: RunConfig, splits: list) -> float:
    """How much cheaper per example the whole evaluation splits are than the timed sample, in padded
    tokens per example: the sample is one or two batches, the splits are many length-sorted batches.
    Measured speed x this = the splits' examples/s (cost taken as proportional to padded tokens)."""
    bs = cfg.train.eval_batch_size
    sample = _sample(splits[0], EVAL_EXAMPLES, cfg.seed)
    per_sample = _padded_tokens(sample, bs) / max(1, len(sample))
    per_split = sum(_padded_tokens(s, bs) for s in splits) / max(1, sum(len(s) for s in splits))
    return per_sample / max(per_split, 1e-9)


def _train_speed(prep, train) -> float:
    """Examples/s over ``STEPS`` optimizer steps after a warm-up one, as :func:`nluforge.train.fit` takes them."""
    import torch

    from nluforge.experiments.stages import learning_rate, pad_id
    from nluforge.models.inputs import collate, length_grouped_batches
    from nluforge.optim import build_optimizer
    from nluforge.train.loop import default_loss

    cfg, model = prep.cfg, prep.model
    regression = prep.spec.is_regression
    if getattr(prep.method, "prefit", None) is not None:  # the method trains itself: time its own fit
        t0 = time.perf_counter()
        prep.method.prefit(model, prep.method_cfg, train, tokenizer=prep.tokenizer, task=prep.spec,
                           pad_id=pad_id(prep.tokenizer), batch_size=cfg.train.batch_size, seed=cfg.seed)
        return len(train) / max(time.perf_counter() - t0, 1e-6)
    optimizer = build_optimizer(cfg.optimizer, model, lr=learning_rate(prep), weight_decay=cfg.train.weight_decay,
                                **cfg.optimizer_params)
    model.train()
    batches = length_grouped_batches(train.lengths(), cfg.train.batch_size, seed=cfg.seed, epoch=0)
    accum = cfg.train.grad_accum
    trainable = [p for p in model.parameters() if p.requires_grad]
    seen, t0 = 0, 0.0
    for i, idx in enumerate(batches[:(STEPS + 1) * accum]):
        if i == accum:  # the warm-up step is done: time from here
            t0, seen = time.perf_counter(), 0
        loss, _ = default_loss(model, collate(train, idx, pad_id(prep.tokenizer), regression=regression))
        (loss / accum).backward()
        seen += len(idx)
        if (i + 1) % accum == 0:
            if cfg.train.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return seen / max(time.perf_counter() - t0, 1e-6)


def _eval_speed(prep, model, dev) -> float:
    from nluforge.eval.predict import predict
    from nluforge.experiments.stages import pad_id

    kwargs = dict(batch_size=prep.cfg.train.eval_batch_size, pad_id=pad_id(prep.tokenizer),
                  regression=prep.spec.is_regression, device=next(model.parameters()).device)
    predict(model, _subset(dev, list(range(min(8, len(dev))))), **kwargs)  # warm-up
    return len(dev) / max(_timed(lambda: predict(model, dev, **kwargs)), 1e-6)


def _latency(prep, model, dev) -> None:
    from nluforge.experiments.stages import latency_ms

    latency_ms(prep, model, dev)


def _save(prep, model, where: Path) -> None:
    from nluforge.experiments.stages import save_model

    save_model(prep, model, where)


def _child(prep, model, step: dict[str, Any], dev, padding: float) -> Child:
    """Compress a copy of the model with ``step`` and time the compressor, evaluation, latency and save."""
    import copy

    from nluforge.compress import compress, needs_calibration, save_compressed
    from nluforge.experiments.sections import resolve_sections

    cfg = resolve(prep.cfg.to_dict(), {"compress": [step]})
    config = resolve_sections(cfg).compress[0].config
    batches = None
    if needs_calibration(config):
        from nluforge.experiments.derived import calibration_batches
        from nluforge.experiments.state import RunState

        batches = calibration_batches(RunState(prep, Path(tempfile.gettempdir())), config)
    t0 = time.perf_counter()
    small = compress(copy.deepcopy(model), config, calibration=batches)
    compress_s = time.perf_counter() - t0
    eval_eps = _eval_speed(prep, small, dev) * padding
    latency_s = _timed(lambda: _latency(prep, small, dev))
    with tempfile.TemporaryDirectory(prefix="nluforge-calibrate-") as tmp:
        save_s = _timed(lambda: save_compressed(small, config, Path(tmp)))
    return Child(compress_s, eval_eps, latency_s, save_s)


def _attack(prep, model, step: dict[str, Any]) -> AttackCal:
    """Attack a seeded sample of ``ATTACK_EXAMPLES`` dev examples with ``step`` (uncached) and time it.

    Each example's label is the model's own prediction, so none is skipped: every timed example runs the
    search. The queries per example come from the recipe's registry figure when it has one (see
    :class:`AttackCal`)."""
    import dataclasses

    from nluforge.attack.engine import Victim
    from nluforge.attack.sweep import attack
    from nluforge.attack.words import Text
    from nluforge.core.steps import ATTACKS
    from nluforge.experiments.attacks import check_attackable, recipe_step, sample

    resolved = recipe_step(step["method"], {k: v for k, v in step.items() if k != "method"})
    cfg = resolved.config
    split = check_attackable(prep.spec, cfg.split, prep.splits)
    data = prep.splits[split]
    examples = len(sample(len(data.texts), cfg.max_examples, cfg.seed))
    counted = sample(len(data.texts), WORD_EXAMPLES, prep.cfg.seed)
    words = sum(len(Text(tuple(data.texts[i])).words()) for i in counted) / max(1, len(counted))
    picked = [tuple(data.texts[i]) for i in sample(len(data.texts), ATTACK_EXAMPLES, prep.cfg.seed)]
    timed = dataclasses.replace(cfg, temperatures=[1.0], cache=False)
    own = Victim(model, prep.tokenizer, batch_size=cfg.batch_size, max_length=cfg.max_length).logits(picked)
    t0 = time.perf_counter()
    sweep = attack(model, prep.tokenizer, picked, [int(i) for i in own.argmax(axis=1)], resolved.method, timed)
    seconds = time.perf_counter() - t0
    outcomes = sweep.outcomes[1.0]
    queries = sum(o.queries for o in outcomes)
    per_word = ATTACKS.entry(resolved.method).meta.get("queries_per_word")
    per_example = 1 + per_word * words if per_word else queries / max(1, len(outcomes))
    return AttackCal(seconds / max(1, queries), words, per_example, examples, len(cfg.temperatures),
                     "registry" if per_word else "measured")
