"""The ``int8_dynamic`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from nluforge.core.errors import UserError


@dataclass
class Int8DynamicConfig:
    """Dynamic int8 quantization (Q8BERT-style).

    ``embeddings``: also store nn.Embedding tables in 8 bits (one scale per row). On MiniLM the word
    embeddings are half the parameters, so this is most of the size saving; it costs no speed.
    ``skip``: module names (exact, or a prefix ending in ``.``) to keep in fp32, e.g. ``[classifier]``.
    ``per_channel``: one scale per output row of each linear's weight (torch's
    ``per_channel_dynamic_qconfig``) instead of one per matrix (Q8BERT's scheme).
    ``activation_bits``: 8 (the full uint8 range) or 7 (torch's default ``reduce_range``, which keeps
    the u8×s8 products of AVX2-only kernels from saturating their int16 sums; CPUs with AVX512-VNNI or
    AVX-VNNI do not saturate). On the full-SST-2 parent (dev 90.71): per tensor with 7 bits 87.16, per
    channel with 7 bits 88.65, per channel with 8 bits 90.60 (BENCHMARKS.md).
    """

    method: ClassVar[str] = "int8_dynamic"
    VERSION: ClassVar[int] = 2  # the on-disk format; bump when it changes (2: per-channel scales, activation_bits)

    embeddings: bool = True
    skip: list[str] = field(default_factory=list)
    per_channel: bool = True
    activation_bits: int = 8

    def __post_init__(self):
        if self.activation_bits not in (7, 8):
            raise UserError(f"int8_dynamic: activation_bits must be 7 or 8, got {self.activation_bits}")
