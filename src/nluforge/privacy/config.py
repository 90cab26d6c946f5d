"""Typed options of ``dp_sgd`` and of the ``loss`` / ``lira`` audits (no torch, no opacus)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nluforge.core.errors import UserError

# DP defaults after Li et al. 2022 (Section 3 and Table 8: large batches, a few epochs, a higher
# learning rate than non-private fine-tuning, small clipping norm); applied when the user sets none.
DP_DEFAULT_BATCH = 1024  # logical (expected) batch; capped so that an epoch has at least 10 steps
DP_DEFAULT_EPOCHS = 3.0
# Departure from Li et al.'s fixed 3 epochs: their datasets (SST-2's 67k and up) give at least ~200
# steps of 1,024 in 3 epochs. On less data 3 epochs are too few steps: on 19,500 SST-2 examples at
# eps = 8, LoRA reached 75.6% dev in 3 epochs (60 steps, sigma 0.71) and 79.9% in 10 (200 steps, sigma
# 0.86; BENCHMARKS.md, privacy, session 10): more steps cost little extra noise per step. So the
# default is 3 epochs or the epochs that make DP_DEFAULT_STEPS steps, whichever is more.
DP_DEFAULT_STEPS = 200
DP_DEFAULT_LR = {"full": 5e-4, "bitfit": 5e-3, "lora": 2e-3}
# Departure from Li et al.'s C = 0.1: with the encoder's own mean pooling, a per-example gradient's norm
# is mostly the classifier's ((p - y) times the pooled feature, norm 4-7 here), so at C = 0.1 even an
# example classified at p = 0.99 is clipped to full length: the loss stops limiting itself, every
# example keeps pushing the logits apart, and under AdamW the training loss climbs above chance (LoRA,
# SST-2, measured: BENCHMARKS.md, privacy). At C = 1 examples past p ~ 0.86 fall under the threshold
# again. For the examples still clipped, signal and noise both scale with C, and AdamW ignores a common
# scale.
DP_DEFAULT_MAX_GRAD_NORM = 1.0


@dataclass
class DpSgdConfig:
    """DP-SGD. ``epsilon``/``delta``: the budget reached at the end of training (noise calibrated to it).

    ``clipping``: ``flat`` (one norm over all trainable parameters, threshold ``max_grad_norm``),
    ``per_layer`` (each parameter tensor its own threshold, ``max_grad_norm / sqrt(P)`` by default, as
    Opacus splits it) or ``group`` (``groups``: ``blocks`` = one group per transformer block plus one
    for everything else, or a list of regular expressions over parameter names, first match wins,
    unmatched parameters form a last group; thresholds ``group_max_grad_norm`` or an equal split of
    ``max_grad_norm``). ``grad_sample_mode``: ``hooks`` (per-sample gradients) or ``ghost`` (ghost
    clipping: per-sample norms only, flat clipping only). ``batch_size``/``epochs``/``lr``: the DP
    training's own settings; None takes the train section's when set there, else Li et al.'s defaults.
    ``physical_batch_size``: examples per forward/backward (virtual batches bound the memory).
    """

    epsilon: float = 8.0
    delta: float | None = None  # None: 1 / (10 n), n = training examples
    max_grad_norm: float = DP_DEFAULT_MAX_GRAD_NORM
    clipping: Literal["flat", "per_layer", "group"] = "flat"
    groups: str | list[str] | None = None
    group_max_grad_norm: list[float] | None = None
    grad_sample_mode: Literal["hooks", "ghost"] = "hooks"
    accountant: Literal["rdp", "prv"] = "rdp"
    batch_size: int | None = None
    epochs: float | None = None
    lr: float | None = None
    physical_batch_size: int = 32

    def __post_init__(self):
        if not self.epsilon > 0:
            raise UserError(f"privacy epsilon must be > 0, got {self.epsilon}; give e.g. --dp-epsilon 8")
        if self.delta is not None and not 0 < self.delta < 1:
            raise UserError(f"privacy delta must be in (0, 1/n), got {self.delta}; e.g. --dp-delta 1e-5")
        if not self.max_grad_norm > 0:
            raise UserError(f"privacy max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.clipping == "group" and not self.groups:
            raise UserError("privacy clipping 'group' needs groups: 'blocks' or a list of parameter-name patterns")
        if self.clipping != "group" and (self.groups or self.group_max_grad_norm):
            raise UserError(f"privacy groups / group_max_grad_norm are for clipping 'group', not '{self.clipping}'")
        if isinstance(self.groups, str) and self.groups != "blocks":
            raise UserError(f"privacy groups must be 'blocks' or a list of patterns, got '{self.groups}'")
        if self.grad_sample_mode == "ghost" and self.clipping != "flat":
            raise UserError(f"ghost clipping supports clipping 'flat' only (one reweighted backward pass per "
                            f"batch), got '{self.clipping}'; use grad_sample_mode 'hooks' for it")
        for name in ("batch_size", "physical_batch_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"privacy {name} must be a positive integer, got {value}")
        if (self.epochs is not None and self.epochs <= 0) or (self.lr is not None and self.lr <= 0):
            raise UserError("privacy epochs and lr must be positive")


@dataclass
class LossAuditConfig:
    """Loss threshold: an example is called a member when the model's loss on it is low."""

    max_examples: int | None = None  # per side (members, non-members); None: the whole recorded split


@dataclass
class LiraAuditConfig:
    """LiRA: ``shadows`` models trained with the run's config on random halves of the audit pool."""

    shadows: int = 4
    seed: int = 0
    max_examples: int | None = None

    def __post_init__(self):
        if self.shadows < 2 or self.shadows % 2:
            raise UserError(f"lira shadows must be an even number >= 2 (each example is in half of them), "
                            f"got {self.shadows}")
