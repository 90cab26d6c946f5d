"""One cell of an experiment, as a visible list of named stages over one :class:`RunState`.

    prepare:  load → adapt                          (validates everything, writes nothing)
    execute:  train → [distill] → save → evaluate → [baselines] → [attack] → [audit] → measure
    derived:  load (the parent's servable model) → compress → save → evaluate → [attack] → [audit] → measure
    distill:  load (teacher = the parent's model; students) → distill → save → evaluate → [attack] → [audit] → measure

:func:`prepare` does everything that can fail because of the user's input and writes nothing: it first
resolves every config section through its registry (method, optimizer, compress, attack, audit,
privacy; :mod:`nluforge.experiments.sections`), so a bad name fails in a second, before any model
loads. :func:`execute` runs the stages, each of which records its own ``metrics[stage]`` (the evaluate
stage's dev results stay under ``metrics["trained"]``), and writes the run directory with
``result.json`` last. A derived run (a compressed child; :mod:`nluforge.experiments.derived`) goes
through the same ``execute`` with the derived stage list. :func:`run_cell` is what grid runners call:
it never raises for a failing cell, it records ``status: failed`` and the error instead.

Several processes (``torchrun``): every process trains (and distils); only the main one creates and
writes the run directory, saves, evaluates and records, while the others wait at a barrier.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_text
from nluforge.core.runtime import barrier, is_main_process, seed_everything, set_threads
from nluforge.experiments import derived, distillation
from nluforge.experiments.config import RunConfig, read_run_config
from nluforge.experiments.data import encode_splits, eval_split_names, load_data
from nluforge.experiments.rundir import build_result, now, start_run_dir
from nluforge.experiments.state import Prepared, RunState
from nluforge.results import RunResult, write_result

__all__ = ["Prepared", "RunState", "encode_splits", "execute", "load_data", "prepare", "read_run_config",
           "run_cell"]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


# ---- prepare: load → adapt ---------------------------------------------------------------------------


def build_model(cfg: RunConfig, spec, tokenizer):
    """The pretrained model with the head the method needs, then adapted by the method."""
    from nluforge.methods import method_config, method_module
    from nluforge.models.loading import load_model

    module = method_module(cfg.method)
    method_cfg = method_config(cfg.method, cfg.method_params)
    from nluforge.optim import OPTIMIZERS

    # AdaHessian differentiates the gradients again: SDPA on CPU has no double backward, eager attention has
    attn = OPTIMIZERS.entry(cfg.optimizer).meta.get("attn_implementation")
    base = load_model(cfg.model, num_labels=spec.num_labels, label_names=spec.label_names,
                      head=getattr(module, "HEAD", "sequence_classification"), pooling=cfg.pooling,
                      attn_implementation=attn)
    model = module.adapt(base, method_cfg, tokenizer=tokenizer, task=spec)
    return model, module, method_cfg


def prepare(cfg: RunConfig) -> Prepared:
    """Resolve every section, load data and tokenizer, build and adapt the model; raises UserError.

    A config with compress steps prepares its parent (the trained run); the steps become derived runs
    (:func:`run_children`) once it has finished.
    """
    from nluforge.experiments.sections import resolve_sections
    from nluforge.tasks import get_task

    sections = resolve_sections(cfg)  # cheap checks first: bad names fail in a second
    cfg = cfg.parent()
    if cfg.train.adversarial.method != "none":
        from nluforge.methods import METHODS

        if getattr(METHODS.get(cfg.method), "prefit", None) is not None:
            raise UserError(f"train.adversarial does not apply to {cfg.method}: it trains itself, without the "
                            "training loop the perturbation goes through; drop train.adversarial or pick a "
                            "method trained by gradient steps (full, lora, prompt_based, ...)")
        from nluforge.optim import OPTIMIZERS

        own_step = OPTIMIZERS.entry(cfg.optimizer).meta.get("update_step")
        if sections.privacy is not None or own_step is not None:  # their update step would skip the loss seam
            other = "DP-SGD" if sections.privacy is not None else f"the {cfg.optimizer} optimizer"
            raise UserError(f"train.adversarial cannot be combined with {other}: its own update step does not "
                            "go through the loss the perturbation lives in; drop one of the two")
    if sections.privacy is not None:
        from nluforge.experiments.dp_train import check_private

        check_private(cfg, sections.privacy.config)  # method / optimizer: before anything loads
    if not cfg.data.train_file:
        get_task(cfg.task)
    from nluforge.models.loading import load_tokenizer

    set_threads(cfg.train.num_threads)
    spec, splits, notes = load_data(cfg)  # load
    eval_split_names(cfg, spec, splits)
    audit_split = None
    if cfg.data.audit_holdout or cfg.data.audit_shadow:
        from nluforge.experiments.audit_split import reserve_members

        splits["train"], audit_split = reserve_members(cfg, splits["train"])
    if sections.privacy is not None:
        from nluforge.experiments.dp_train import check_private

        check_private(cfg, sections.privacy.config, len(splits["train"]))  # delta < 1/n
    unlabeled = None
    if getattr(sections.method, "distill", False):
        from nluforge.experiments.pet_distill import load_unlabeled

        unlabeled, note = load_unlabeled(cfg, sections.method, spec, splits["train"])
        notes.append(note)
    tokenizer = load_tokenizer(cfg.model)
    seed_everything(cfg.seed)  # the head's (and the method's) initialisation
    model, module, method_cfg = build_model(cfg, spec, tokenizer)  # adapt
    from nluforge.optim import OPTIMIZERS, check_model

    check_model(cfg.optimizer, model, cfg.method, cfg.optimizer_params)  # e.g. GaLore needs a big enough matrix
    if OPTIMIZERS.entry(cfg.optimizer).meta.get("update_step") == "second_order" and cfg.train.max_grad_norm:
        notes.append(f"{cfg.optimizer}: train.max_grad_norm={cfg.train.max_grad_norm} is not applied (the "
                     "Hessian-vector product differentiates the unclipped gradient)")
    return Prepared(cfg, spec, splits, tokenizer, model, module, method_cfg, notes, unlabeled, sections,
                    audit_split=audit_split)


# ---- the stages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunState], None]
    when: Callable[[RunState], bool] = lambda state: True
    all_ranks: bool = False  # every process runs it (training); otherwise only the main process


def _train(state: RunState) -> None:
    from nluforge.experiments.stages import learning_rate, train_stage

    adv, loss_fn = state.cfg.train.adversarial, None
    if adv.method != "none":  # FreeLB / PGD through the loop's loss seam
        from nluforge.train.adversarial import adversarial_loss

        loss_fn = adversarial_loss(adv.method, steps=adv.steps, alpha=adv.alpha, epsilon=adv.epsilon,
                                   norm=adv.norm, init_mag=adv.init_mag)
    dp_lr = None
    if state.prep.sections is not None and state.prep.sections.privacy is not None:
        from nluforge.experiments.dp_train import dp_train_stage

        t, plan = dp_train_stage(state)  # DP-SGD through the stage's sampler / update_step seams
        dp_lr = plan.lr
    else:
        t = train_stage(state, loss_fn=loss_fn)
    state.model, state.fit, state.peak, state.ckpt_mb = t.model, t.fit, t.peak, t.ckpt_mb
    state.device, state.accelerator = t.device, t.accelerator
    state.meta["train"] = {"steps": t.fit.steps, "best_step": t.fit.best_step,
                           "stopped_early": t.fit.stopped_early, "lr": dp_lr or learning_rate(state.prep)}
    if t.memory is not None:  # the optimizer that ran (its backend) and the training memory by part
        state.meta["train"]["optimizer"] = {"name": state.cfg.optimizer, **t.memory.pop("optimizer")}
        state.meta["train"]["memory"] = t.memory
    evals = [h for h in t.fit.history if "step" in h]  # the dev metric per evaluation (e.g. MeZO's curve)
    if len(evals) > 1:
        state.meta["train"]["history"] = evals
    if loss_fn is not None:
        state.meta["train"]["adversarial"] = dataclasses.asdict(adv)
    prefit = [h["prefit"] for h in t.fit.history if "prefit" in h]  # a method that trains itself (SetFit)
    if prefit:
        state.meta["train"]["prefit"] = prefit[0]


def _distills(state: RunState) -> bool:
    return bool(getattr(state.prep.method_cfg, "distill", False))


def _distill(state: RunState) -> None:
    """PET: the pattern ensemble teaches a plain classifier, which becomes the run's model."""
    from nluforge.experiments.pet_distill import distill

    d = distill(state, state.model, state.fit, state.peak)
    state.prep.model = state.model = d.model  # saved, evaluated and measured from here on
    state.fit, state.peak = d.fit_result, d.peak
    state.metrics["pet_ensemble"] = d.ensemble_metrics
    state.meta["distill"] = d.summary


