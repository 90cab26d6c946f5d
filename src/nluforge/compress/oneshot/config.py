"""The ``oneshot`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from nluforge.core.errors import UserError


@dataclass
class OneshotConfig:
    """Retraining-free structured pruning under a cost budget (Kwon et al. 2022).

    ``sparsity``: the fraction of the prunable cost (attention heads + FFN neurons) removed, in [0, 1).
    ``constraint``: that cost counted in ``flops`` (multiply-adds per token at ``seq_len`` tokens) or
    ``params``. ``reconstruct``: rescale the kept heads and neurons of each pruned layer by least squares
    so its output matches the unpruned model's on the calibration examples (their "mask tuning");
    ``damping``: the ridge term of that solve, relative to the mean of the Gram matrix's diagonal.
    ``calibration_examples`` / ``batch_size``: the parent's training examples scored and reconstructed
    on (the paper uses 2,000 at most; a few hundred suffice for the ranking). ``finetune_steps`` /
    ``finetune_lr``: optional recovery fine-tuning on the parent's training data afterwards (0: none;
    lr None: the method's default learning rate).
    """

    method: ClassVar[str] = "oneshot"
    VERSION: ClassVar[int] = 1  # the on-disk format (the structured layout); bump when it changes
    CALIBRATION: ClassVar[bool] = True  # compress() needs labelled batches (derived runs pass the train split's)

    sparsity: float = 0.4
    constraint: Literal["flops", "params"] = "flops"
    seq_len: int = 128
    reconstruct: bool = True
    damping: float = 1e-3
    calibration_examples: int = 256
    batch_size: int = 16
    finetune_steps: int = 0
    finetune_lr: float | None = None

    def __post_init__(self):
        if not 0 <= self.sparsity < 1:
            raise UserError(f"oneshot: sparsity must be in [0, 1) (the fraction of the heads' and neurons' cost "
                            f"removed), got {self.sparsity}")
        if self.calibration_examples < 1 or self.batch_size < 1 or self.seq_len < 1:
            raise UserError("oneshot: calibration_examples, batch_size and seq_len must be >= 1")
        if self.damping < 0 or self.finetune_steps < 0:
            raise UserError(f"oneshot: damping and finetune_steps must be >= 0, got {self.damping} and "
                            f"{self.finetune_steps}")
