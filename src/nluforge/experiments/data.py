"""A run's data: the task's splits as the config asks for them, and their encoding for the model."""

from __future__ import annotations

from typing import Any

from nluforge.core.errors import UserError
from nluforge.experiments.config import RunConfig


def task_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """``load_task`` keyword arguments of a run config."""
    d = cfg.data
    return dict(data_dir=d.data_dir, train_file=d.train_file, validation_file=d.validation_file,
                test_file=d.test_file, text_fields=d.text_fields, label_field=d.label_field,
                max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples,
                k_shot=d.k_shot, seed=cfg.seed, advglue_file=cfg.eval.advglue_file)


def load_data(cfg: RunConfig, *, train: bool = True, spec=None):
    """The task's train split (unless ``train=False``) and its evaluation splits (plus AdvGLUE sets, when
    found); returns ``(spec, splits, notes)``. ``spec``: the task as a finished run recorded it (a custom
    task's labels come from its ``model/task.json``, not from the files again)."""
    from nluforge.tasks import get_task, load_task

    kwargs = task_kwargs(cfg)
    if not train:
        known = spec or get_task(cfg.task)
        kwargs["splits"] = list(cfg.eval.splits or known.eval_splits)
    data = load_task(spec or cfg.task, **kwargs)
    spec = data.spec
    if spec.eval_only:
        raise UserError(f"task '{cfg.task}' is evaluation-only; train on '{spec.base}' and evaluate with "
                        f"`nluforge eval RUN --task {cfg.task}`")
    if train and "train" not in data.splits:
        raise UserError(f"task '{cfg.task}' has no train split; give --train-file or a GLUE --data-dir")
    splits = dict(data.splits)
    notes: list[str] = list(data.notes)
    if cfg.eval.advglue:
        for adv in spec.advglue:
            try:
                adv_data = load_task(get_task(adv), data_dir=cfg.data.data_dir, advglue_file=cfg.eval.advglue_file)
                splits[adv] = adv_data.splits["validation"]
            except UserError as err:
                notes.append(f"{adv} not evaluated: {err}")
    return spec, splits, notes


def eval_split_names(cfg: RunConfig, spec, splits: dict[str, Any]) -> list[str]:
    """The splits a run is evaluated on: the configured (or the task's dev) splits, then AdvGLUE's."""
    names = list(cfg.eval.splits or spec.eval_splits)
    missing = [n for n in names if n not in splits]
    if missing:
        raise UserError(f"task '{spec.name}' has no split '{missing[0]}'; available: {', '.join(splits)}")
    return names + [n for n in spec.advglue if n in splits]


def encode_splits(prep, names: list[str]):
    """Tokenize the named splits of a prepared run."""
    from nluforge.models.inputs import encode

    return {n: encode(prep.splits[n].texts, prep.splits[n].labels, prep.tokenizer, prep.cfg.data.max_length)
            for n in names}
