"""The ``baselines`` stage: what the run's pretrained encoder gives frozen, on the run's own training data.

Every trained run records ``metrics["baselines"][split] = {"logreg": {...}, "knn": {...}[, "cosine": {...}]}``
for its evaluation splits (:mod:`nluforge.eval.embed_baselines`): a logistic regression (ridge for
regression) on the BASE model's pooled, frozen embeddings — MTEB's classification protocol (Muennighoff
et al. 2023, "MTEB: Massive Text Embedding Benchmark") —, cosine k-nearest neighbours, and for
sentence-pair regression the zero-shot cosine similarity (Reimers & Gurevych 2019, "Sentence-BERT").
They are fitted on the training subset the run itself trained on (a k-shot run's K examples), so the
report can say whether adapting the encoder beat simply reading its embeddings.

Departures from MTEB, and why:
- MTEB subsamples n examples per label from the training set and averages 10 such draws; we fit once
  on the run's own training subset (the comparison is with this run), capped at :data:`MAX_TRAIN`
  examples by a seeded random subset (:data:`CAP_SEED`) so a full-size GLUE training set stays cheap.
- MTEB's logistic regression runs 100 iterations; ``fit_linear`` runs to convergence (up to 2,000).

The numbers depend only on (task data, model, pooling, max length, training subset, evaluation splits),
not on the method, so a grid of M methods computes them once per task: they are cached as
``<results dir>/.baselines/<key>.json`` (written atomically; a file lock makes concurrent cells of the
process backend wait for the first one instead of computing again). The key hashes the examples
themselves, so cells whose k-shot samples differ by seed get their own entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nluforge.core.io import atomic_write_json
from nluforge.experiments.rundir import now
from nluforge.experiments.state import Prepared, RunState

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1  # bump when the baselines' definition changes: old cache entries stop matching
MAX_TRAIN = 5000  # training examples the baselines fit on at most
CAP_SEED = 0  # the capped subset's seed: fixed, so cells that differ only in seed share the cache
KNN_K = 10
LOGREG_C = 1.0  # scikit-learn's default, as MTEB
CACHE_DIR = ".baselines"

Baselines = dict[str, dict[str, dict[str, float]]]  # split → baseline name → metric → value


@dataclass(frozen=True)
class BaselineData:
    """What the baselines are computed from: the (capped) training subset and the evaluation splits."""

    train: Any  # nluforge.tasks.Split
    train_total: int  # the run's training examples before the cap
    evals: dict[str, Any]  # split name → nluforge.tasks.Split


def baseline_data(prep: Prepared, names: list[str]) -> BaselineData:
    """The run's training subset (capped at :data:`MAX_TRAIN`, seeded) and its evaluation splits."""
    from nluforge.tasks.sampling import subsample

    train = prep.splits["train"]
    return BaselineData(subsample(train, MAX_TRAIN, CAP_SEED), len(train), {n: prep.splits[n] for n in names})


