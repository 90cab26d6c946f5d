"""The servable model of any finished run: every method's saved form, and derived (compressed, distilled) runs.

:func:`load_servable` is the one way back from a run directory to a model that predicts: ``nluforge
eval``, ``nluforge compress`` and derived runs all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.experiments.config import RunConfig, read_run_config
from nluforge.results import RunResult


@dataclass
class Servable:
    """A finished run's model, ready to predict, with what it needs to read inputs."""

    run_dir: Path
    cfg: RunConfig
    spec: Any  # nluforge.tasks.TaskSpec
    tokenizer: Any
    model: Any  # in eval mode
    method: Any  # the method module
    method_cfg: Any
    result: RunResult | None  # the run's result.json (None when it has none)
    compressed: bool  # the model folder holds a compressed model (a derived run)

    @property
    def parent(self) -> str | None:
        return self.result.run_info.parent if self.result else None

    @property
    def step(self) -> str | None:
        return self.result.run_info.step if self.result else None


def read_run_result(run_dir: Path) -> RunResult | None:
    from nluforge.results import read_result

    return read_result(run_dir) if (run_dir / "result.json").is_file() else None


def finished_parent(parent_dir: Path):
    """The parent's result; UserError unless it is a finished, completed run."""
    result = read_run_result(parent_dir) if (parent_dir / "config.yaml").is_file() else None
    if result is None:
        raise UserError(f"{parent_dir} is not a finished run (no result.json); train it first")
    if result.run_info.status != "completed":
        raise UserError(f"parent run {parent_dir.name} {result.run_info.status}: {result.run_info.error}; "
                        "fix and rerun it before deriving from it")
    return result


def load_servable(run_dir: str | Path, *, model_dir: str | Path | None = None) -> Servable:
    """Rebuild a finished run's model from its ``config.yaml`` and ``model/`` folder."""
    from nluforge.compress import is_compressed, load_compressed
    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    model_dir = Path(model_dir) if model_dir else run_dir / "model"
    if not model_dir.is_dir():
        raise UserError(f"{run_dir} has no saved model (model/ is missing); did the run finish?")
    spec = get_task(cfg.task) if cfg.task != "custom" else custom_run_spec(run_dir, cfg, model_dir)
    distilled = cfg.step_kind() == "distill"  # a distilled student is a plain, fully trained classifier
    module = method_module("full" if distilled else cfg.method)
    method_cfg = method_config("full", {}) if distilled else method_config(cfg.method, cfg.method_params)
    tokenizer = run_tokenizer(model_dir, cfg.model)
    compressed = is_compressed(model_dir)
    try:
        if distilled:
            model = load_student(model_dir)
        elif compressed:  # the parent's structure, freshly adapted, then the compressed weights over it
            model = load_compressed(model_dir, _structure(cfg, spec, module, method_cfg, tokenizer))
        else:
            model = _load_method_model(model_dir, cfg, spec, module, method_cfg, tokenizer)
    except UserError:
        raise
    except Exception as err:  # safetensors, peft and transformers each raise their own types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"the saved model in {model_dir} is corrupt or does not match the run's config "
                        f"({first}); retrain the run") from None
    return Servable(run_dir, cfg, spec, tokenizer, model.eval(), module, method_cfg, read_run_result(run_dir),
                    compressed)


def custom_run_spec(run_dir: Path, cfg: RunConfig, model_dir: Path | None = None):
    """A custom-task run's spec from what it recorded (``model/task.json``; older runs: its train file)."""
    from nluforge.tasks.custom import run_task_spec

    return run_task_spec(Path(model_dir) if model_dir else Path(run_dir) / "model",
                         train_file=cfg.data.train_file, text_fields=cfg.data.text_fields,
                         label_field=cfg.data.label_field)


def _base_model(cfg: RunConfig, spec, module):
    from nluforge.models.loading import load_model

    return load_model(cfg.model, num_labels=spec.num_labels, label_names=spec.label_names,
                      head=getattr(module, "HEAD", "sequence_classification"), pooling=cfg.pooling)


def _structure(cfg: RunConfig, spec, module, method_cfg, tokenizer):
    """The servable model's module structure (its weights are about to be overwritten)."""
    if getattr(method_cfg, "distill", False):  # PET: the run serves the distilled classifier
        return distilled_classifier(cfg, spec)
    return module.adapt(_base_model(cfg, spec, module), method_cfg, tokenizer=tokenizer, task=spec)


def distilled_classifier(cfg: RunConfig, spec):
    """A PET-distilled run's model (fresh): a plain sequence classifier of the run's base model."""
    from nluforge.models.loading import load_model

    return load_model(cfg.model, num_labels=spec.num_labels, label_names=spec.label_names, pooling=cfg.pooling)


def _load_method_model(model_dir: Path, cfg: RunConfig, spec, module, method_cfg, tokenizer):
    from nluforge.methods import base

    base_model = _base_model(cfg, spec, module)
    loader = getattr(module, "load", None)
    if loader is not None:
        return loader(model_dir, base_model, method_cfg, tokenizer=tokenizer, task=spec)
    return base.load(model_dir, base_model, method_cfg, module.adapt, tokenizer=tokenizer, task=spec)


def run_tokenizer(model_dir: Path, model: str):
    """The tokenizer saved with the run (adapter folders have no config.json), else the model's."""
    from transformers import AutoTokenizer

    from nluforge.models.loading import load_tokenizer, quiet_transformers

    if (Path(model_dir) / "tokenizer_config.json").is_file():
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(model_dir))
    return load_tokenizer(model)


def load_student(model_dir: Path):
    """A distilled run's saved student: a plain sequence classifier with its pooling re-applied."""
    from transformers import AutoModelForSequenceClassification

    from nluforge.models.loading import quiet_transformers
    from nluforge.models.pooling import restore_pooling

    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    return restore_pooling(model)
