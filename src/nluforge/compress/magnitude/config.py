"""The ``magnitude`` compressor's options (no torch import: resolved while validating a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from nluforge.core.errors import UserError


@dataclass
class MagnitudeConfig:
    """Zero the smallest-magnitude weights until a fraction ``sparsity`` of them is zero.

    ``sparsity``: in [0, 1); stored sparse (a bitmask of 1 bit a weight plus the kept fp32 values), so the
    pruned weights take ``1/32 + (1 - sparsity)`` of their fp32 size: smaller from 4% sparsity on.
    ``scope``: ``global`` ranks all targeted weights together (layers that matter less lose more);
    ``layer`` prunes each weight tensor to the same sparsity.
    ``embeddings``: also prune nn.Embedding tables (off by default: a zeroed entry of a token's vector
    is lost for every use of that token, and BERT pruning studies prune the encoder's linears).
    ``skip``: module names kept whole (a name matches itself and anything below it); default the head.
    ``finetune_steps`` / ``finetune_lr``: optional recovery fine-tuning on the parent's training data
    after pruning, through the training stage (0: none; lr None: the method's default learning rate).
    """

    method: ClassVar[str] = "magnitude"
    VERSION: ClassVar[int] = 1  # the on-disk format; bump when it changes

    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    embeddings: bool = False
    skip: list[str] = field(default_factory=lambda: ["classifier"])
    finetune_steps: int = 0
    finetune_lr: float | None = None

    def __post_init__(self):
        if not 0 <= self.sparsity < 1:
            raise UserError(f"magnitude: sparsity must be in [0, 1) (the fraction of weights set to zero), "
                            f"got {self.sparsity}")
        if self.finetune_steps < 0:
            raise UserError(f"magnitude: finetune_steps must be >= 0 (recovery fine-tuning steps), got {self.finetune_steps}")
