"""The state one run's stages share: what ``prepare`` built, then what each stage adds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nluforge.experiments.config import RunConfig


@dataclass
class Prepared:
    """A run ready to train: data, tokenizer and adapted model, all in memory."""

    cfg: RunConfig
    spec: Any  # nluforge.tasks.TaskSpec
    splits: dict[str, Any]  # split name → nluforge.tasks.Split (train and evaluation splits)
    tokenizer: Any
    model: Any
    method: Any  # the method module
    method_cfg: Any
    notes: list[str]
    unlabeled: list[tuple[str, ...]] | None = None  # prompt_based distill: texts to soft-label (PET)
    sections: Any = None  # nluforge.experiments.sections.Sections (typed method/optimizer/steps/privacy)
    audit_split: dict[str, Any] | None = None  # membership audits: members / non-members (experiments.audit)
    parent: Any = None  # derived runs: nluforge.experiments.servable.Servable of the parent run
    distill: Any = None  # distill derived runs: nluforge.experiments.distillation.Plan (students, options)


@dataclass
class RunState:
    """One run in flight. Stages read what earlier stages left and add their own fields."""

    prep: Prepared
    run_dir: Path
    resume: bool = False
    show_progress: bool = True
    started: str = ""
    t0: float = field(default_factory=time.perf_counter)
    names: list[str] = field(default_factory=list)  # evaluation splits
    encoded: dict[str, Any] = field(default_factory=dict)  # split → Encoded
    model: Any = None  # the run's model as it stands after the latest stage
    device: Any = None
    accelerator: Any = None
    fit: Any = None  # FitResult (the whole recipe's, after PET distillation)
    peak: Any = None  # peak training memory (PeakMemory-like: .mb, .kind)
    ckpt_mb: float | None = None
    model_dir: Path | None = None
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    cost: Any = None  # nluforge.results.Cost
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> RunConfig:
        return self.prep.cfg