def _save(state: RunState) -> None:
    from nluforge.experiments.stages import save_model

    state.model_dir = save_model(state.prep, state.model, state.run_dir)
    if state.prep.audit_split is not None:  # before the audit stage, which reads it
        from nluforge.experiments.audit_split import write_split

        state.meta["audit_split"] = write_split(state.run_dir, state.prep.audit_split)


def _evaluate(state: RunState) -> None:
    from nluforge.experiments.stages import evaluate

    state.metrics["trained"] = evaluate(state.prep, state.model, state.encoded, state.names, state.run_dir)


def _baselines(state: RunState) -> None:
    """Frozen-embedding baselines of the base encoder on the run's training subset (cached per task)."""
    from nluforge.experiments.baselines import baselines_stage

    baselines_stage(state)


def _has(kind: str) -> Callable[[RunState], bool]:
    return lambda state: bool(getattr(state.prep.sections, kind, None))


def _run_steps(kind: str, registry_name: str, metrics_key: str) -> Callable[[RunState], None]:
    """Attack/audit steps: each registry entry names its runner (``meta["run"]``, "module:function",
    called as ``run(state, step) -> {split: {metric: value}}``); results merge into ``metrics_key``."""

    def run(state: RunState) -> None:
        import importlib

        from nluforge.core import steps as registries

        registry = getattr(registries, registry_name)
        for step in getattr(state.prep.sections, kind):
            module, _, attr = registry.entry(step.method).meta["run"].partition(":")
            found = getattr(importlib.import_module(module), attr)(state, step)
            for split, values in found.items():
                state.metrics.setdefault(metrics_key, {}).setdefault(split, {}).update(values)

    return run


