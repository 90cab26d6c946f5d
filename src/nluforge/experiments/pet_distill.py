"""PET's last step, wired after a ``prompt_based`` run: distil the pattern ensemble into a classifier.

Paper: Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference" (EACL): the pattern models' ensemble labels a set of unlabeled examples with
``softmax(logits / T)`` (T = 2), and a standard sequence classifier is trained on those soft labels with
a distillation loss. The classifier, not the pattern models, is what PET ships.

Here (``method_params: {distill: true, ...}``, see :class:`nluforge.methods.prompt_based.Config`):

1. :func:`load_unlabeled` (called by ``prepare``, so bad input fails before anything is written) reads
   the unlabeled texts: ``unlabeled_file`` (CSV/TSV/JSONL with the task's text columns; a label column
   is ignored), or ``unlabeled_from_train`` = N seeded training examples whose text is not among the
   labeled subset (``data.k_shot`` or ``data.max_train_samples``), labels dropped.
2. :func:`distill`, after the prompt model is trained: evaluate the ensemble (``metrics["pet_ensemble"]``
   in result.json), soft-label the unlabeled texts, and fully fine-tune a fresh
   ``AutoModelForSequenceClassification`` of the same base model on them with
   :func:`~nluforge.distill.losses.kd_loss` (PET's soft cross-entropy up to a constant: the same gradient), through the one training loop
   (:func:`nluforge.train.fit`, ``loss_fn`` seam). That classifier becomes the run's model: it is saved
   (a plain ``save_pretrained`` folder), evaluated into ``metrics["trained"]`` and measured.

The loop's batches carry labels, so the unlabeled set is encoded with each example's *index* as its
label and the loss looks the soft target up by index. The run's cost covers the whole recipe: training
time and examples are pattern training + soft labelling + distillation, the peak memory is the larger
of the two trainings; ``log.jsonl`` (events with ``"phase": "distill"``) and ``meta["distill"]`` break
it down.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError

log = logging.getLogger(__name__)
PHASE = "distill"
CHECKPOINTS = "distill"  # under the run's checkpoints/, so a resumed run resumes the distillation too


@dataclass
class Peak:
    """Peak training memory, shaped like :class:`nluforge.eval.meters.PeakMemory` for ``measure_cost``."""

    mb: float
    kind: str


@dataclass
class Distilled:
    model: Any  # the trained AutoModelForSequenceClassification: the run's model from here on
    ensemble_metrics: dict[str, dict[str, float]]  # the pattern ensemble's metrics per split
    fit_result: Any  # FitResult of the whole recipe (pattern training + soft labels + distillation)
    peak: Peak
    summary: dict[str, Any]  # result.json meta["distill"]


# ------------------------------------------------------------------------------------------- unlabeled data


def load_unlabeled(cfg, method_cfg, spec, labeled) -> tuple[list[tuple[str, ...]], str]:
    """The unlabeled texts (tuples in ``spec.text_fields`` order) and a one-line note on where from."""
    if spec.is_regression:
        raise UserError(f"prompt_based: distill needs a classification task and {spec.name} is regression "
                        "(PET's soft labels are class distributions); set distill=false")
    if method_cfg.unlabeled_file is not None:
        texts = read_unlabeled_file(Path(method_cfg.unlabeled_file).expanduser(), spec, cfg.data.text_fields)
        return texts, f"distill: {len(texts)} unlabeled examples from {method_cfg.unlabeled_file}"
    return _from_train(cfg, method_cfg.unlabeled_from_train, labeled)


def read_unlabeled_file(path: Path, spec, text_fields: list[str] | None = None, *,
                        who: str = "prompt_based") -> list[tuple[str, ...]]:
    """Text columns of a CSV/TSV/JSONL file with a header, by the task's field names (or GLUE's columns,
    or ``text_fields`` when given); any other column, a label included, is ignored. ``who`` names the
    option's owner in errors (``prompt_based``, ``distill``)."""
    from nluforge.tasks.tables import column, read_table

    if not path.is_file():
        raise UserError(f"{who}: unlabeled_file not found: {path}; give a CSV/TSV/JSONL file with "
                        f"column(s) {', '.join(spec.text_fields)}")
    table = read_table(path)
    glue = spec.source.glue_columns if spec.source is not None else {}
    cols = []
    for i, name in enumerate(spec.text_fields):
        candidates = [text_fields[i]] if text_fields else [c for c in (name, glue.get(name)) if isinstance(c, str)]
        cols.append(column(table, candidates, f"text field '{name}' of the unlabeled data"))
    texts = []
    for number, row in table.rows():
        values = [row[c] if c < len(row) else None for c in cols]
        if any(v is None or not str(v).strip() for v in values):
            raise UserError(f"{path} line {number} has an empty text field; fill it in or drop the row")
        texts.append(tuple(str(v) for v in values))
    if not texts:
        raise UserError(f"{path} has no data rows; point unlabeled_file at a file with examples")
    return texts


