"""The resolved run config: everything one cell of a grid (or one ``nluforge train``) needs.

Built by :func:`resolve` from defaults < YAML < command-line overrides, strictly (unknown keys are
one-line errors). Sub-configs are plain dataclasses; method, optimizer, step and privacy options stay as mappings here
and are resolved into their registries' typed configs by :func:`nluforge.experiments.sections.resolve_sections`.

Derived runs: a config with exactly one ``compress`` step *is* a derived run of its parent, the same
config with ``compress: []`` (see :meth:`RunConfig.parent`); its run directory is a sibling of the
parent's. A config with several steps expands into its parent and one derived run per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nluforge.core.config import build, merge, to_dict
from nluforge.core.errors import UserError

CONFIG_VERSION = 1


@dataclass
class DataConfig:
    """Where the task's examples come from and how many to use."""

    data_dir: str | None = None  # local GLUE TSV folder; None: $NLUFORGE_DATA_DIR, then the Hub
    train_file: str | None = None  # custom tasks: CSV/TSV/JSONL
    validation_file: str | None = None
    test_file: str | None = None
    text_fields: list[str] | None = None  # custom tasks: one or two column names
    label_field: str | None = None  # custom tasks
    max_train_samples: int | None = None  # seeded subset
    max_eval_samples: int | None = None  # seeded subset of each eval split (None: all)
    k_shot: int | None = None  # K examples per class, seeded (LM-BFF)
    max_length: int = 128  # tokens; longer inputs are truncated
    # Membership audits (nluforge.experiments.audit): reserve N seeded training examples as non-members
    # and record N members beside them; the run trains on the rest.
    audit_holdout: int | None = None
    # LiRA shadow runs only: [index, k, seed]: train on the examples of the audit pool (members and
    # non-members of the audited run) that fall in this shadow's random half.
    audit_shadow: list[int] | None = None

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples", "k_shot", "audit_holdout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"data.{name} must be a positive integer, got {value}")
        if self.max_length < 8:
            raise UserError(f"data.max_length must be at least 8 tokens, got {self.max_length}")


@dataclass
class AdversarialConfig:
    """``train.adversarial``: embedding-space adversarial training (nluforge.train.adversarial).

    ``freelb`` (Zhu et al. 2020) accumulates the gradients of ``steps`` ascent steps; ``pgd`` (Madry et
    al. 2018) trains on the last one. More steps cost a forward and backward each."""

    method: Literal["none", "freelb", "pgd"] = "none"
    steps: int = 3  # ascent steps K (FreeLB's adv-steps; 2-3 in the paper's GLUE runs)
    alpha: float = 0.1  # ascent step size (FreeLB's adv-lr)
    epsilon: float = 1.0  # radius of the perturbation ball (FreeLB's adv-max-norm); 0: unbounded
    norm: Literal["l2", "linf"] = "l2"
    init_mag: float = 0.0  # FreeLB's adv-init-mag: random start inside the ball; 0: start at zero

    def __post_init__(self):
        if self.steps < 1:
            raise UserError(f"train.adversarial.steps must be >= 1, got {self.steps}")
        if self.alpha <= 0 or self.epsilon < 0 or self.init_mag < 0:
            raise UserError("train.adversarial: alpha must be > 0, epsilon and init_mag >= 0; got "
                            f"alpha={self.alpha}, epsilon={self.epsilon}, init_mag={self.init_mag}")


@dataclass
class TrainConfig:
    """The training loop's knobs. ``lr=None`` takes the method's recommended learning rate."""

    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float | None = 1.0
    eval_every: int | None = None  # steps; None: once per epoch
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    keep_best: bool = True  # reload the best evaluated weights at the end
    # Length-grouped batches, shuffled: True sorts by length within groups of 50 batches (the
    # transformers Trainer's LengthGroupedSampler), an integer N within groups of N batches (a number
    # at least the epoch's batch count sorts the whole epoch: least padding, fastest, but 2.3 points
    # lower on SST-2 at 2k examples), False draws random batches.
    group_by_length: bool | int = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    checkpoint_every: int | None = 200  # steps between resumable checkpoints; None: only at epoch ends
    keep_checkpoints: bool = False  # keep checkpoints/ after the run completes
    # Compressed checkpoints (nluforge.train.codecs): none (fp32 safetensors) or dynaquant (delta +
    # dynamic quantization + zstd: ~20-40x smaller, lossy within a loss budget). Options in _params.
    checkpoint_codec: str = "none"
    checkpoint_codec_params: dict[str, Any] = field(default_factory=dict)
    num_threads: int | None = None  # torch intra-op threads on CPU; None: leave as is
    log_every: int = 20
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self):
        if self.epochs <= 0:
            raise UserError(f"train.epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise UserError(f"train.max_steps must be positive, got {self.max_steps}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"train.lr must be positive, got {self.lr}")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "log_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be a positive integer, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise UserError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not isinstance(self.group_by_length, bool) and self.group_by_length <= 0:
            raise UserError("train.group_by_length must be true, false or a positive number of batches per "
                            f"length-sorted group, got {self.group_by_length}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("eval_every", "early_stopping_patience", "checkpoint_every", "num_threads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"train.{name} must be a positive integer, got {value}")


