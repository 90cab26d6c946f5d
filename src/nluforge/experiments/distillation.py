"""Distillation as a derived run: ``distill:<student>`` learns from its parent, the teacher run.

Papers: Hinton et al. 2015 (logit KD), Wang et al. 2020 (MiniLM), Mirzadeh et al. 2020 ("Improved
Knowledge Distillation via Teacher Assistant", AAAI): with ``assistant``, the teacher first teaches an
intermediate-size assistant, which then teaches the student (two stages through the same
``train_stage``, both recorded in ``meta["distill"]["stages"]``). The losses and students live in
:mod:`nluforge.distill`; this module wires them into a run:

    prepare_distill (teacher = the parent's servable model; students built, every check done)
    → distill (train_stage with the distillation loss_fn) → save → evaluate → [attack] → [audit] → measure

Data: the teacher run's own training set (its config: same task, data dir, subset and seed), or a
seeded ``max_train_samples`` subset of it, plus the texts of ``unlabeled_file`` (labelled ``IGNORE``:
only the teacher's terms apply to them). The student is a plain sequence classifier, saved as a
``save_pretrained`` folder. The result holds the student's own metrics and cost (its training included);
``meta["parent"]`` the teacher's, and ``meta["distill"]["vs_teacher"]`` the ratios.

Departures: students are always fully fine-tuned (whatever the teacher's method); a ``layers:K`` student
is cut from the teacher (also when an assistant is used, so layer indices always name teacher layers);
a model SPEC student must share the teacher's tokenizer, because both read the same batch.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.experiments.config import RunConfig
from nluforge.experiments.state import Prepared, RunState

PHASES = ("assistant", "student")


@dataclass
class Learner:
    """A model to train in one phase, and where it came from."""

    spec: str  # layers:K or a model name
    model: Any
    picked: list[int] | None  # teacher layer indices (layers:K)
    heads: int | None  # MiniLM relation heads against its teacher (None: MiniLM off)


@dataclass
class Plan:
    """What ``prepare_distill`` resolved: the options, the learners in order, the KD temperature."""

    config: Any  # nluforge.distill.DistillConfig
    learners: list[Learner]  # [assistant,] student
    temperature: float
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- prepare


def prepare_distill(cfg: RunConfig, parent_dir: Path) -> Prepared:
    """Check the step and the teacher, load data and build the student(s); raise UserError, write nothing."""
    from nluforge.experiments.data import eval_split_names, load_data
    from nluforge.experiments.sections import resolve_sections
    from nluforge.experiments.servable import finished_parent, load_servable
    from nluforge.methods import method_config, method_module

    sections = resolve_sections(cfg)  # an unknown option or a bad SPEC fails here, before any model loads
    dc = sections.distill[0].config
    finished_parent(parent_dir)
    teacher = load_servable(parent_dir)
    regression = teacher.spec.is_regression
    if regression and dc.temperature is not None:
        raise UserError("distill: the teacher is a regression model, whose KD term is the MSE to its score; a "
                        "temperature does not apply: drop -p temperature")
    if dc.unlabeled_file and not dc.uses_teacher:
        raise UserError("distill: unlabeled_file is only labelled by the teacher, but kd_weight and minilm_weight "
                        "are 0; set one > 0 or drop unlabeled_file")
    spec, splits, notes = load_data(cfg, train=True)
    eval_split_names(cfg, spec, splits)
    if dc.max_train_samples and dc.max_train_samples < len(splits["train"]):
        splits["train"] = _subset(splits["train"], dc.max_train_samples, cfg.seed)
        notes.append(f"distill: {dc.max_train_samples} seeded examples of the teacher's training set")
    unlabeled = None
    if dc.unlabeled_file:
        from nluforge.experiments.pet_distill import read_unlabeled_file

        unlabeled = read_unlabeled_file(Path(dc.unlabeled_file).expanduser(), spec, cfg.data.text_fields,
                                        who="distill")
        notes.append(f"distill: {len(unlabeled)} unlabeled examples from {dc.unlabeled_file}, soft-labelled by the "
                     "teacher")
    plan = Plan(dc, _learners(dc, teacher, cfg, spec), 2.0 if dc.temperature is None else dc.temperature)
    return Prepared(cfg, spec, splits, teacher.tokenizer, plan.learners[-1].model, method_module("full"),
                    method_config("full", {}), notes, unlabeled, sections, parent=teacher, distill=plan)


def _subset(split, n: int, seed: int):
    picked = sorted(random.Random(f"{seed}:distill").sample(range(len(split.texts)), n))
    return dataclasses.replace(split, texts=[split.texts[i] for i in picked], labels=[split.labels[i] for i in picked])


def _learners(dc, teacher, cfg: RunConfig, spec) -> list[Learner]:
    """[assistant,] student, each checked against the model that teaches it."""
    specs = ([dc.assistant] if dc.assistant else []) + [dc.student]
    learners: list[Learner] = []
    for spec_str in specs:
        model, picked = build_student(spec_str, dc.layer_pick, teacher, cfg, spec)
        teaching = learners[-1].model if learners else teacher.model
        heads = None
        if dc.minilm_weight > 0:
            from nluforge.distill.students import check_minilm

            heads = check_minilm(teaching, model, dc.relation_heads)
        learners.append(Learner(spec_str, model, picked, heads))
    return learners


def build_student(spec_str: str, layer_pick: str, teacher, cfg: RunConfig, spec):
    """``(model, picked)``: ``layers:K`` cut from the teacher, or another pretrained model with a fresh head."""
    from nluforge.distill.config import parse_student
    from nluforge.distill.students import cut_layers
    from nluforge.models.loading import load_model, load_tokenizer

    k = parse_student(spec_str)
    if k is not None:
        if teacher.cfg.method != "full" and not hasattr(teacher.model, "merge_and_unload"):
            raise UserError(f"distill layers:{k} cuts the teacher's own model, but a '{teacher.cfg.method}' run keeps "
                            "its own modules; give a model as --student (e.g. default) instead")
        return cut_layers(teacher.model, k, layer_pick)
    if _vocab(load_tokenizer(spec_str)) != _vocab(teacher.tokenizer):
        raise UserError(f"distill student '{spec_str}' has another tokenizer than the teacher ({teacher.cfg.model}); "
                        "the student reads the teacher's batches: pick a model with the same vocabulary or layers:K")
    import torch

    torch.manual_seed(cfg.seed)  # the fresh head
    return load_model(spec_str, num_labels=spec.num_labels, label_names=spec.label_names, pooling=cfg.pooling), None


def _vocab(tokenizer) -> dict[str, int]:
    return tokenizer.get_vocab()


# ------------------------------------------------------------------------------------------- stages


def distill_stage(state: RunState) -> None:
    """Train [assistant, then] student through ``train_stage`` with the distillation ``loss_fn``."""
    from nluforge.experiments.stages import eval_split_names_for_selection, split_metrics

    prep, plan = state.prep, state.prep.distill
    train = _training_set(prep)
    teacher = prep.parent.model
    first = eval_split_names_for_selection(prep)
    state.encoded[first] = state.encoded.get(first) or _encode(prep, prep.splits[first].texts, prep.splits[first].labels)
    stages, fits, peaks = [], [], []
    learners = plan.learners
    for phase, learner in zip(PHASES[-len(learners):], learners, strict=True):
        t = _train_phase(state, phase, teacher, learner, train)
        stage = {"phase": phase, "student": learner.spec, "picked_layers": learner.picked,
                 "teacher": "assistant" if phase == "student" and len(learners) == 2 else "teacher",
                 "steps": t.fit.steps, "best_step": t.fit.best_step, "train_time_s": round(t.fit.train_time_s, 3),
                 "train_examples": t.fit.examples_seen, "params": _params(t.model)}
        if phase == "assistant":
            stage["metrics"] = {first: split_metrics(prep, t.model, state.encoded[first], first)}
        stages.append(stage)
        fits.append(t.fit)
        peaks.append(t.peak)
        teacher = t.model  # the assistant teaches the student
    state.model = prep.model = t.model
    state.fit, state.peak, state.ckpt_mb = _combined(fits), max(peaks, key=lambda p: p.mb), t.ckpt_mb
    state.device, state.accelerator = t.device, t.accelerator
    dc = plan.config
    state.meta["distill"] = {
        "student": dc.student, "layer_pick": dc.layer_pick, "picked_layers": learners[-1].picked,
        "assistant": dc.assistant, "weights": {"kd": dc.kd_weight, "minilm": dc.minilm_weight, "hard": dc.hard_weight},
        "temperature": None if prep.spec.is_regression else plan.temperature, "relation_heads": learners[-1].heads,
        "train_examples": len(prep.splits["train"]), "unlabeled": len(prep.unlabeled or []), "stages": stages}


def _train_phase(state: RunState, phase: str, teacher, learner: Learner, train):
    from nluforge.distill.objective import DistillObjective, Weights
    from nluforge.experiments.stages import eval_split_names_for_selection, split_metrics, train_stage

    prep, plan = state.prep, state.prep.distill
    dc = plan.config
    weights = Weights(kd=dc.kd_weight, minilm=dc.minilm_weight if learner.heads else 0.0, hard=dc.hard_weight,
                      temperature=plan.temperature, heads=learner.heads)
    objective = DistillObjective(teacher if dc.uses_teacher else None, learner.model, weights,
                                 regression=prep.spec.is_regression)
    first = eval_split_names_for_selection(prep)
    train_cfg, lr = _train_cfg(prep.cfg, dc)
    try:
        return train_stage(state, model=learner.model, train=train, train_cfg=train_cfg, lr=lr,
                           loss_fn=_on_device(objective), evaluate=lambda m: split_metrics(prep, m, state.encoded[first],
                                                                                           first),
                           checkpoint_dir=state.run_dir / "checkpoints" / phase, log_fields={"phase": phase})
    finally:
        objective.close()


def _on_device(objective):
    """The objective, with the teacher moved to the batch's device on first use."""

    def loss_fn(model, batch):
        teacher = objective.teacher
        if teacher is not None:
            device = batch["input_ids"].device
            if next(teacher.parameters()).device != device:
                teacher.to(device)
        return objective(model, batch)

    return loss_fn


