"""LOPA (Low-Rank Prompt Adaptation): an instance-aware soft prompt, with no adapter in the model.

Paper: Jain, Chaudhuri, Reps & Jermaine 2024, "Prompt Tuning Strikes Back: Customizing Foundation
Models with Low-Rank Prompt Adaptation" (NeurIPS). Official code:
github.com/jabhinav/Prompt-Tuning-Strikes-Back-with-LOPA (``LatentPromptAttentionGenerator``).

The soft prompt of ``m`` vectors of width ``d`` is ``Z = Z_S ∘ sigmoid(u vᵀ)``: ``Z_S`` (m × d) is
shared by the task; ``u`` (m × r) and ``v`` (d × r) are computed per input from a frozen encoding
``e(x)`` by two small trainable heads (dropout, dense, tanh, out-projection, as in the official
code). ``Z`` is inserted into the input embeddings of the frozen model; the model's weights are not
changed (the task head, which an encoder classifier needs, is trained, as in the paper's NLU runs).

Departures from the paper:

- ``e(x)``: the paper uses a separate frozen encoder model (e.g. CodeSage, CodeBERT) and its [CLS]
  or pooled output. Here no second model is loaded: ``encoder="backbone"`` (default) reuses the
  frozen backbone itself in a first pass under ``torch.no_grad()`` and mean-pools its last hidden
  states over the attention mask (``default`` is a sentence-transformers model trained for mean
  pooling); ``encoder="embeddings"`` mean-pools the embedding layer's output instead (cheaper, no
  contextualisation);
- ``Z`` goes right after the first token ([CLS] / <s>) rather than before it, so the pretrained
  pooler and classification head still read the real [CLS]; prompt positions take position ids
  1..m and push the text's positions by ``m``;
- ``Z_S`` starts from the embeddings of ``m`` random vocabulary tokens (Lester et al. 2021's
  recommendation); the official code starts it from peft's random init.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods.base import freeze, head_param_count, unfreeze_head
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "lopa"
    num_virtual_tokens: int = 10  # m, the soft prompt's length
    rank: int = 4  # r of the instance-specific part u vᵀ (paper: 1..4)
    mlp_hidden: int | None = None  # width of the u/v heads; None: the model's hidden size (official code)
    encoder: Literal["backbone", "embeddings"] = "backbone"  # what e(x) pools (see the module docstring)

    def __post_init__(self):
        for name in ("num_virtual_tokens", "rank"):
            if getattr(self, name) < 1:
                raise UserError(f"lopa: {name} must be >= 1, got {getattr(self, name)}")
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise UserError(f"lopa: mlp_hidden must be >= 1, got {self.mlp_hidden}")
        if self.encoder not in ("backbone", "embeddings"):
            raise UserError(f"lopa: encoder must be 'backbone' or 'embeddings', got '{self.encoder}'")


class FactorHead(nn.Module):
    """e(x) (B, d) -> (B, rows, r): dropout, dense, tanh, out-projection."""

    def __init__(self, d: int, hidden: int, rows: int, r: int, dropout: float):
        super().__init__()
        self.rows, self.r = rows, r
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, rows * r))
        for layer in (self.net[1], self.net[3]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, e):  # e: (B, d)
        return self.net(e).view(-1, self.rows, self.r)  # (B, rows, r)


class LOPAModel(nn.Module):
    """Frozen classifier + prompt generator; ``forward`` builds Z per example and runs the model."""

    def __init__(self, model: nn.Module, cfg: Config):
        super().__init__()
        self.model = model
        self.config = model.config
        self.encoder = cfg.encoder
        d, m = model.config.hidden_size, cfg.num_virtual_tokens
        words = self._word_embeddings().weight  # (V, d)
        low = 1000 if words.shape[0] > 2000 else 0  # skip BERT's special and [unusedN] ids
        picks = torch.randint(low, words.shape[0], (m,))
        self.shared = nn.Parameter(words[picks].detach().clone())  # Z_S: (m, d)
        hidden = cfg.mlp_hidden or d
        dropout = getattr(model.config, "hidden_dropout_prob", 0.1)
        self.row = FactorHead(d, hidden, m, cfg.rank, dropout)  # u
        self.col = FactorHead(d, hidden, d, cfg.rank, dropout)  # v

    def _backbone(self) -> nn.Module:
        return getattr(self.model, arch_of(self.model).base)

    def _word_embeddings(self) -> nn.Embedding:
        arch = arch_of(self.model)
        return self.model.get_submodule(f"{arch.base}.{arch.word_embeddings}")

    @torch.no_grad()
    def encode(self, input_ids, attention_mask, extra) -> torch.Tensor:
        """e(x): the frozen mean-pooled encoding, (B, d)."""
        if self.encoder == "backbone":
            h = self._backbone()(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        else:
            h = self._backbone().embeddings(input_ids=input_ids, **extra)  # (B, T, d)
        w = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1)  # (B, d)

    def prompt(self, input_ids, attention_mask, extra=None) -> torch.Tensor:
        """Z = Z_S ∘ sigmoid(u vᵀ), (B, m, d)."""
        e = self.encode(input_ids, attention_mask, extra or {})  # (B, d)
        z_i = self.row(e) @ self.col(e).transpose(1, 2)  # (B, m, r) @ (B, r, d) -> (B, m, d)
        return self.shared * torch.sigmoid(z_i)  # (m, d) * (B, m, d)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_kw):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        z = self.prompt(input_ids, attention_mask, extra)  # (B, m, d)
        tokens = self._word_embeddings()(input_ids)  # (B, T, d)
        embeds = torch.cat([tokens[:, :1], z, tokens[:, 1:]], 1)  # (B, T + m, d)
        ones = attention_mask.new_ones(z.shape[:2])  # (B, m)
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], 1)  # (B, T + m)
        if token_type_ids is not None:
            extra["token_type_ids"] = torch.cat([token_type_ids[:, :1], 0 * ones, token_type_ids[:, 1:]], 1)
        return self.model(inputs_embeds=embeds, attention_mask=mask, **extra)


def _check(model: nn.Module, cfg: Config) -> None:
    d = model.config.hidden_size
    if cfg.rank > d:
        raise UserError(f"lopa: rank={cfg.rank} is larger than the hidden size {d}; use rank <= {d}")
    limit = getattr(model.config, "max_position_embeddings", 512)
    if cfg.num_virtual_tokens >= limit // 2:
        raise UserError(f"lopa: num_virtual_tokens={cfg.num_virtual_tokens} leaves too few of the model's "
                        f"{limit} positions for the text; use fewer (e.g. 10-20)")


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    _check(model, cfg)
    freeze(model)
    wrapper = LOPAModel(model, cfg)
    unfreeze_head(model)
    return wrapper


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """m·d (Z_S) + u head (d·h + h + h·m·r + m·r) + v head (d·h + h + h·d·r + d·r) + task head."""
    _check(model, cfg)
    d, m, r = model.config.hidden_size, cfg.num_virtual_tokens, cfg.rank
    h = cfg.mlp_hidden or d
    heads = 2 * (d * h + h) + (h + 1) * m * r + (h + 1) * d * r
    return m * d + heads + head_param_count(model)