def _measure(state: RunState) -> None:
    from nluforge.experiments.stages import measure_cost

    state.cost = measure_cost(state.prep, state.model, state.encoded[state.names[0]], state.fit, state.peak,
                              state.model_dir, state.ckpt_mb, memory=state.meta.get("train", {}).get("memory"))


_ATTACK = Stage("attack", _run_steps("attack", "ATTACKS", "attacked"), _has("attack"))
_AUDIT = Stage("audit", _run_steps("audit", "AUDITS", "audited"), _has("audit"))

# Stages that every process runs (all_ranks) come first; the others run on the main process only.
TRAINED: tuple[Stage, ...] = (
    Stage("train", _train, all_ranks=True),
    Stage("distill", _distill, _distills, all_ranks=True),
    Stage("save", _save),
    Stage("evaluate", _evaluate),
    Stage("baselines", _baselines, lambda state: state.cfg.eval.baselines),
    _ATTACK,
    _AUDIT,
    Stage("measure", _measure),
)
DERIVED: tuple[Stage, ...] = (
    Stage("compress", derived.compress_stage),
    Stage("save", derived.save_stage),
    Stage("evaluate", _evaluate),
    _ATTACK,
    _AUDIT,
    Stage("measure", derived.measure_stage),
)


DISTILLED: tuple[Stage, ...] = (
    Stage("distill", distillation.distill_stage),
    Stage("save", distillation.save_stage),
    Stage("evaluate", _evaluate),
    _ATTACK,
    _AUDIT,
    Stage("measure", distillation.measure_stage),
)


def stages_of(prep: Prepared) -> tuple[Stage, ...]:
    if prep.parent is None:
        return TRAINED
    return DISTILLED if prep.distill is not None else DERIVED


# ---- execute -----------------------------------------------------------------------------------------


