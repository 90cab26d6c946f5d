"""The ``int8_dynamic`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class Int8DynamicConfig:
    """Dynamic int8 quantization (Q8BERT-style).

    ``embeddings``: also store nn.Embedding tables in 8 bits (one scale per row). On MiniLM the word
    embeddings are half the parameters, so this is most of the size saving; it costs no speed.
    ``skip``: module names (exact, or a prefix ending in ``.``) to keep in fp32, e.g. ``[classifier]``.
    ``per_channel``: one scale per output row of each linear's weight (torch's
    ``per_channel_dynamic_qconfig``) instead of one per matrix (Q8BERT's scheme).
    """

    method: ClassVar[str] = "int8_dynamic"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes

    embeddings: bool = True
    skip: list[str] = field(default_factory=list)
    per_channel: bool = False