def _from_train(cfg, n: int, labeled) -> tuple[list[tuple[str, ...]], str]:
    """``n`` seeded train examples whose text is not in the labeled subset, in file order."""
    from nluforge.experiments.data import task_kwargs
    from nluforge.tasks import load_task

    if not (cfg.data.k_shot or cfg.data.max_train_samples):
        raise UserError("prompt_based: unlabeled_from_train needs a labeled subset of train (data.k_shot or "
                        "data.max_train_samples); with all of train labeled, use unlabeled_file instead")
    kwargs = task_kwargs(cfg) | {"k_shot": None, "max_train_samples": None, "max_eval_samples": None}
    full = load_task(cfg.task, splits=["train"], **kwargs).splits["train"]
    seen = set(labeled.texts)
    pool = [i for i, text in enumerate(full.texts) if text not in seen]
    if len(pool) < n:
        raise UserError(f"prompt_based: unlabeled_from_train={n} but only {len(pool)} train examples lie outside "
                        f"the {len(labeled)} labeled ones; lower unlabeled_from_train to at most {len(pool)}")
    chosen = sorted(random.Random(f"{cfg.seed}:unlabeled").sample(pool, n))
    note = f"distill: {n} unlabeled examples from train (labels dropped; none among the {len(labeled)} labeled)"
    return [full.texts[i] for i in chosen], note


# ------------------------------------------------------------------------------------------- distillation


def distill(state, teacher, teacher_fit, teacher_peak) -> Distilled:
    """Evaluate the trained pattern ensemble, soft-label ``prep.unlabeled`` with it, and train a classifier."""
    from nluforge.eval.meters import PeakMemory
    from nluforge.experiments import stages
    from nluforge.models.inputs import encode

    prep, run_dir = state.prep, state.run_dir
    mc = prep.method_cfg
    ensemble_metrics = stages.evaluate(prep, teacher, state.encoded, state.names, None)
    device = next(teacher.parameters()).device
    unlabeled = encode(prep.unlabeled, list(range(len(prep.unlabeled))), prep.tokenizer, prep.cfg.data.max_length)
    with PeakMemory(device) as peak:
        t0 = time.perf_counter()
        targets = _soft_targets(prep, teacher, unlabeled, mc.distill_temperature)  # (N, L)
        label_s = time.perf_counter() - t0
        if device.type != "cpu":
            teacher.to("cpu")  # its accelerator memory goes to the student
        student, fit, lr = _train_student(state, unlabeled, targets)
    summary = {"unlabeled": len(unlabeled), "temperature": mc.distill_temperature, "lr": lr,
               "soft_label_time_s": round(label_s, 3), "teacher_label_counts": _counts(targets),
               "steps": fit.steps, "best_step": fit.best_step, "stopped_early": fit.stopped_early,
               "train_time_s": round(fit.train_time_s, 3), "train_examples": fit.examples_seen,
               "train_examples_per_s": round(fit.examples_per_s, 2), "peak_memory_mb": round(peak.mb, 1),
               "teacher_train_time_s": round(teacher_fit.train_time_s, 3)}
    _log(run_dir, {"event": "distill_end", **summary})
    log.info("distilled into a classifier: %d unlabeled examples, %d steps, %.1f s", len(unlabeled), fit.steps,
             fit.train_time_s)
    return Distilled(student, ensemble_metrics, _combined(teacher_fit, fit, label_s),
                     Peak(max(teacher_peak.mb, peak.mb), peak.kind), summary)


