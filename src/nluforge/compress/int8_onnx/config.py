"""The ``int8_onnx`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nluforge.core.errors import UserError


@dataclass
class Int8OnnxConfig:
    """Export to ONNX and quantize the weights to int8 with onnxruntime (dynamic activation quantization).

    ``per_channel``: one scale per output channel of each weight instead of one per tensor (closer to the
    fp32 model, a little larger). ``embeddings``: also quantize the embedding lookups (``Gather``); on
    MiniLM the word embeddings are half the weights. ``opset``: the ONNX opset of the export. Served by
    an onnxruntime session with as many intra-op threads as torch uses (``train.num_threads``).
    """

    method: ClassVar[str] = "int8_onnx"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes

    per_channel: bool = True
    embeddings: bool = True
    opset: int = 17

    def __post_init__(self):
        if not 13 <= self.opset <= 21:
            raise UserError(f"int8_onnx: opset must be in 13..21 (what onnxruntime's quantizer reads), got {self.opset}")
