"""Derived runs: a step (compression, or distillation: :mod:`nluforge.experiments.distillation`) applied to a finished run's model, recorded as its own run.

A derived run has its own directory beside its parent's, named ``<parent slug>-<step>--<hash8>``, and
its own ``result.json`` with ``run_info.parent`` (the parent's directory name) and ``run_info.step``
(``compress:int8_dynamic``). Its config is the parent's with ``compress: [that step]``. Its stages:

    load (the parent's servable model, :func:`prepare_derived`) → compress → save → evaluate → measure

The metrics are the compressed model's own, on the parent's evaluation splits (``metrics["trained"]``,
so reports read every run alike); ``meta["parent"]`` holds the parent's metrics and cost beside them.
The cost's training fields are the parent's (the child costs no training); size on disk and latency
are the child's own. The grid expands a config's compress steps into one derived run per step, so N
trainings and M steps cost N trainings; each derived run resumes (is skipped) on its own.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.experiments.config import RunConfig
from nluforge.experiments.state import Prepared, RunState


def prepare_derived(cfg: RunConfig, parent_dir: Path) -> Prepared:
    """Validate the step, check the parent finished, load its servable model and eval data; writes nothing."""
    from nluforge.compress import needs_calibration
    from nluforge.experiments.data import eval_split_names, load_data
    from nluforge.experiments.sections import resolve_sections
    from nluforge.experiments.servable import finished_parent, load_servable

    if cfg.step() is None:
        raise UserError("a derived run needs exactly one compress or distill step, got "
                        f"{len(cfg.compress) + len(cfg.distill)}")
    if cfg.step_kind() == "distill":
        from nluforge.experiments.distillation import prepare_distill

        return prepare_distill(cfg, parent_dir)
    sections = resolve_sections(cfg)  # an unknown compressor or option fails here, in a second
    finished_parent(parent_dir)
    parent = load_servable(parent_dir)
    # a compressor that scores the model (structured pruning) takes labelled batches from the train split,
    # and so does recovery fine-tuning; a custom task's labels are the parent's recorded ones
    step_cfg = sections.compress[0].config
    spec, splits, notes = load_data(cfg, train=needs_calibration(step_cfg) or finetune_steps(step_cfg) > 0,
                                    spec=parent.spec if cfg.task == "custom" else None)
    eval_split_names(cfg, spec, splits)
    return Prepared(cfg, spec, splits, parent.tokenizer, parent.model, parent.method, parent.method_cfg, notes,
                    sections=sections, parent=parent)


def prepare_parent_first(cfg: RunConfig, results_dir: Path, run_cell: Callable, progress) -> Prepared:
    """:func:`prepare_derived`, training the parent first (with ``run_cell``) when it has no result yet."""
    from nluforge.experiments.sections import resolve_sections

    resolve_sections(cfg)  # fail fast, before training a parent for a step that cannot run
    parent_dir = results_dir / cfg.parent().run_id()
    if not (parent_dir / "result.json").is_file():
        run_cell(cfg.parent(), results_dir, progress=progress)
    return prepare_derived(cfg, parent_dir)


def calibration_batches(state: RunState, config) -> list | None:
    """``config.calibration_examples`` labelled training examples (a seeded sample), in length-sorted
    batches of ``config.batch_size``, for compressors that score the model first; None for the others."""
    import random

    from nluforge.compress import needs_calibration
    from nluforge.models.inputs import collate, encode, eval_batches

    if not needs_calibration(config):
        return None
    train, prep = state.prep.splits["train"], state.prep
    picked = sorted(random.Random(state.cfg.seed).sample(range(len(train.texts)),
                                                         min(config.calibration_examples, len(train.texts))))
    enc = encode([train.texts[i] for i in picked], [train.labels[i] for i in picked], prep.tokenizer,
                 state.cfg.data.max_length)
    return [collate(enc, idx, prep.tokenizer.pad_token_id, regression=prep.spec.is_regression)
            for idx in eval_batches(enc.lengths(), config.batch_size)]


def finetune_steps(config) -> int:
    """The recovery fine-tuning steps a compressor config asks for (0: none; only pruners have the option)."""
    return int(getattr(config, "finetune_steps", 0) or 0)


def compress_stage(state: RunState) -> None:
    import torch

    from nluforge.compress import compress

    step = state.prep.sections.compress[0]
    t0 = time.perf_counter()
    try:
        state.model = compress(state.model, step.config, calibration=calibration_batches(state, step.config))
    except UserError as err:  # name the combination: the compressor may not apply to this method's model
        raise UserError(f"compress:{step.method} on a {state.cfg.method} run: {err}") from None
    state.meta["compress"] = {"method": step.method, "options": step.options(),
                              "time_s": round(time.perf_counter() - t0, 3)}
    if finetune_steps(step.config) > 0:
        state.meta["compress"]["finetune"] = recover(state, step.config)
    state.device = torch.device("cpu")  # compressed models here are CPU inference models


def recover(state: RunState, config) -> dict:
    """Recovery fine-tuning of the pruned model through the spine's training stage, on the parent's
    training data: ``config.finetune_steps`` steps at ``config.finetune_lr`` (None: the method's default).

    Every weight trains (a merged LoRA's base too). Zeros stay zeros: after each update the pruned
    weights are set back to 0 (unstructured pruning keeps its sparsity and its sparse storage); a
    structurally pruned model is already smaller and stays so. No best-checkpoint reload: the run keeps
    the weights of the last step.
    """
    import torch

    from nluforge.experiments.stages import learning_rate, train_stage
    from nluforge.models.inputs import encode
    from nluforge.train.loop import default_update_step

    model, cfg = state.model, state.cfg
    train = state.prep.splits["train"]
    enc = encode(train.texts, train.labels, state.prep.tokenizer, cfg.data.max_length)
    zeros = {p: p.detach() == 0 for p in model.parameters() if p.dim() >= 2 and bool((p.detach() == 0).any())}
    for p in model.parameters():
        p.requires_grad_(True)

    def update_step(m, batch, ctx):
        loss = default_update_step(m, batch, ctx)
        with torch.no_grad():
            for p, mask in zeros.items():
                p.masked_fill_(mask, 0.0)
        return loss

    train_cfg = dataclasses.replace(cfg.train, max_steps=config.finetune_steps, keep_best=False,
                                    early_stopping_patience=None, checkpoint_every=None)
    lr = config.finetune_lr or learning_rate(state.prep)
    done = train_stage(state, model=model, train=enc, train_cfg=train_cfg, lr=lr, update_step=update_step,
                       checkpoint_dir=state.run_dir / "checkpoints", log_fields={"stage": "recovery"})
    state.model = done.model.to("cpu").eval()
    for p in state.model.parameters():
        p.requires_grad_(False)
    return {"steps": done.fit.steps, "lr": lr, "examples": done.fit.examples_seen,
            "time_s": round(done.fit.train_time_s, 3)}


def save_stage(state: RunState) -> None:
    """``model/``: the compressed weights, their manifest and the tokenizer, renamed into place."""
    import tempfile

    from nluforge.compress import save_compressed
    from nluforge.core.io import atomic_replace_dir
    from nluforge.models.loading import quiet_transformers
    from nluforge.tasks.custom import write_task_record

    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=state.run_dir))
    save_compressed(state.model, state.prep.sections.compress[0].config, tmp)
    with quiet_transformers():
        state.prep.tokenizer.save_pretrained(tmp)
    write_task_record(tmp, state.prep.spec)  # the labels the model predicts (custom tasks)
    state.model_dir = atomic_replace_dir(tmp, state.run_dir / "model")


def measure_stage(state: RunState) -> None:
    """The child's own size and latency; training cost fields from the parent; the parent's figures in meta."""
    from nluforge.experiments.stages import latency_ms
    from nluforge.models.loading import dir_size_mb
    from nluforge.models.params import size_figures
    from nluforge.results import Cost

    parent = state.prep.parent
    pcost = parent.result.cost if parent.result else Cost()
    lat = latency_ms(state.prep, state.model, state.encoded[state.names[0]])
    size = round(dir_size_mb(state.model_dir), 3)
    own = {"latency_ms_bs1": lat.get(1), "latency_ms_bs32": lat.get(32), "model_size_mb": size,
           "checkpoint_size_mb": None}
    # every weight is re-stored in the compressed folder: it ships alone, nothing on top of the base model
    alone = size_figures(state.model_dir).standalone_mb  # tokenizer files left out, as for trained runs
    own |= {"delta_size_mb": alone, "standalone_size_mb": alone}
    state.cost = dataclasses.replace(pcost, **own)
    state.meta["parent"] = {"run": parent.run_dir.name,
                            "metrics": (parent.result.metrics.get("trained") if parent.result else None),
                            "cost": dataclasses.asdict(pcost)}
