"""8-bit AdamW: Dettmers, Lewis, Shleifer & Zettlemoyer 2022, "8-bit Optimizers via Block-wise
Quantization" (ICLR 2022).

AdamW whose two moments are stored as uint8 codes of a dynamic (non-linear) quantization map, with one
fp32 absolute maximum per block of values, so the state costs about 2 bytes per parameter instead of 8. The update itself runs in fp32 on the dequantized block.

Backends, both well-kept libraries (nothing written here): bitsandbytes ``AdamW8bit`` (runs on CPU as
well as CUDA), else torchao's ``AdamW8bit``. ``backend`` picks one (``auto``: bitsandbytes when it
imports). The backend that ran is recorded in ``optimizer.nluforge_info`` and so in the run's result.

Departures from the paper: as in bitsandbytes, tensors with fewer than ``min_8bit_size`` elements
(biases, LayerNorm weights, a 2-class head) keep fp32 state (the paper quantizes everything but
notes small tensors gain nothing); blocks of 256 values in both backends (the paper: 2,048; smaller
blocks cost 4/256 bytes per value more and track outliers better); no stable embedding layer (the paper's ``StableEmbedding`` changes
the model, which an optimizer choice here must not do). ``paged`` (paged optimizer state, swapped to
CPU memory under GPU memory pressure) needs CUDA: on CPU it is a one-line error.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from nluforge.core.errors import UserError


def check(model: nn.Module, method: str, *, paged: bool = False, backend: str = "auto", **_: Any) -> None:
    if backend not in ("auto", "bitsandbytes", "torchao"):
        raise UserError(f"adamw8bit backend '{backend}' is unknown; use auto, bitsandbytes or torchao")
    if paged and not torch.cuda.is_available():
        raise UserError("adamw8bit paged=true needs CUDA (paging swaps optimizer state between GPU and CPU "
                        "memory); drop paged or run on a GPU")
    if paged and backend == "torchao":
        raise UserError("adamw8bit paged=true is a bitsandbytes feature; use backend=bitsandbytes")


def adamw8bit(model: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
              backend: Literal["auto", "bitsandbytes", "torchao"] = "auto", paged: bool = False,
              min_8bit_size: int = 4096, block_size: int = 256):
    """``block_size`` applies to torchao only (bitsandbytes fixes its blocks at 256 values)."""
    from nluforge.optim import _param_groups

    check(model, "", paged=paged, backend=backend)
    groups = _param_groups(model, weight_decay)
    if backend in ("auto", "bitsandbytes"):
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            if backend == "bitsandbytes":
                raise UserError(f"adamw8bit backend=bitsandbytes: bitsandbytes does not import ({err}); "
                                "pip install 'nluforge[optim]' or use backend=torchao") from None
        else:
            cls = bnb.optim.PagedAdamW8bit if paged else bnb.optim.AdamW8bit
            opt = cls(groups, lr=lr, betas=tuple(betas), eps=eps, min_8bit_size=min_8bit_size)
            opt.nluforge_info = {"backend": "bitsandbytes", "paged": paged, "min_8bit_size": min_8bit_size}
            return opt
    try:
        from torchao.optim import AdamW8bit
    except ImportError as err:
        raise UserError(f"adamw8bit needs bitsandbytes or torchao ({err}); pip install 'nluforge[optim]'") from None
    # torchao quantizes tensors of at least 4096 elements, like bitsandbytes' min_8bit_size default
    opt = AdamW8bit(groups, lr=lr, betas=tuple(betas), eps=eps, block_size=block_size)
    opt.nluforge_info = {"backend": "torchao", "block_size": block_size}
    return opt
