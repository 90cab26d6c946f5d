"""The ``random_masks`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from nluforge.core.errors import UserError


@dataclass
class RandomMasksConfig:
    """Zero a random ``sparsity`` of each targeted weight tensor; of ``candidates`` such masks, keep the one
    with the lowest task loss on calibration examples from the parent's train split.

    A baseline for ``magnitude``: it says how much of magnitude pruning's result is the ranking and how
    much is merely the sparsity. More ``candidates``: a better mask, ``candidates`` evaluation passes.
    ``seed``: the masks drawn (candidate ``i`` uses ``seed + i``). ``embeddings``, ``skip``: as ``magnitude``.
    ``finetune_steps`` / ``finetune_lr``: optional recovery fine-tuning on the parent's training data
    after pruning, through the training stage (0: none; lr None: the method's default learning rate).
    """

    method: ClassVar[str] = "random_masks"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes
    CALIBRATION: ClassVar[bool] = True  # compress() needs labelled batches (derived runs pass the train split's)

    sparsity: float = 0.5
    candidates: int = 8
    seed: int = 0
    embeddings: bool = False
    skip: list[str] = field(default_factory=lambda: ["classifier"])
    calibration_examples: int = 128
    batch_size: int = 16
    finetune_steps: int = 0
    finetune_lr: float | None = None

    def __post_init__(self):
        if not 0 <= self.sparsity < 1:
            raise UserError(f"random_masks: sparsity must be in [0, 1) (the fraction of weights set to zero), "
                            f"got {self.sparsity}")
        if self.candidates < 1:
            raise UserError(f"random_masks: candidates must be >= 1, got {self.candidates}")
        if self.calibration_examples < 1 or self.batch_size < 1:
            raise UserError(f"random_masks: calibration_examples and batch_size must be >= 1, got "
                            f"{self.calibration_examples} and {self.batch_size}")
        if self.finetune_steps < 0:
            raise UserError(f"random_masks: finetune_steps must be >= 0 (recovery fine-tuning steps), got {self.finetune_steps}")
