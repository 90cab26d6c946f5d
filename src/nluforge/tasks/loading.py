"""``load_task``: one entry point from a task name (or spec, or files) to its labelled splits.

Source resolution, first match wins:

1. explicit files (``train_file`` / ``validation_file`` / ``test_file``): CSV, TSV or JSONL, for a
   registered task or for ``task="custom"`` (label set inferred, see :mod:`nluforge.tasks.custom`);
2. AdvGLUE tasks: the local ``dev.json(.gz)`` found by :func:`nluforge.tasks.advglue.find_advglue_file`;
3. ``data_dir``, else ``$NLUFORGE_DATA_DIR``: a local GLUE TSV folder (:mod:`nluforge.tasks.glue_dir`);
4. the Hugging Face Hub (:mod:`nluforge.tasks.hub`), which fails fast, in one line, when offline.

Then sampling: ``k_shot`` or ``max_train_samples`` on train, ``max_eval_samples`` on every other
split, all seeded by ``seed`` (:mod:`nluforge.tasks.sampling`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.core.registry import suggest
from nluforge.tasks import sampling
from nluforge.tasks.advglue import DATA_DIR_ENV, find_advglue_file, load_advglue
from nluforge.tasks.custom import load_files
from nluforge.tasks.data import Split, TaskData
from nluforge.tasks.glue_dir import load_glue_dir
from nluforge.tasks.spec import TaskSpec, get_task, load_spec

log = logging.getLogger("nluforge.tasks")
PathLike = str | Path


def resolve_spec(task: str | TaskSpec) -> TaskSpec | None:
    """A registered name, a spec YAML path, a :class:`TaskSpec`, or ``"custom"`` (→ None)."""
    if isinstance(task, TaskSpec):
        return task
    if task.lower() == "custom":
        return None
    if task.endswith((".yaml", ".yml")):
        return load_spec(task)
    return get_task(task)


def available_splits(spec: TaskSpec) -> list[str]:
    return [*([] if spec.eval_only else ["train"]), *spec.eval_splits]


def _chosen(wanted: list[str] | None, available: list[str], task: str) -> list[str]:
    """``wanted`` checked against ``available`` (default: all of them)."""
    if wanted is None:
        return available
    for name in wanted:
        if name not in available:
            raise UserError(
                f"{task} has no split '{name}'{suggest(name, available)}; available: {', '.join(available)}"
            )
    return list(wanted)


def _from_files(
    spec, files, splits, text_fields, label_field
) -> tuple[TaskSpec, dict[str, Split], list[str]]:
    """Explicit files: map train/validation/test to split names, read them."""
    if spec is not None and spec.eval_only and "train" in files:
        raise UserError(f"{spec.name} is evaluation-only: it takes no train_file")
    eval_name = spec.eval_splits[0] if spec is not None else "validation"
    named = {{"validation": eval_name}.get(k, k): Path(p) for k, p in files.items()}
    named = {k: named[k] for k in _chosen(splits, list(named), spec.name if spec else "custom task")}
    spec, loaded, notes = load_files(spec, named, text_fields=text_fields, label_field=label_field)
    if eval_name in loaded:
        spec = dataclasses.replace(spec, eval_splits=(eval_name,))
    return spec, loaded, notes


def _from_source(
    spec: TaskSpec, splits: list[str] | None, data_dir, advglue_file
) -> tuple[dict, list[str], str]:
    """No explicit files: AdvGLUE file, local GLUE folder, or the Hub."""
    chosen = _chosen(splits, available_splits(spec), spec.name)
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if spec.source.advglue_key:
        path = find_advglue_file(advglue_file, data_dir)
        if path is not None:
            return {"validation": load_advglue(spec, path)}, [], f"advglue:{path}"
    elif data_dir and spec.source.glue_dir:
        root = Path(data_dir).expanduser()
        loaded, notes = load_glue_dir(spec, root, chosen)
        return loaded, notes, f"glue_tsv:{root}"
    if not spec.source.hub:
        raise UserError(
            f"{spec.name} has no data source: give --data-dir DIR or --train-file/--validation-file"
        )
    from nluforge.tasks.hub import load_from_hub

    return load_from_hub(spec, chosen), [], f"hub:{spec.source.hub}"


def _sample(data: TaskData, k_shot, max_train_samples, max_eval_samples, seed: int) -> TaskData:
    for name, split in data.splits.items():
        if name == "train" and k_shot:
            data.splits[name] = sampling.k_shot(split, data.spec, k_shot, seed)
        elif name == "train" and max_train_samples:
            data.splits[name] = sampling.subsample(split, max_train_samples, seed)
        elif name != "train" and max_eval_samples:
            data.splits[name] = sampling.subsample(split, max_eval_samples, seed)
    return data


def load_task(
    task: str | TaskSpec,
    *,
    data_dir: PathLike | None = None,
    train_file: PathLike | None = None,
    validation_file: PathLike | None = None,
    test_file: PathLike | None = None,
    text_fields: list[str] | None = None,
    label_field: str | None = None,
    splits: list[str] | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    k_shot: int | None = None,
    seed: int = 42,
    advglue_file: PathLike | None = None,
) -> TaskData:
    """Load ``task``'s labelled splits (see the module docstring for where from).

    ``splits`` picks a subset of split names (default: ``train`` and the spec's eval splits; with
    explicit files, the files given). Every problem the user can fix raises a one-line UserError.
    """
    sampling.check_counts(
        max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, k_shot=k_shot
    )
    if k_shot and max_train_samples:
        raise UserError("give k_shot or max_train_samples, not both")
    spec = resolve_spec(task)
    files = {
        k: v for k, v in (("train", train_file), ("validation", validation_file), ("test", test_file)) if v
    }
    if files:
        spec, loaded, notes = _from_files(spec, files, splits, text_fields, label_field)
        source = "files"
    elif spec is None:
        raise UserError(
            "a custom task needs its data: pass train_file/validation_file (--train-file, --validation-file)"
        )
    else:
        loaded, notes, source = _from_source(spec, splits, data_dir, advglue_file)
    data = _sample(TaskData(spec, loaded, source, notes), k_shot, max_train_samples, max_eval_samples, seed)
    log.info("%s: %s", spec.name, ", ".join(f"{n} {len(s)}" for n, s in data.splits.items()))
    return data
