"""DyLoRA: LoRA trained for every rank at once, so one run can be evaluated at any rank k <= r.

Paper: Valipour, Rezagholizadeh, Kobyzev & Ghodsi 2023, "DyLoRA: Parameter-Efficient Tuning of
Pre-trained Models using Dynamic Search-Free Low-Rank Adaptation" (EACL).

Each targeted linear layer ``W0`` (by default the architecture's LoRA targets, query and value) gets
``W0 x + (alpha / b) · B[:, :b] A[:b] x`` with ``A`` (r × in) and ``B`` (out × r). At every training
step one rank ``b ~ U{1..r}`` is sampled for all layers (:func:`train_hooks` ``before_forward``); in
eval mode the layers use the evaluation rank, ``r`` unless :func:`set_rank` chose another one. The
evaluation rank is a buffer saved with the model, so a reloaded model scores exactly as it was saved.

As in the paper's default ("frozen") mode, a step at rank ``b`` updates only the ``b``-th row of ``A``
and the ``b``-th column of ``B``: rows ``< b`` are used but detached, rows ``> b`` are not used. Each
row is a separate parameter, so the untouched rows get no gradient at all and AdamW neither moves
them by momentum nor decays them (one (r × in) tensor would receive zero gradients and keep moving).

Departures: the task head is trained as well (as in the paper's GLUE setup); ``A`` rows use LoRA's
Kaiming-uniform init and ``B`` starts at zero; there is no separate ``r_min`` (sampling is from 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods.base import (
    MethodWrapper,
    TrainHooks,
    freeze,
    head_modules,
    head_param_count,
    unfreeze_head,
)
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "dylora"
    r: int = 8  # the largest rank; evaluation works at any rank 1..r
    alpha: float = 16.0  # the update is scaled by alpha / b at rank b
    dropout: float = 0.0  # on the LoRA branch's input
    target_modules: list[str] | None = None  # module names; None: the architecture's (query, value)

    def __post_init__(self):
        if self.r < 1:
            raise UserError(f"dylora: r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dylora: dropout must be in [0, 1), got {self.dropout}")


class DyLoRALinear(nn.Module):
    """A frozen linear layer plus nested-rank low-rank update rows ``A[i]``, columns ``B[:, i]``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.alpha = alpha
        self.lora_A = nn.ParameterList(nn.Parameter(torch.empty(1, base.in_features)) for _ in range(r))
        self.lora_B = nn.ParameterList(nn.Parameter(torch.zeros(base.out_features, 1)) for _ in range(r))
        for row in self.lora_A:
            nn.init.kaiming_uniform_(row, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.rank = r  # set by the wrapper before every forward

    def factors(self, b: int, *, frozen_below: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(A[:b], B[:, :b]); with ``frozen_below`` only the b-th row/column carries gradient."""
        rows, cols = list(self.lora_A[:b]), list(self.lora_B[:b])
        if frozen_below:
            rows = [a.detach() for a in rows[:-1]] + rows[-1:]
            cols = [c.detach() for c in cols[:-1]] + cols[-1:]
        return torch.cat(rows, 0), torch.cat(cols, 1)  # (b, in), (out, b)

    def forward(self, x):  # x: (B, T, in)
        b = self.rank
        a, bb = self.factors(b, frozen_below=self.training)
        update = self.dropout(x) @ a.T @ bb.T  # (B, T, b) -> (B, T, out)
        return self.base(x) + (self.alpha / b) * update


class DyLoRAModel(MethodWrapper):
    """The adapted classifier; ``eval_rank`` (a saved buffer) is the rank used in eval mode."""

    _nluforge_extra_state = ("eval_rank",)

    def __init__(self, model: nn.Module, r: int):
        super().__init__(model)
        self.r = r
        self.train_rank = r
        self.register_buffer("eval_rank", torch.tensor(r))
        self._layers = [m for m in model.modules() if isinstance(m, DyLoRALinear)]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        rank = self.train_rank if self.training else int(self.eval_rank)
        for layer in self._layers:
            layer.rank = rank
        return super().forward(input_ids, attention_mask, token_type_ids, **kwargs)

    def sample_rank(self) -> int:
        """Draw this step's rank b ~ U{1..r} from torch's global generator (seeded by the run)."""
        self.train_rank = int(torch.randint(1, self.r + 1, ()).item())
        return self.train_rank


def _targets(model: nn.Module, cfg: Config) -> dict[str, nn.Linear]:
    names = cfg.target_modules or arch_of(model).lora_targets
    head = {id(m) for h in head_modules(model) for m in h.modules()}
    found = {path: m for path, m in model.named_modules()
             if isinstance(m, nn.Linear) and id(m) not in head and path.rsplit(".", 1)[-1] in names}
    missing = [n for n in names if not any(p.rsplit(".", 1)[-1] == n for p in found)]
    if missing:
        raise UserError(f"dylora: no linear layer named '{missing[0]}' in this {model.config.model_type} "
                        f"model; name layers by their last path component (e.g. query, value)")
    for path, layer in found.items():
        limit = min(layer.in_features, layer.out_features)
        if cfg.r > limit:
            raise UserError(f"dylora: r={cfg.r} is larger than the hidden size {limit} of '{path}'; "
                            f"use r <= {limit}")
    return found


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    targets = _targets(model, cfg)
    freeze(model)
    for path, linear in targets.items():
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, DyLoRALinear(linear, cfg.r, cfg.alpha, cfg.dropout))
    unfreeze_head(model)
    return DyLoRAModel(model, cfg.r)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """Σ over targeted layers of r · (in + out), plus the head."""
    lora = sum(cfg.r * (m.in_features + m.out_features) for m in _targets(model, cfg).values())
    return lora + head_param_count(model)


def _check(model: nn.Module) -> DyLoRAModel:
    if not isinstance(model, DyLoRAModel):
        raise UserError(f"expected a model adapted by dylora, got {type(model).__name__}")
    return model


def train_hooks(model: nn.Module, cfg: Config, total_steps: int) -> TrainHooks:
    """Sample the rank before each step; training ends with the model back at rank ``r`` for training."""
    wrapper = _check(model)

    def end() -> None:
        wrapper.train_rank = wrapper.r

    return TrainHooks(before_forward=lambda _step: wrapper.sample_rank(), on_train_end=end)


def set_rank(model: nn.Module, k: int) -> None:
    """Evaluate with the first ``k`` rank components (1 <= k <= r); no retraining."""
    wrapper = _check(model)
    if not 1 <= k <= wrapper.r:
        raise UserError(f"dylora: rank {k} is outside 1..{wrapper.r} (the run was trained with r={wrapper.r})")
    wrapper.eval_rank.fill_(k)