def _train_cfg(cfg: RunConfig, dc):
    """The student's training knobs: the teacher run's, with the step's epochs/steps/batch/lr over them."""
    from nluforge.methods import METHODS

    lr = dc.lr or (cfg.train.lr if cfg.method == "full" else None) or METHODS.entry("full").meta["default_lr"]
    train_cfg = dataclasses.replace(cfg.train, lr=lr, epochs=dc.epochs or cfg.train.epochs,
                                    max_steps=dc.max_steps or cfg.train.max_steps,
                                    batch_size=dc.batch_size or cfg.train.batch_size)
    return train_cfg, lr


def _encode(prep, texts, labels):
    from nluforge.models.inputs import encode

    return encode(texts, labels, prep.tokenizer, prep.cfg.data.max_length)


def _training_set(prep):
    """The teacher's training examples, then the unlabeled texts (label IGNORE, or NaN for regression)."""
    from nluforge.distill.losses import IGNORE
    from nluforge.models.inputs import Encoded

    train = prep.splits["train"]
    enc = _encode(prep, train.texts, train.labels)
    if not prep.unlabeled:
        return enc
    none = float("nan") if prep.spec.is_regression else IGNORE
    extra = _encode(prep, prep.unlabeled, [none] * len(prep.unlabeled))
    types = (enc.token_type_ids + extra.token_type_ids) if enc.token_type_ids is not None else None
    return Encoded(enc.input_ids + extra.input_ids, types, list(enc.labels) + list(extra.labels))


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _combined(fits):
    """One FitResult for the run's cost: every phase's training."""
    from nluforge.train.loop import FitResult

    if len(fits) == 1:
        return fits[0]
    seconds = sum(f.train_time_s for f in fits)
    examples = sum(f.examples_seen for f in fits)
    last = fits[-1]
    return FitResult(steps=sum(f.steps for f in fits), train_time_s=seconds, examples_seen=examples,
                     examples_per_s=examples / max(seconds, 1e-9), best_metric=last.best_metric,
                     best_step=last.best_step, stopped_early=last.stopped_early, history=last.history)


