"""L2: adaptation methods, one module per method, one verb: ``adapt(model, cfg)``.

A method module (``nluforge.methods.<name>``) defines:

- ``Config``: a dataclass of the method's options (``method: ClassVar[str]`` names it);
- ``adapt(model, cfg, *, tokenizer=None, task=None) -> nn.Module``: returns the model to train, with
  ``requires_grad`` set so that exactly the method's parameters (and the task head, where the method
  trains it) are trainable. The returned module's ``forward(input_ids, attention_mask, token_type_ids=None)``
  returns an object with ``.logits`` of shape (B, num_labels) (regression: (B, 1));
- ``expected_trainable(model, cfg) -> int``: the method's own formula for the trainable-parameter
  count, computed from the config and the *unadapted* model's shapes (the contract tests compare it);

and optionally:

- ``save(model, path)`` / ``load(path, base_model, cfg, *, tokenizer=None, task=None)``: defaults in
  :mod:`nluforge.methods.base`: a peft adapter folder for peft models, a ``save_pretrained`` folder
  for a model whose every weight trains, and otherwise only the trained tensors
  (``method_state.safetensors``) with ``base_model.json`` naming the base they apply to;
- ``train_hooks(model, cfg, total_steps) -> TrainHooks``: per-step callbacks (AdaLoRA's budget
  schedule, DyLoRA's rank sampling);
- ``HEAD``: ``"sequence_classification"`` (default) or ``"masked_lm"``: which model class to load.

``adapt`` may also declare parameters that must get no weight decay by setting
``model._nluforge_no_decay`` (:data:`nluforge.optim.NO_DECAY`) to their names (IA3 does); the optimizer
builder reads it without knowing the method.

The registry below lists every method lazily: ``nluforge methods`` imports no method module. Each entry
carries ``paper``, ``default_lr`` and ``relative_speed`` (see below).
"""

from __future__ import annotations

from typing import Any

from nluforge.core.registry import Registry

METHODS: Registry[Any] = Registry("method", hint="see `nluforge methods`")


# Default learning rates: what worked on the default model (all-MiniLM-L6-v2) in measured runs of a few
# hundred steps at batch 32 (tests/test_methods_*.py, benchmarks/methods.py, BENCHMARKS.md). They sit
# above the papers' values (e.g. LoRA 5e-4, AdaLoRA 1e-3, IA3 3e-3), which were tuned for runs of
# thousands of steps on larger models; below them the short runs stay at the majority class.
# relative_speed: training examples/s relative to full fine-tuning, a rough guess (not measured per
# method) that `nluforge bench` uses to estimate a grid's time before any result exists; it is scaled
# by finished results as they come in. Frozen layers still run the backward pass, so few methods are
# much faster than full; linear_probe and lst skip most of it.
def _method(name: str, paper: str, summary: str, default_lr: float, relative_speed: float) -> None:
    METHODS.register(name, f"nluforge.methods.{name}", summary=summary, paper=paper, default_lr=default_lr,
                     relative_speed=relative_speed)


_method("full", "Devlin et al. 2019, BERT (fine-tuning)", "update every weight of the encoder and head", 5e-5, 1.0)
_method("linear_probe", "Alain & Bengio 2017, linear probes", "freeze the encoder, train only the head", 1e-3, 3.0)
_method("bitfit", "Ben Zaken et al. 2022, BitFit", "train only bias terms and the head", 3e-3, 1.4)
_method("lora", "Hu et al. 2022, LoRA", "low-rank updates B·A on attention projections (peft)", 2e-3, 1.25)
_method("adalora", "Zhang et al. 2023, AdaLoRA", "LoRA with SVD-form updates and an adaptive rank budget (peft)",
        2e-2, 1.1)
_method("ia3", "Liu et al. 2022, (IA)^3", "learned vectors rescaling keys, values and FFN activations (peft)",
        3e-2, 1.3)
_method("prompt_tuning", "Lester et al. 2021, prompt tuning", "N trainable soft-prompt embeddings at the input (peft)",
        1e-1, 1.0)
_method("prefix_tuning", "Li & Liang 2021; Liu et al. 2022, P-tuning v2", "trainable key/value prefixes in every layer",
        2e-2, 1.2)
_method("adapter", "Houlsby et al. 2019; Pfeiffer et al. 2021", "bottleneck adapters after attention and/or FFN",
        5e-3, 1.25)
_method("dylora", "Valipour et al. 2023, DyLoRA", "nested LoRA ranks trained by sampling; evaluate at any rank <= r",
        1e-2, 1.2)
_method("lopa", "Jain et al. 2024, LOPA", "soft prompt = shared part ∘ input-conditioned low-rank part", 5e-3, 1.0)
_method("lst", "Sung et al. 2022, Ladder Side-Tuning", "small gated side network on frozen backbone activations",
        3e-3, 2.0)
_method("setfit", "Tunstall et al. 2022, SetFit",
        "contrastive pair tuning of the sentence encoder, then a logistic-regression head", 2e-5, 1.0)
_method("prompt_based", "Schick & Schütze 2021 (PET); Gao et al. 2021 (LM-BFF)",
        "pattern + verbalizer scored by the masked-LM head", 1e-4, 0.9)


def method_module(name: str) -> Any:
    """The module implementing method ``name`` (imported on first use)."""
    return METHODS.get(name)


def method_config(name: str, params: dict[str, Any] | None = None) -> Any:
    """Build method ``name``'s config strictly from ``params`` (unknown options are one-line errors)."""
    from nluforge.core.config import build

    return build(method_module(name).Config, params or {}, where=f"method_params ({name})")


def adapt(model: Any, cfg: Any, **context: Any) -> Any:
    """Apply the method named by ``type(cfg).method`` to ``model`` and return the model to train."""
    return method_module(cfg.method).adapt(model, cfg, **context)
