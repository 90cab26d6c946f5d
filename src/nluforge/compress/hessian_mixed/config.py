"""The ``hessian_mixed`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from nluforge.core.errors import UserError

BITS = (2, 3, 4, 8)


@dataclass
class HessianMixedConfig:
    """Q-BERT mixed precision: sharper layers (larger top Hessian eigenvalue) get more bits.

    ``avg_bits``: the budget, the weight-count-weighted mean of the bits over the quantized weights (the
    per-group scale and offset come on top, as in ``groupwise``). ``choices``: the bit widths a layer may
    get (a subset of 2, 3, 4, 8). ``group_size``, ``embeddings``, ``skip``: as in ``groupwise``.
    ``calibration_examples`` / ``batch_size``: the parent's training examples the eigenvalues are
    estimated on (one estimate per batch: Q-BERT's mean + std over batches). ``iterations``: power
    iteration steps per batch (stops earlier when the estimate moves less than ``tol``, relative).
    """

    method: ClassVar[str] = "hessian_mixed"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes
    CALIBRATION: ClassVar[bool] = True  # compress() needs labelled batches (derived runs pass the train split's)

    avg_bits: float = 3.0
    choices: list[int] = field(default_factory=lambda: list(BITS))
    group_size: int = 128
    embeddings: bool = True
    skip: list[str] = field(default_factory=lambda: ["classifier"])
    calibration_examples: int = 64
    batch_size: int = 16
    iterations: int = 20
    tol: float = 1e-3

    def __post_init__(self):
        bad = [b for b in self.choices if b not in BITS]
        if bad or not self.choices:
            raise UserError(f"hessian_mixed: choices must be bits from {', '.join(map(str, BITS))}, got "
                            f"{self.choices}")
        if not min(self.choices) <= self.avg_bits <= max(self.choices):
            raise UserError(f"hessian_mixed: avg_bits must lie between the smallest and largest of choices "
                            f"({min(self.choices)}..{max(self.choices)}), got {self.avg_bits}")
        if self.group_size < 2:
            raise UserError(f"hessian_mixed: group_size must be >= 2 weights, got {self.group_size}")
        if self.calibration_examples < 1 or self.batch_size < 1 or self.iterations < 1:
            raise UserError("hessian_mixed: calibration_examples, batch_size and iterations must be >= 1, got "
                            f"{self.calibration_examples}, {self.batch_size}, {self.iterations}")
