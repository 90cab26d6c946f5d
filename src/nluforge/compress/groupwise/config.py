"""The ``groupwise`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from nluforge.core.errors import UserError

BITS = (2, 3, 4, 8)


@dataclass
class GroupwiseConfig:
    """Weight-only k-bit quantization, one fp16 scale and offset per group of ``group_size`` weights.

    ``bits``: 2, 3, 4 or 8; the weights take ``bits``/32 of their fp32 size, plus 32 bits per group for
    the scale and offset (4 bits and groups of 128: 4.25 bits a weight). Fewer bits or larger groups:
    smaller, and further from the original model.
    ``embeddings``: also quantize nn.Embedding tables (on MiniLM the word embeddings are half the weights).
    ``skip``: module names kept in fp32 (a name matches itself and anything below it, also under a
    wrapper's prefix); the default keeps the classification head.
    """

    method: ClassVar[str] = "groupwise"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes

    bits: int = 4
    group_size: int = 128
    embeddings: bool = True
    skip: list[str] = field(default_factory=lambda: ["classifier"])

    def __post_init__(self):
        if self.bits not in BITS:
            raise UserError(f"groupwise: bits must be one of {', '.join(map(str, BITS))}, got {self.bits}")
        if self.group_size < 2:
            raise UserError(f"groupwise: group_size must be >= 2 weights, got {self.group_size}")
