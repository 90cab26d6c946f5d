"""Architecture knowledge, in one table: module names per Hugging Face ``model_type``.

Method code asks this table (``arch_of(model).query``) instead of branching on the model type.
Names are the last component of the module path, as peft's ``target_modules`` expects them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nluforge.core.errors import UserError


@dataclass(frozen=True)
class Arch:
    query: str
    key: str
    value: str
    attn_out: str  # attention output projection (a Linear, inside "<layer>.attention.output" for BERT)
    ffn_in: str  # FFN up-projection
    ffn_out: str  # FFN down-projection
    layers: str  # dotted path from the base model to the ModuleList of layers
    base: str  # attribute of the *ForSequenceClassification model holding the encoder
    head: tuple[str, ...]  # attributes holding the task head (trained by most PEFT methods)
    embeddings: str = "embeddings"  # attribute of the base model
    word_embeddings: str = "embeddings.word_embeddings"
    has_token_type_ids: bool = True
    # dotted paths inside one layer of ``layers`` (adapters, LST pruning), and the masked-LM head
    # modules applied in order to hidden states (prompt-based methods)
    attn_out_path: str = "attention.output.dense"
    ffn_in_path: str = "intermediate.dense"
    ffn_out_path: str = "output.dense"
    mlm_head: tuple[str, ...] = ("cls",)
    # the module inside one layer that maps hidden states (B, T, H) to attention outputs (B, T, H)
    # through the ``key``/``value`` Linears above, one output row per input row (prefix tuning pads
    # its input); None where it does not (relative-position biases, shared or split-input attention)
    self_attn_path: str | None = "attention.self"
    # Where pooling is swapped (nluforge.models.pooling): the module that turns the encoder's sequence
    # output (B, T, H) into what the classifier reads, and how. "output": its output is replaced by the
    # pooled vector (BERT's pooler: dense + tanh on [CLS], dropped from the path). "input": its input is
    # replaced by the pooled vector as a one-token sequence (heads that read features[:, 0] themselves).
    # None: the architecture reads [CLS] inline, so only its own pooler is available.
    pool_at: str | None = "bert.pooler"
    pool_hook: str = "output"

    @property
    def lora_targets(self) -> list[str]:
        """The LoRA paper's default: query and value projections."""
        return [self.query, self.value]

    @property
    def ia3_targets(self) -> tuple[list[str], list[str]]:
        """(IA)^3: keys, values and the FFN down-projection input; the second list is feedforward."""
        return [self.key, self.value, self.ffn_out], [self.ffn_out]

    def linear_names(self) -> list[str]:
        return [self.query, self.key, self.value, self.attn_out, self.ffn_in, self.ffn_out]


_BERT = Arch("query", "key", "value", "dense", "dense", "dense", "encoder.layer", "bert", ("classifier",))

ARCH: dict[str, Arch] = {
    "bert": _BERT,
    "roberta": Arch("query", "key", "value", "dense", "dense", "dense", "encoder.layer", "roberta",
                    ("classifier",), has_token_type_ids=False, mlm_head=("lm_head",), pool_at="classifier", pool_hook="input"),
    "xlm-roberta": Arch("query", "key", "value", "dense", "dense", "dense", "encoder.layer", "roberta",
                        ("classifier",), has_token_type_ids=False, mlm_head=("lm_head",), pool_at="classifier",
                        pool_hook="input"),
    "electra": Arch("query", "key", "value", "dense", "dense", "dense", "encoder.layer", "electra",
                    ("classifier",), mlm_head=("generator_predictions", "generator_lm_head"), pool_at="classifier",
                    pool_hook="input"),
    "deberta": Arch("in_proj", "in_proj", "in_proj", "dense", "dense", "dense", "encoder.layer", "deberta",
                    ("pooler", "classifier"), pool_at="pooler", pool_hook="input", self_attn_path=None),
    "deberta-v2": Arch("query_proj", "key_proj", "value_proj", "dense", "dense", "dense", "encoder.layer",
                       "deberta", ("pooler", "classifier"), pool_at="pooler", pool_hook="input", self_attn_path=None),
    "albert": Arch("query", "key", "value", "dense", "ffn", "ffn_output",
                   "encoder.albert_layer_groups", "albert", ("classifier",), mlm_head=("predictions",),
                   pool_at=None, self_attn_path=None),
    "distilbert": Arch("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2", "transformer.layer", "distilbert",
                       ("pre_classifier", "classifier"), has_token_type_ids=False,
                       attn_out_path="attention.out_lin", ffn_in_path="ffn.lin1", ffn_out_path="ffn.lin2",
                       mlm_head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
                       pool_at=None, self_attn_path=None),
    "mpnet": Arch("q", "k", "v", "o", "dense", "dense", "encoder.layer", "mpnet", ("classifier",),
                  has_token_type_ids=False, attn_out_path="attention.attn.o", mlm_head=("lm_head",),
                  pool_at="classifier", pool_hook="input", self_attn_path=None),
}


def arch_for(model_type: str) -> Arch:
    if model_type not in ARCH:
        raise UserError(
            f"architecture '{model_type}' is not in nluforge's table; supported: {', '.join(sorted(ARCH))}"
        )
    return ARCH[model_type]


def arch_of(model) -> Arch:
    """The table entry for a (possibly wrapped) Hugging Face model."""
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "base_model"):
        config = model.base_model.config
    if config is None:
        raise UserError(f"{type(model).__name__} has no Hugging Face config; cannot look up its architecture")
    return arch_for(config.model_type)
