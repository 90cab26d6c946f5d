"""The ``structured`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nluforge.core.errors import UserError


@dataclass
class StructuredConfig:
    """Remove a fraction of the attention heads and of the FFN neurons, the least important first.

    ``heads``, ``neurons``: fractions in [0, 1) removed, ranked over all layers together (every layer
    keeps at least one head and one neuron). The model becomes physically smaller and faster; accuracy
    falls faster than with quantization at the same size, since nothing is retrained.
    ``calibration_examples``: how many of the parent's training examples score the importance (more:
    a steadier ranking, a slower compression); ``batch_size``: examples per scoring pass.
    ``finetune_steps`` / ``finetune_lr``: optional recovery fine-tuning on the parent's training data
    after pruning, through the training stage (0: none; lr None: the method's default learning rate).
    """

    method: ClassVar[str] = "structured"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes
    CALIBRATION: ClassVar[bool] = True  # compress() needs labelled batches (derived runs pass the train split's)

    heads: float = 0.25
    neurons: float = 0.25
    calibration_examples: int = 256
    batch_size: int = 16
    finetune_steps: int = 0
    finetune_lr: float | None = None

    def __post_init__(self):
        for name in ("heads", "neurons"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"structured: {name} must be in [0, 1) (the fraction removed), got "
                                f"{getattr(self, name)}")
        if self.heads == 0 and self.neurons == 0:
            raise UserError("structured: heads and neurons are both 0, nothing to prune; set one of them > 0")
        if self.calibration_examples < 1 or self.batch_size < 1:
            raise UserError(f"structured: calibration_examples and batch_size must be >= 1, got "
                            f"{self.calibration_examples} and {self.batch_size}")
        if self.finetune_steps < 0:
            raise UserError(f"structured: finetune_steps must be >= 0 (recovery fine-tuning steps), got {self.finetune_steps}")
