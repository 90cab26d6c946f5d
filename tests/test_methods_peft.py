"""peft-backed methods (lora, adalora, ia3, prompt_tuning): what the contract matrix does not cover.
One-line errors for bad options, plain-peft adapter folders, non-default configs against each method's
formula, AdaLoRA's rank budget, prompt-tuning inits, the attention-mask and token-type handling of
prompt tuning on BERT and RoBERTa, IA3's no-decay declaration, and (``-m slow``) real training: each
method learns SST-2 on the default model through the pipeline. (prefix_tuning is nluforge's own since
transformers 5.24: tests/test_methods_prefix.py; its option checks and formula stay here.)
"""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch
from conftest import make_tiny

from nluforge.core.errors import UserError
from nluforge.methods import base, method_config, method_module
from nluforge.models.params import count_params

PEFT_METHODS = ["lora", "adalora", "ia3", "prompt_tuning"]
IDS = torch.tensor([[101, 2023, 3185, 2001, 2307, 102], [101, 11771, 102, 0, 0, 0]])  # (B=2, T=6), padded
MASK = (IDS != 0).long()


def adapted(name: str, params: dict | None = None, arch: str = "bert", num_labels: int = 2, **context):
    torch.manual_seed(0)
    return method_module(name).adapt(make_tiny(arch, num_labels), method_config(name, params), **context)