def _soft_targets(prep, teacher, unlabeled, temperature: float):
    """The ensemble's ``softmax(logits / T)`` on the unlabeled set, (N, L), on the teacher's device: the
    soft-label machinery shared with ``distill`` runs (:mod:`nluforge.distill.soft`)."""
    from nluforge.distill.soft import teacher_soft_labels
    from nluforge.experiments.stages import pad_id

    return teacher_soft_labels(teacher, unlabeled, temperature, batch_size=prep.cfg.train.eval_batch_size,
                               pad_id=pad_id(prep.tokenizer))


def _train_student(state, unlabeled, targets):
    """A fresh sequence classifier of the same base model, fully fine-tuned on the soft targets, through
    the run's one training stage with a soft-label ``loss_fn``."""
    import torch

    from nluforge.distill.losses import kd_loss
    from nluforge.experiments.servable import distilled_classifier
    from nluforge.experiments.stages import eval_split_names_for_selection, split_metrics, train_stage
    from nluforge.methods import METHODS

    prep = state.prep
    cfg, mc, spec = prep.cfg, prep.method_cfg, prep.spec
    lr = mc.distill_lr or METHODS.entry("full").meta["default_lr"]
    train_cfg = dataclasses.replace(cfg.train, epochs=mc.distill_epochs, max_steps=mc.distill_max_steps, lr=lr,
                                    batch_size=mc.distill_batch_size or cfg.train.batch_size)
    torch.manual_seed(cfg.seed)  # the classification head's initialisation
    student = distilled_classifier(cfg, spec)
    _log(state.run_dir, {"event": "distill_start", "unlabeled": len(unlabeled),
                         "temperature": mc.distill_temperature, "lr": lr})
    first = eval_split_names_for_selection(prep)
    dev = state.encoded[first]

    def loss_fn(model, batch):  # batch["labels"] holds example indices into ``targets``
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, L)
        soft = targets[batch["labels"].to(targets.device)].to(logits.device)  # (B, L)
        return kd_loss(logits, soft, mc.distill_temperature), logits  # PET's loss up to a constant: same gradient

    trained = train_stage(state, model=student, train=unlabeled, train_cfg=train_cfg, lr=lr, loss_fn=loss_fn,
                          evaluate=lambda m: split_metrics(prep, m, dev, first),
                          checkpoint_dir=state.run_dir / "checkpoints" / CHECKPOINTS, log_fields={"phase": PHASE})
    return trained.model, trained.fit, lr


def _counts(targets) -> list[int]:
    """How many unlabeled examples the ensemble assigns to each class (argmax of the soft labels)."""
    import torch

    return torch.bincount(targets.argmax(-1).cpu(), minlength=targets.shape[1]).tolist()


def _combined(teacher, student, label_s: float):
    """One FitResult for the run's cost: both trainings and the soft labelling in between."""
    from nluforge.train.loop import FitResult

    seconds = teacher.train_time_s + label_s + student.train_time_s
    examples = teacher.examples_seen + student.examples_seen
    return FitResult(steps=teacher.steps + student.steps, train_time_s=seconds, examples_seen=examples,
                     examples_per_s=examples / max(seconds, 1e-9), best_metric=student.best_metric,
                     best_step=student.best_step, stopped_early=student.stopped_early)


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    from nluforge.core.runtime import is_main_process
    from nluforge.experiments.stages import LOG_FILE

    if not is_main_process():
        return
    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**record, "phase": PHASE}) + "\n")
