"""Prompt tuning: N trainable "soft prompt" embeddings prepended to the input; the encoder is frozen.

Paper: Lester, Al-Rfou & Constant 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"
(EMNLP). The prompt P (N, D) is concatenated before the token embeddings, [P; E(x)], and the
attention mask is extended by N ones; only P is learned (plus, here, the classification head).

Implementation: peft's ``PromptTuningConfig`` (peft extends the attention mask and prepends zero token
types). ``init``: ``random`` (peft's ``nn.Embedding`` default, N(0, 1)); ``vocab``, the embeddings of N
random vocabulary tokens (the paper's "sampled vocabulary", here over the whole vocabulary rather than
the 5,000 most frequent tokens); or ``text``, the embeddings of ``init_text``'s tokens, repeated or cut
to N (the paper's class-label init is ``init_text`` = the label words).

Departures: the paper reads the answer from T5's decoder; an encoder classifier needs its head, which
is trained (at the same lr) and saved with the prompt. Because peft puts the prompt in front of
``[CLS]``, the head pools the output at the *first virtual token*, and the real tokens' positions
start at N (P-tuning v2's prompt-tuning baseline pools the real ``[CLS]`` instead). The prompt must
learn to act as the classification token: on the default model, SST-2 stays at the majority class
for the first ~50 steps, then learns (lr 0.1, 188 steps of 16: 62-76% dev accuracy depending on the
seed); use lr 0.1-0.3 (the paper: 0.3) and many more steps than for LoRA. The text init is done here
from the tokenizer passed to :func:`adapt`, without special tokens (peft's own text init loads a
tokenizer by path and keeps them), so the saved adapter reloads without the tokenizer. Keep
``data.max_length + num_virtual_tokens`` within the model's maximum positions (512 for BERT models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods import peft_common as pc
from nluforge.methods.base import head_param_count


@dataclass
class Config:
    method: ClassVar[str] = "prompt_tuning"
    num_virtual_tokens: int = 20  # prompt length N: N x hidden trainable values, N more positions per input
    init: Literal["random", "vocab", "text"] = "random"  # N(0, 1), random word embeddings, or init_text's
    init_text: str | None = None  # the phrase for init="text" (needs the tokenizer), repeated or cut to N

    def __post_init__(self):
        pc.check_positive(self.method, num_virtual_tokens=self.num_virtual_tokens)
        if (self.init == "text") != bool(self.init_text and self.init_text.strip()):
            raise UserError("method_params (prompt_tuning): give a non-empty init_text exactly when init is 'text'")


def adapt(model: nn.Module, cfg: Config, *, tokenizer=None, **_context) -> nn.Module:
    from peft import PromptTuningConfig

    text = text_init(model, cfg.init_text, tokenizer, cfg.num_virtual_tokens) if cfg.init == "text" else None
    peft_config = PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=cfg.num_virtual_tokens,
                                     token_dim=pc.prompt_dim(model),
                                     prompt_tuning_init="SAMPLE_VOCAB" if cfg.init == "vocab" else "RANDOM")
    peft_model = pc.wrap(model, peft_config)
    if text is not None:
        with torch.no_grad():
            peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight.copy_(text)
    return peft_model


def text_init(model: nn.Module, text: str, tokenizer, n: int) -> torch.Tensor:
    """Word embeddings of ``text``'s tokens, repeated or cut to ``n`` rows: (n, D)."""
    if tokenizer is None:
        raise UserError("prompt_tuning with init='text' needs the model's tokenizer: adapt(model, cfg, tokenizer=...)")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError(f"prompt_tuning: init_text {text!r} has no tokens")
    ids = (ids * (n // len(ids) + 1))[:n]
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        return embeddings(torch.tensor(ids, device=embeddings.weight.device)).clone()  # (n, D)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """The prompt, N x D (D = word-embedding width), plus the head."""
    return cfg.num_virtual_tokens * pc.prompt_dim(model) + head_param_count(model)