def execute(prep: Prepared, run_dir: Path, *, resume: bool = False, progress: Progress | None = None,
            show_progress: bool = True) -> RunResult | None:
    """Run the stages of ``prep`` into ``run_dir`` (``result.json`` last); None on non-main processes."""
    stages = stages_of(prep)
    state = RunState(prep, run_dir, resume=resume, show_progress=show_progress, started=now())
    main = is_main_process()
    # a derived run trains nothing: the main process does it alone, without waiting for the others
    sync = barrier if prep.parent is None else (lambda: None)
    if prep.parent is not None and not main:
        return None
    if main:
        start_run_dir(run_dir, prep.cfg, resume)
    sync()  # the run directory exists before any process trains into it
    report = progress or (lambda _name: None)
    state.names = eval_split_names(prep.cfg, prep.spec, prep.splits)
    state.encoded = encode_splits(prep, (["train"] if prep.parent is None else []) + state.names)
    state.model = prep.model
    for stage in (s for s in stages if s.when(state) and s.all_ranks):  # training: every process
        report(stage.name)
        stage.run(state)
    sync()  # every process is done writing (a slower rank may still be saving its best weights)
    if not main:
        sync()  # wait for the main process to record the run
        return None
    try:
        for stage in (s for s in stages if not s.all_ranks):
            if stage.when(state):
                report(stage.name)
                stage.run(state)
        result = _record(state)
    finally:
        sync()  # release the waiting processes even when a stage fails here
    report("done")
    return result


def _record(state: RunState) -> RunResult:
    cfg = state.cfg
    if not cfg.train.keep_checkpoints:
        shutil.rmtree(state.run_dir / "checkpoints", ignore_errors=True)
    parent = state.prep.parent.run_dir.name if state.prep.parent is not None else None
    result = build_result(cfg, "completed", None, state.started, state.t0, state.metrics, state.cost,
                          state.device, parent=parent)
    result.meta["notes"] = state.prep.notes
    result.meta.update(state.meta)
    if state.model is not None:  # what the head actually read (pooling "auto" resolved)
        from nluforge.models.pooling import pooling_of

        result.meta["pooling"] = pooling_of(state.model)
    write_result(state.run_dir, result)
    return result


# ---- run_cell ----------------------------------------------------------------------------------------


def run_cell(cfg: RunConfig, results_dir: str | Path, *, progress: Progress | None = None,
             resume: bool = False, show_progress: bool = False) -> RunResult | None:
    """Run one grid cell into ``results_dir/<run_id>/``; a failure becomes a ``failed`` result.

    A derived cell (one compress step) trains its parent first when the parent has no result yet. A
    config with several compress steps runs its parent, then each step's derived run.
    """
    if len(cfg.children()) > 1:
        parent = run_cell(cfg.parent(), results_dir, progress=progress, resume=resume, show_progress=show_progress)
        run_children(cfg, results_dir, progress=progress)
        return parent
    run_dir = Path(results_dir) / cfg.run_id()
    started, t0 = now(), time.perf_counter()
    try:
        (progress or (lambda _s: None))("load")
        if cfg.step() is not None:
            prep = derived.prepare_parent_first(cfg, Path(results_dir), run_cell, progress)
        else:
            prep = prepare(cfg)
        return execute(prep, run_dir, resume=resume, progress=progress, show_progress=show_progress)
    except Exception as err:  # noqa: BLE001 - a cell's failure is data, the grid goes on
        message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        if not is_main_process():
            raise
        run_dir.mkdir(parents=True, exist_ok=True)
        if not isinstance(err, UserError):
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        parent = cfg.parent().run_id() if cfg.step() is not None else None
        result = build_result(cfg, "failed", message, started, t0, {}, None, None, parent=parent)
        write_result(run_dir, result)
        return result


def run_children(cfg: RunConfig, results_dir: str | Path, *, progress: Progress | None = None) -> list[RunResult]:
    """The derived runs of ``cfg``'s compress steps, beside its (finished) parent; finished ones are kept."""
    from nluforge.results import read_result

    out = []
    for child in cfg.children():
        path = Path(results_dir) / child.run_id()
        if (path / "result.json").is_file() and read_result(path).run_info.status == "completed":
            out.append(read_result(path))
            continue
        out.append(run_cell(child, results_dir, progress=progress))
    return out