def save_stage(state: RunState) -> None:
    """``model/``: the student as a ``save_pretrained`` folder with the tokenizer, renamed into place."""
    import tempfile

    from nluforge.core.io import atomic_replace_dir
    from nluforge.models.loading import quiet_transformers
    from nluforge.tasks.custom import write_task_record

    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=state.run_dir))
    with quiet_transformers():
        state.model.save_pretrained(tmp)
        state.prep.tokenizer.save_pretrained(tmp)
    write_task_record(tmp, state.prep.spec)
    state.model_dir = atomic_replace_dir(tmp, state.run_dir / "model")


def measure_stage(state: RunState) -> None:
    """The student's own cost (its training too); the teacher's metrics, cost and the ratios in meta."""
    from nluforge.experiments.stages import measure_cost
    from nluforge.results import Cost

    prep = state.prep
    state.cost = measure_cost(prep, state.model, state.encoded[state.names[0]], state.fit, state.peak,
                              state.model_dir, state.ckpt_mb)
    parent = prep.parent
    pcost = parent.result.cost if parent.result else Cost()
    pmetrics = parent.result.metrics.get("trained") if parent.result else None
    state.meta["parent"] = {"run": parent.run_dir.name, "metrics": pmetrics, "cost": dataclasses.asdict(pcost)}
    state.meta["distill"]["vs_teacher"] = vs_teacher(state.cost, pcost)


def vs_teacher(student, teacher) -> dict[str, float | None]:
    """Teacher / student for size, parameters and latency (above 1: the student is smaller or faster)."""

    def ratio(field_name: str) -> float | None:
        t, s = getattr(teacher, field_name), getattr(student, field_name)
        return round(t / s, 3) if t and s else None

    return {"size": ratio("standalone_size_mb"), "params": ratio("total_params"),
            "speedup_bs1": ratio("latency_ms_bs1"), "speedup_bs32": ratio("latency_ms_bs32")}