def _model_fingerprint(name: str) -> list:
    """The model's name, and for a local folder its files' names, sizes and modification times (so
    an overwritten checkpoint does not hit a stale cache entry)."""
    from nluforge.models.loading import resolve_model

    source = Path(resolve_model(name))
    if not source.is_dir():
        return [name]
    files = sorted(p for p in source.iterdir() if p.is_file())
    return [name, [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]


def cache_key(prep: Prepared, data: BaselineData) -> str:
    """Hash of everything the baselines depend on: protocol, task, model, pooling, max length, examples."""
    digest = hashlib.sha256()
    cfg = prep.cfg
    head = [PROTOCOL_VERSION, MAX_TRAIN, CAP_SEED, KNN_K, LOGREG_C, prep.spec.name, prep.spec.version,
            _model_fingerprint(cfg.model), cfg.pooling, cfg.data.max_length]
    digest.update(json.dumps(head, default=str).encode())
    for name, split in [("train", data.train), *sorted(data.evals.items())]:
        digest.update(json.dumps([name, split.texts, split.labels], default=str).encode())
    return digest.hexdigest()[:16]


def compute_baselines(prep: Prepared, data: BaselineData, device=None) -> tuple[Baselines, str]:
    """Load the base encoder (``cfg.model`` with ``cfg.pooling``, a fresh head that is never read) and
    compute the baselines; returns them and the pooling the features were read with."""
    from nluforge.eval.embed_baselines import embedding_baselines
    from nluforge.models.loading import load_model
    from nluforge.models.pooling import pooling_of

    cfg, spec = prep.cfg, prep.spec
    model = load_model(cfg.model, num_labels=spec.num_labels, label_names=spec.label_names, pooling=cfg.pooling)
    if device is not None:
        model.to(device)
    evals = {n: (s.texts, s.labels) for n, s in data.evals.items()}
    out = embedding_baselines(model, prep.tokenizer, (data.train.texts, data.train.labels), evals, spec,
                              max_length=cfg.data.max_length, batch_size=cfg.train.eval_batch_size, k=KNN_K,
                              c=LOGREG_C, seed=CAP_SEED)
    return out, pooling_of(model)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` where the platform has ``fcntl`` (else none: at worst, duplicate work)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable baselines cache %s (%s); computing again", path, err)
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("baselines"), dict):
        return None
    return entry


def cached_baselines(prep: Prepared, data: BaselineData, cache_dir: Path, device=None) -> tuple[dict[str, Any], bool]:
    """The cache entry for ``data`` (computed and written when missing); and whether it was cached."""
    key = cache_key(prep, data)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.json"
    with _locked(cache_dir / f"{key}.lock"):
        entry = _read_cache(path, key)
        if entry is not None:
            return entry, True
        t0 = time.perf_counter()
        found, pooling = compute_baselines(prep, data, device)
        entry = {
            "key": key, "version": PROTOCOL_VERSION, "created": now(), "seconds": round(time.perf_counter() - t0, 3),
            "task": prep.spec.name, "model": prep.cfg.model, "pooling": pooling,
            "max_length": prep.cfg.data.max_length, "train_examples": len(data.train),
            "train_total": data.train_total, "splits": {n: len(s) for n, s in data.evals.items()},
            "baselines": found,
        }
        atomic_write_json(path, entry)
        return entry, False


def baselines_stage(state: RunState) -> None:
    """Record ``metrics["baselines"]`` and ``meta["baselines"]`` (time, cache hit, training examples).

    A failure here never fails the trained run: the baselines are a reference, so the error is
    recorded in ``meta["baselines"]["error"]`` and the run's notes instead.
    """
    t0 = time.perf_counter()
    try:
        data = baseline_data(state.prep, state.names)
        entry, cached = cached_baselines(state.prep, data, state.run_dir.parent / CACHE_DIR, state.device)
    except Exception as err:  # noqa: BLE001 - a reference number must not cost the trained model
        message = f"{type(err).__name__}: {err}"
        log.warning("frozen-embedding baselines not computed: %s", message)
        state.prep.notes.append(f"frozen-embedding baselines not computed: {message}")
        state.meta["baselines"] = {"error": message, "seconds": round(time.perf_counter() - t0, 3)}
        return
    state.metrics["baselines"] = entry["baselines"]
    capped = entry["train_examples"] < entry["train_total"]
    state.meta["baselines"] = {
        "seconds": round(time.perf_counter() - t0, 3), "cached": cached, "compute_seconds": entry["seconds"],
        "key": entry["key"], "model": entry["model"], "pooling": entry["pooling"],
        "train_examples": entry["train_examples"], "train_total": entry["train_total"],
        "train_subset": (f"seeded random subset (seed {CAP_SEED}) of {entry['train_examples']} of the run's "
                         f"{entry['train_total']} training examples" if capped else "the run's training examples"),
        "protocol": f"v{PROTOCOL_VERSION}: logreg C={LOGREG_C} (ridge for regression), cosine {KNN_K}-NN, "
                    "zero-shot cosine for sentence-pair regression; base encoder, frozen",
    }