@dataclass
class EvalConfig:
    splits: list[str] | None = None  # None: the task's dev split(s)
    advglue: bool = True  # also evaluate on AdvGLUE when the task has a set and it can be found
    advglue_file: str | None = None  # local AdvGLUE dev.json(.gz); None: look beside data_dir, then Hub
    latency: bool = True  # measure eval latency at batch 1 and 32
    latency_examples: int = 64
    save_predictions: bool = True
    # Frozen-embedding baselines (logreg, cosine kNN, zero-shot cosine for pair regression) of the base
    # encoder on the run's training subset, in metrics["baselines"]; computed once per task and cached
    # under <results dir>/.baselines/ (experiments/baselines.py). Off: no baseline rows in the report.
    baselines: bool = True


@dataclass
class PrivacyConfig:
    """Differentially private training, resolved through the privacy registry; empty by default."""

    method: str | None = None  # e.g. a DP-SGD implementation, when one is registered
    params: dict[str, Any] = field(default_factory=dict)

    def is_set(self) -> bool:
        return self.method is not None or bool(self.params)


@dataclass
class RunConfig:
    """One run: a task, a model, a method and how to train and measure it."""

    task: str = "sst2"
    model: str = "default"
    # What the sequence-classification head reads: auto follows the checkpoint (a sentence-transformers
    # model's own Pooling config, e.g. mean for `default`; else the architecture's [CLS] pooler).
    pooling: Literal["auto", "cls", "mean", "max"] = "auto"
    method: str = "full"
    method_params: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adamw"
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compress: list[dict[str, Any]] = field(default_factory=list)  # compression steps, in order
    # distillation steps ({student: layers:3 | MODEL, <options>}): each a derived run whose teacher is the parent
    distill: list[dict[str, Any]] = field(default_factory=list)
    attack: list[dict[str, Any]] = field(default_factory=list)  # robustness evaluations
    audit: list[dict[str, Any]] = field(default_factory=list)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    name: str | None = None  # optional human label for the run
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def parent(self) -> RunConfig:
        """The trained run this config derives from (itself, when it has no compress or distill step)."""
        return dataclasses.replace(self, compress=[], distill=[]) if self.compress or self.distill else self

    def children(self) -> list[RunConfig]:
        """One derived run per compress step, then one per distill step (none without steps)."""
        return ([dataclasses.replace(self, compress=[step], distill=[]) for step in self.compress]
                + [dataclasses.replace(self, compress=[], distill=[step]) for step in self.distill])

    def step(self) -> dict[str, Any] | None:
        """The step of a derived run; None for a trained run (or one that expands into several)."""
        steps = self.compress + self.distill
        return steps[0] if len(steps) == 1 else None

    def step_kind(self) -> str | None:
        """``compress`` or ``distill`` for a derived run, None otherwise."""
        if self.step() is None:
            return None
        return "compress" if self.compress else "distill"

    def step_name(self) -> str | None:
        """The step's name: the compressor (``int8_dynamic``) or the student (``layers:3``)."""
        step = self.step()
        if step is None:
            return None
        return str(step.get("method", "step") if self.compress else step.get("student", "layers:3"))

    def step_label(self) -> str | None:
        return f"{self.step_kind()}:{self.step_name()}" if self.step() is not None else None

    def slug(self) -> str:
        model = re.sub(r"[^A-Za-z0-9]+", "-", self.model.rstrip("/").split("/")[-1]).strip("-").lower()
        parts = [self.name] if self.name else [self.task, model, self.method]
        if self.k_or_n():
            parts.append(self.k_or_n())
        parts.append(f"s{self.seed}")
        return re.sub(r"[^a-z0-9_.-]+", "-", "-".join(p for p in parts if p).lower())

    def k_or_n(self) -> str:
        if self.data.k_shot:
            return f"k{self.data.k_shot}"
        if self.data.max_train_samples:
            return f"n{self.data.max_train_samples}"
        return ""

    def hash8(self) -> str:
        """Content hash of the resolved config: same config, same run directory.

        An unset ``privacy`` section, unset ``data.audit_*``, an empty ``distill`` list,
        ``eval.baselines`` at its default (true), an unset ``train.checkpoint_codec`` and
        ``train.adversarial`` off are left out, so run ids from before they existed stay valid."""
        data = self.to_dict()
        if not self.privacy.is_set():
            del data["privacy"]
        if not self.distill:
            del data["distill"]
        if self.eval.baselines:
            del data["eval"]["baselines"]
        if self.train.checkpoint_codec == "none" and not self.train.checkpoint_codec_params:
            del data["train"]["checkpoint_codec"], data["train"]["checkpoint_codec_params"]
        if self.train.adversarial.method == "none":
            del data["train"]["adversarial"]
        for key in ("audit_holdout", "audit_shadow"):
            if data["data"][key] is None:
                del data["data"][key]
        blob = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def run_id(self) -> str:
        """``<slug>--<hash8>``; a derived run: ``<parent slug>-<step>--<hash8>``, beside its parent.
        A config with several compress steps names its parent's directory (it trains there)."""
        step = self.step()
        if step is None:
            return f"{self.parent().slug()}--{self.parent().hash8()}"
        name = self.step_name() if self.compress else f"distill-{self.step_name()}"
        name = re.sub(r"[^a-z0-9_.-]+", "-", name.lower())
        return f"{self.parent().slug()}-{name}--{self.hash8()}"


def resolve(*layers: dict[str, Any] | None) -> RunConfig:
    """Merge ``layers`` (defaults < YAML < overrides) into a strict :class:`RunConfig`."""
    return build(RunConfig, merge(*layers), where="")


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config of a run directory."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if isinstance(data, dict) and "pooling" not in data:
        data["pooling"] = "cls"  # runs from before the pooling option read the architecture's [CLS] pooler
    return resolve(data)