def logits(model, **inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def train(model, steps: int, hooks=None, lr: float = 1e-2) -> None:
    """A few steps on a fixed batch, hooks where ``train.loop.fit`` runs them."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    labels = torch.tensor([1, 0])
    model.train()
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(input_ids=IDS, attention_mask=MASK).logits, labels)
        loss.backward()
        if hooks and hooks.after_backward:
            hooks.after_backward(step)
        optimizer.step()
        if hooks and hooks.after_step:
            hooks.after_step(step)
        optimizer.zero_grad(set_to_none=True)


# --- one-line errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PEFT_METHODS)
def test_unknown_option_is_one_line_error(name):
    with pytest.raises(UserError, match=rf"unknown key 'method_params \({name}\)\.rnak'") as err:
        method_config(name, {"rnak": 8})
    assert "\n" not in str(err.value) and "valid keys" in str(err.value)


@pytest.mark.parametrize("name, params, message", [
    ("lora", {"r": 64}, r"rank r=64 is larger than the hidden size 32"),
    ("adalora", {"init_r": 40, "target_r": 8}, r"rank init_r=40 is larger than the hidden size 32"),
    ("lora", {"target_modules": ["querry"]}, r"target module 'querry' does not exist .*did you mean 'query'"),
    ("adalora", {"target_modules": ["value", "q_proj"]}, r"target module 'q_proj' does not exist"),
    ("ia3", {"target_modules": ["key", "nope"]}, r"target module 'nope' .*valid choices: dense, key, query, value"),
    ("ia3", {"target_modules": ["key"], "feedforward_modules": ["value"]}, r"not among target_modules"),
])
def test_bad_model_options_are_one_line_errors(name, params, message):
    cfg = method_config(name, params)
    for call in (method_module(name).adapt, method_module(name).expected_trainable):
        with pytest.raises(UserError, match=message) as err:
            call(make_tiny("bert"), cfg)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, params, message", [
    ("lora", {"r": 0}, r"\.r must be positive"),
    ("lora", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ("adalora", {"init_r": 4, "target_r": 8}, r"target_r=8 must be <= init_r=4"),
    ("adalora", {"tinit_ratio": 0.5, "tfinal_ratio": 0.5}, r"sum < 1"),
    ("prompt_tuning", {"num_virtual_tokens": 0}, r"num_virtual_tokens must be positive"),
    ("prompt_tuning", {"init": "text"}, r"non-empty init_text exactly when init is 'text'"),
    ("prompt_tuning", {"init_text": "great"}, r"non-empty init_text exactly when init is 'text'"),
    ("prompt_tuning", {"init": "glove"}, r"bad value for 'method_params \(prompt_tuning\)\.init'"),
    ("prefix_tuning", {"num_virtual_tokens": -1}, r"num_virtual_tokens must be positive"),
    ("lora", {"r": "eight"}, r"bad value for 'method_params \(lora\)\.r'"),
])
def test_bad_values_are_one_line_errors(name, params, message):
    with pytest.raises(UserError, match=message) as err:
        method_config(name, params)
    assert "\n" not in str(err.value)


def test_model_without_head_is_an_error():
    from transformers import AutoModel

    encoder = AutoModel.from_config(make_tiny("bert").config)
    with pytest.raises(UserError, match="no task head"):
        method_module("lora").adapt(encoder, method_config("lora"))


def test_text_init_without_tokenizer_is_an_error():
    with pytest.raises(UserError, match="needs the model's tokenizer"):
        adapted("prompt_tuning", {"init": "text", "init_text": "great movie"})


# --- formulas on non-default configs ---------------------------------------------------------------

@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("name, params", [
    ("lora", {"r": 4, "target_modules": ["query", "key", "value", "dense"]}),
    ("lora", {"r": 2, "target_modules": ["attention.output.dense"]}),
    ("adalora", {"init_r": 6, "target_r": 3, "target_modules": ["query", "key", "value", "dense"]}),
    ("ia3", {"target_modules": ["query", "value", "output.dense"], "feedforward_modules": ["output.dense"]}),
    ("ia3", {"target_modules": ["key", "value"]}),
    ("prompt_tuning", {"num_virtual_tokens": 7, "init": "vocab"}),
    ("prefix_tuning", {"num_virtual_tokens": 3, "prefix_projection": True, "encoder_hidden_size": 16}),
])
def test_formula_matches_non_default_configs(name, params, arch):
    expected = method_module(name).expected_trainable(make_tiny(arch), method_config(name, params))
    assert count_params(adapted(name, params, arch), trainable_only=True) == expected


def test_ia3_defaults_follow_the_paper():
    """l_k, l_v rescale outputs (hidden); l_ff rescales the FFN down-projection's input (intermediate)."""
    model = adapted("ia3")
    shapes = {n.removeprefix("base_model.model."): tuple(p.shape) for n, p in model.named_parameters()
              if "ia3_l" in n}
    layer = "bert.encoder.layer.0."
    assert shapes[layer + "attention.self.key.ia3_l.default"] == (32, 1)
    assert shapes[layer + "attention.self.value.ia3_l.default"] == (32, 1)
    assert shapes[layer + "output.dense.ia3_l.default"] == (1, 64)
    assert len(shapes) == 2 * 3  # nothing on the attention output, FFN up-projection or pooler


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("name", PEFT_METHODS)
def test_regression_and_multiclass_heads(name, num_labels):
    model = adapted(name, arch="roberta", num_labels=num_labels)
    assert logits(model, input_ids=IDS, attention_mask=MASK).shape == (2, num_labels)


# --- saved folders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PEFT_METHODS)
def test_saved_folder_loads_with_plain_peft(name, tmp_path):
    from peft import PeftModel

    model = adapted(name)
    train(model, steps=2)
    base.save(model, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    loaded = PeftModel.from_pretrained(make_tiny("bert"), tmp_path)
    torch.testing.assert_close(logits(loaded, input_ids=IDS, attention_mask=MASK),
                               logits(model, input_ids=IDS, attention_mask=MASK), rtol=0, atol=1e-5)


# --- AdaLoRA's budget ------------------------------------------------------------------------------

def test_adalora_hooks_shrink_the_rank_budget(tmp_path):
    module = method_module("adalora")
    cfg = method_config("adalora", {"init_r": 4, "target_r": 2, "tinit_ratio": 0.1, "tfinal_ratio": 0.3})
    torch.manual_seed(0)
    model = module.adapt(make_tiny("bert"), cfg)
    hooks = module.train_hooks(model, cfg, total_steps=20)
    peft_cfg = model.peft_config["default"]
    assert (peft_cfg.total_step, peft_cfg.tinit, peft_cfg.tfinal) == (20, 2, 6)
    n_layers = 2 * 2  # query and value of 2 layers
    allocator = model.base_model.rankallocator
    budgets = [allocator.budget_schedule(step)[0] for step in range(20)]
    assert budgets[0] == 4 * n_layers and budgets[-1] == 2 * n_layers
    assert all(a >= b for a, b in pairwise(budgets))
    train(model, steps=20, hooks=hooks)
    kept = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)
    assert kept <= 2 * n_layers and peft_cfg.rank_pattern
    expected = logits(model, input_ids=IDS, attention_mask=MASK)
    base.save(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert sum(sum(mask) for mask in saved["rank_pattern"].values()) == kept
    loaded = base.load(tmp_path, make_tiny("bert"), cfg, module.adapt)
    ranks = sum(p.shape[0] for n, p in loaded.named_parameters() if "lora_E" in n)
    assert ranks == kept  # the saved adapter is cut to the final ranks
    torch.testing.assert_close(logits(loaded, input_ids=IDS, attention_mask=MASK), expected, rtol=0, atol=1e-5)


def test_adalora_orth_penalty_reaches_the_gradients():
    module = method_module("adalora")
    cfg = method_config("adalora", {"orth_reg_weight": 1.0})
    model = adapted("adalora", {"orth_reg_weight": 1.0})
    hooks = module.train_hooks(model, cfg, total_steps=10)
    penalty = module.orth_penalty(model.base_model, "default")
    assert penalty.item() > 0 and penalty.requires_grad
    hooks.after_backward(0)  # no task loss yet: the gradients are the penalty's alone
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_adalora_without_hooks_trains_as_svd_lora():
    model = adapted("adalora")
    train(model, steps=2)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --- prompt tuning's init, prompt and prefix inputs ------------------------------------------------

def test_prompt_tuning_text_init(tokenizer, tmp_path):
    model = adapted("prompt_tuning", {"num_virtual_tokens": 5, "init": "text", "init_text": "great movie"},
                    tokenizer=tokenizer)
    ids = tokenizer("great movie", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2
    words = make_tiny("bert").get_input_embeddings().weight[[*ids, *ids, ids[0]]]  # (5, 32): repeated, cut
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight, words)
    base.save(model, tmp_path)  # reloads without the tokenizer: the init is in the weights
    assert json.loads((tmp_path / "adapter_config.json").read_text())["prompt_tuning_init"] == "RANDOM"


def test_prompt_tuning_vocab_init():
    model = adapted("prompt_tuning", {"num_virtual_tokens": 6, "init": "vocab"})
    words = make_tiny("bert").get_input_embeddings().weight.detach()  # (V, 32)
    prompt = model.prompt_encoder["default"].embedding.weight.detach()  # (6, 32)
    assert torch.cdist(prompt, words).min(dim=1).values.max() < 1e-3  # each row is a word embedding (~0.1 apart)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_prompts_respect_mask_and_token_types(arch):
    """Padding is masked (peft extends the mask by N ones), token types may be given or not."""
    model = adapted("prompt_tuning", {"num_virtual_tokens": 4}, arch)
    with torch.no_grad():  # make the prompt matter: random, large
        model.prompt_encoder["default"].embedding.weight.normal_()
    padded = logits(model, input_ids=IDS, attention_mask=MASK)
    with_types = logits(model, input_ids=IDS, attention_mask=MASK, token_type_ids=torch.zeros_like(IDS))
    alone = logits(model, input_ids=IDS[1:, :3], attention_mask=MASK[1:, :3])
    no_mask = logits(model, input_ids=IDS[1:, :3])
    torch.testing.assert_close(with_types, padded)
    torch.testing.assert_close(alone, padded[1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(no_mask, alone)
    plain = logits(make_tiny(arch), input_ids=IDS, attention_mask=MASK)
    assert not torch.allclose(plain, padded, atol=1e-3)  # the prompt is in the computation


def test_total_params_counts_the_saved_head_once():
    base_model = make_tiny("bert")
    base_total = count_params(base_model)
    model = method_module("lora").adapt(base_model, method_config("lora", {"r": 4}))
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora > 0
    assert count_params(model) == base_total + lora  # not + a second copy of the classifier


def test_ia3_vectors_get_no_weight_decay():
    from nluforge.optim import build_optimizer

    model = adapted("ia3")
    optimizer = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.1)
    ia3 = {id(p) for n, p in model.named_parameters() if ".ia3_l." in n}
    assert ia3
    for group in optimizer.param_groups:
        if any(id(p) in ia3 for p in group["params"]):
            assert group["weight_decay"] == 0.0


def test_optimizer_reads_the_no_decay_declaration_generically():
    """Any model may name parameters that must not decay; the optimizer does not know the method."""
    from nluforge.optim import NO_DECAY, build_optimizer

    model = make_tiny("bert")
    query = "bert.encoder.layer.0.attention.self.query.weight"
    by_name = dict(model.named_parameters())

    def decay_of(name):
        groups = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.1).param_groups
        return next(g["weight_decay"] for g in groups if any(p is by_name[name] for p in g["params"]))

    assert decay_of(query) == 0.1
    setattr(model, NO_DECAY, frozenset({query}))
    assert decay_of(query) == 0.0


# --- real training: the default model learns SST-2 ------------------------------------------------

# Found on the default model (all-MiniLM-L6-v2), SST-2, one epoch, max_length 64, one CPU thread, seed 42
# (and checked with seed 1): method -> (method_params, lr, train examples, batch size). Short runs need
# larger learning rates than the papers' long ones; below these lrs the 47-step runs stay at the majority
# class. Prompt tuning sits at the majority class for its first ~50 steps (the head pools the first
# virtual token, which must learn to act as [CLS]), so it gets 188 smaller steps; it is the slowest test
# (~75 s of training) and the most seed-sensitive (76% at seed 42, 62.5% at seed 1).
SST2_RUNS = {
    "lora": ({}, 5e-3, 1500, 32),  # 78.9% (seed 1: 78.2%)
    "adalora": ({}, 3e-2, 1500, 32),  # 79.1% (79.1%)
    "ia3": ({}, 3e-2, 1500, 32),  # 76.3% (77.3%)
    "prompt_tuning": ({}, 1e-1, 3000, 16),  # 76.1% (62.5%)
}
MARGIN = 0.12  # accuracy points above the majority class of the dev set


@pytest.fixture(scope="module")
def sst2_majority(glue_dir) -> float:
    from nluforge.tasks import load_task

    counts = load_task("sst2", data_dir=glue_dir).splits["validation"].label_counts()
    return max(counts.values()) / sum(counts.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", PEFT_METHODS)
def test_learns_sst2_on_the_default_model(name, glue_dir, sst2_majority, tmp_path):
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell

    params, lr, n_train, batch_size = SST2_RUNS[name]
    cfg = resolve({"task": "sst2", "model": "default", "method": name, "method_params": params,
                   "data": {"data_dir": str(glue_dir), "max_train_samples": n_train, "max_length": 64},
                   "train": {"epochs": 1, "lr": lr, "batch_size": batch_size, "num_threads": 1},
                   "eval": {"advglue": False, "latency": False, "save_predictions": False, "baselines": False}})
    result = run_cell(cfg, tmp_path)
    assert result.run_info.status == "completed", result.run_info.error
    accuracy = result.metrics["trained"]["validation"]["accuracy"]
    assert accuracy >= sst2_majority + MARGIN, f"{name}: {accuracy:.3f} vs majority {sst2_majority:.3f}"
