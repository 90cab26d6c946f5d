"""The RunResult schema: one immutable JSON document per run.

``metrics`` is keyed by stage, then split, then metric name::

    {"trained": {"validation": {"accuracy": 0.87, "f1": 0.9}, "advglue": {"accuracy": 0.41}},
     "compressed": {...}, "attacked": {"validation": {"robust_accuracy": 0.3, "attack_success_rate": 0.6}},
     "audited": {"train": {"epsilon": 3.1, "mia_auc": 0.52}},
     "baselines": {"validation": {"logreg": {"accuracy": 0.8}, "knn": {"accuracy": 0.76}}}}

``baselines`` (frozen-embedding baselines of the base encoder) has one more level: split, then
baseline name, then metric.

Metric values are fractions in [0, 1] (accuracy, F1, MCC, correlations), never percentages.
Bump ``SCHEMA_VERSION`` when a field changes meaning; readers accept older versions they know.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

Status = Literal["completed", "failed"]


@dataclass
class RunInfo:
    id: str  # "<slug>--<hash8>", also the run directory's name
    slug: str  # human-readable: task-model-method[-...]
    status: Status
    error: str | None = None
    started: str | None = None  # ISO-8601 UTC
    finished: str | None = None
    wall_time_s: float | None = None
    schema_version: int = SCHEMA_VERSION
    parent: str | None = None  # a derived run: the parent run's directory name (a sibling in the results dir)
    step: str | None = None  # a derived run: the step that made it from the parent, e.g. "compress:int8_dynamic"


@dataclass
class Cost:
    total_params: int | None = None
    trainable_params: int | None = None
    # training peak: CUDA max allocated on GPU, process RSS on CPU; the dev evaluations made during
    # training are left out (since #14; before, an evaluation's batches could set the peak)
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None  # "cuda_max_allocated" | "process_rss"
    train_time_s: float | None = None
    train_examples_per_s: float | None = None
    train_examples: int | None = None
    latency_ms_bs1: float | None = None  # eval latency per example at batch 1
    latency_ms_bs32: float | None = None  # eval latency per example at batch 32
    model_size_mb: float | None = None  # what `model/` takes on disk
    checkpoint_size_mb: float | None = None
    # Comparable sizes (nluforge.models.params.size_figures; MB, tokenizer files excluded): what must
    # ship on top of the base model (adapter, trained biases, head; a full model: all of it), and the
    # servable model on its own (base weights + delta, or the full model). None in older results.
    delta_size_mb: float | None = None
    standalone_size_mb: float | None = None
    # Training memory by part (MB; None in older results and for methods that train themselves).
    # optimizer_state_mb is counted from the optimizer's state tensors after training. The split of the
    # peak: weights (parameters and buffers), gradients (trainable parameters' size; 0 for a zeroth-order
    # optimizer), optimizer state, and what is left: activations. memory_split_kind says how the rest was
    # found: "cuda_allocated" (activations = CUDA max allocated − the counted parts) or
    # "process_rss" (activations = peak RSS − RSS when training started − gradients − optimizer state;
    # memory_runtime_mb = RSS when training started − weights: Python, torch, tokenizer and data).
    optimizer_state_mb: float | None = None
    memory_weights_mb: float | None = None
    memory_gradients_mb: float | None = None
    memory_activations_mb: float | None = None
    memory_runtime_mb: float | None = None
    memory_split_kind: str | None = None


@dataclass
class RunResult:
    run_info: RunInfo
    config: dict[str, Any]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    meta: dict[str, Any] = field(default_factory=dict)  # versions, device, cpu/gpu, threads, git

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        info = dict(data["run_info"])
        version = info.get("schema_version", 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"result schema version {version} is newer than this nluforge ({SCHEMA_VERSION})")
        return cls(
            run_info=RunInfo(**info),
            config=data.get("config", {}),
            metrics=data.get("metrics", {}),
            cost=Cost(**{k: v for k, v in data.get("cost", {}).items() if k in Cost.__dataclass_fields__}),
            meta=data.get("meta", {}),
        )
