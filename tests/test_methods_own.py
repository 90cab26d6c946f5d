"""Method-specific checks for adapter, dylora, lopa, lst and prompt_based on tiny random models.

The generic contract (applies, trainable count, one step, save/load, determinism) is in
``test_methods_contract.py``; here: what each method promises beyond it. Real training on the
``default`` model and SST-2 is marked ``slow``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_tiny

from nluforge.core.errors import UserError
from nluforge.methods import adapt, base, method_config, method_module
from nluforge.models.params import count_params
from nluforge.tasks import get_task


def batch(tokenizer, texts=("a gripping , beautifully acted film", "dull and far too long"), pairs=None):
    enc = tokenizer(list(texts), list(pairs) if pairs else None, padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def adapted(name: str, params: dict | None = None, arch: str = "bert", **context):
    torch.manual_seed(0)
    head = "masked_lm" if getattr(method_module(name), "HEAD", "") == "masked_lm" else "seq_cls"
    return adapt(make_tiny(arch, head=head), method_config(name, params), **context)


def backward(model, inputs) -> None:
    model.train()
    model(**inputs).logits.sum().backward()


# ----------------------------------------------------------------------------------------------- adapter


@pytest.mark.parametrize("placement, per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_adapter_placements_insert_the_right_modules(placement, per_layer, tokenizer):
    from nluforge.methods.adapter import Adapted, Bottleneck

    base_model = make_tiny("bert")
    inputs = batch(tokenizer)
    before = base_model(**inputs).logits
    model = adapt(base_model, method_config("adapter", {"placement": placement, "reduction_factor": 4}))
    layers = model.model.bert.encoder.layer
    assert sum(isinstance(m, Bottleneck) for m in model.modules()) == per_layer * len(layers)
    wrapped = {n.split(".", 1)[1] for n, m in layers.named_modules() if isinstance(m, Adapted)}
    expected = {"output.dense"} | ({"attention.output.dense"} if placement == "houlsby" else set())
    assert wrapped == expected
    assert layers[0].output.dense.adapter.down.out_features == 32 // 4
    torch.testing.assert_close(model(**inputs).logits, before)  # up-projection starts at zero: identity


def test_adapter_trains_layernorms_and_head_only_besides_adapters():
    model = adapted("adapter")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".adapter." in n or "LayerNorm" in n or "classifier" in n for n in trainable)
    assert any("LayerNorm" in n for n in trainable)
    frozen_ln = adapted("adapter", {"train_layernorm": False})
    assert not any("LayerNorm" in n for n, p in frozen_ln.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("params, message", [
    ({"reduction_factor": 5}, "must divide the hidden size"),
    ({"reduction_factor": 64}, "must divide the hidden size"),
])
def test_adapter_bad_reduction_factor(params, message):
    with pytest.raises(UserError, match=message):
        adapted("adapter", params)


def test_adapter_bad_options_are_one_line_errors():
    with pytest.raises(UserError, match="placement"):
        method_config("adapter", {"placement": "middle"})
    with pytest.raises(UserError, match="reduction_factor"):
        method_config("adapter", {"reduction_factor": 0})
    with pytest.raises(UserError, match="unknown key"):
        method_config("adapter", {"rank": 4})


# ----------------------------------------------------------------------------------------------- dylora


def _randomize_b(model) -> None:
    with torch.no_grad():
        for layer in model._layers:
            for col in layer.lora_B:
                col.normal_(std=0.5)


def test_dylora_samples_ranks_in_range_and_eval_uses_the_eval_rank(tokenizer):
    dylora = method_module("dylora")
    model = adapted("dylora", {"r": 4})
    hooks = dylora.train_hooks(model, method_config("dylora", {"r": 4}), total_steps=100)
    torch.manual_seed(0)
    draws = []
    for step in range(200):
        hooks.before_forward(step)
        draws.append(model.train_rank)
    assert set(draws) == {1, 2, 3, 4}
    assert max(draws.count(k) for k in range(1, 5)) < 80  # roughly uniform (50 expected each)
    model.eval()
    model(**batch(tokenizer))
    assert all(layer.rank == 4 for layer in model._layers)  # eval: rank r, whatever was sampled
    hooks.on_train_end()
    assert model.train_rank == 4


def test_dylora_training_step_updates_only_the_sampled_component(tokenizer):
    model = adapted("dylora", {"r": 4})
    _randomize_b(model)
    model.train_rank = 3
    backward(model, batch(tokenizer))
    layer = model._layers[0]
    assert [a.grad is not None for a in layer.lora_A] == [False, False, True, False]
    assert [b.grad is not None for b in layer.lora_B] == [False, False, True, False]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dylora_rank_k_uses_only_the_first_k_components(k, tokenizer):
    dylora = method_module("dylora")
    model = adapted("dylora", {"r": 4}).eval()
    _randomize_b(model)
    inputs = batch(tokenizer)
    full = model(**inputs).logits
    dylora.set_rank(model, k)
    at_k = model(**inputs).logits
    with torch.no_grad():  # zero every component above k: rank-k logits must not move
        for layer in model._layers:
            for i in range(k, 4):
                layer.lora_A[i].zero_()
                layer.lora_B[i].zero_()
    torch.testing.assert_close(model(**inputs).logits, at_k, rtol=0, atol=0)
    assert not torch.allclose(at_k, full)  # and rank k really differs from rank r


def test_dylora_rank_survives_save_and_load(tmp_path, tokenizer):
    dylora = method_module("dylora")
    cfg = method_config("dylora", {"r": 4})
    model = adapted("dylora", {"r": 4}).eval()
    _randomize_b(model)
    dylora.set_rank(model, 2)
    expected = model(**batch(tokenizer)).logits
    base.save(model, tmp_path)
    loaded = base.load(tmp_path, make_tiny("bert"), cfg, dylora.adapt).eval()
    assert int(loaded.eval_rank) == 2
    torch.testing.assert_close(loaded(**batch(tokenizer)).logits, expected, rtol=0, atol=0)


def test_dylora_errors():
    dylora = method_module("dylora")
    model = adapted("dylora", {"r": 4})
    for k in (0, 5):
        with pytest.raises(UserError, match=r"outside 1\.\.4"):
            dylora.set_rank(model, k)
    with pytest.raises(UserError, match="larger than the hidden size 32"):
        adapted("dylora", {"r": 33})
    with pytest.raises(UserError, match="no linear layer named 'qkv'"):
        adapted("dylora", {"target_modules": ["qkv"]})
    with pytest.raises(UserError, match="adapted by dylora"):
        dylora.set_rank(make_tiny("bert"), 1)


# ----------------------------------------------------------------------------------------------- lst


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_lst_gradients_reach_the_side_network_only(arch, tokenizer):
    model = adapted("lst", {"reduction_factor": 4}, arch=arch)
    backward(model, batch(tokenizer))
    assert all(p.grad is None for p in model.model.parameters())
    assert all(p.grad is not None for p in model.side.parameters())
    assert model.side.gates.grad.abs().sum() > 0  # the ladder gates learn


def _saved(model, inputs) -> list[torch.Tensor]:
    """The tensors autograd keeps for the backward pass of one training forward."""
    kept: list[torch.Tensor] = []

    def pack(t):
        kept.append(t)
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs).logits.sum()
    return kept


def test_lst_autograd_holds_no_backbone_activations():
    from transformers import AutoModelForSequenceClassification, BertConfig

    config = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                        vocab_size=1000)  # wider than the tiny model, so activations, not attention maps, dominate
    torch.manual_seed(0)
    full = AutoModelForSequenceClassification.from_config(config)
    lst = adapt(AutoModelForSequenceClassification.from_config(config), method_config("lst"))
    inputs = {"input_ids": torch.randint(5, 1000, (8, 16)), "attention_mask": torch.ones(8, 16, dtype=torch.long)}
    saved = _saved(lst, inputs)
    backbone_sized = [t for t in saved if t.dim() and t.shape[-1] in (128, 512)]
    assert len(backbone_sized) == 3  # only the ladders' inputs: embedding output + 2 layer outputs
    assert not any(t.requires_grad for t in backbone_sized)
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    assert nbytes(saved) < nbytes(_saved(full, inputs)) / 3  # measured: 0.16


def test_lst_prune_init_takes_backbone_weights():
    model = adapted("lst", {"reduction_factor": 4})
    backbone = model.model.bert.encoder.layer[0]
    down = model.side.down[0].weight  # (d_s, d): one 1 per row = the kept residual dims
    assert torch.equal(down.sum(1), torch.ones(8)) and set(down.unique().tolist()) == {0.0, 1.0}
    keep = down.argmax(1)
    q_side = model.side.layers[0].self_attn.in_proj_weight[:8]  # (d_s, d_s)
    q_rows = backbone.attention.self.query.weight[:, keep]  # (d, d_s)
    assert all(any(torch.equal(row, r) for r in q_rows) for row in q_side)  # each a kept row of Wq
    norm = backbone.attention.output.LayerNorm
    torch.testing.assert_close(model.side.layers[0].norm1.weight, norm.weight[keep])


def test_lst_errors():
    with pytest.raises(UserError, match="reduction_factor=3"):
        adapted("lst", {"reduction_factor": 3})
    with pytest.raises(UserError, match="init"):
        method_config("lst", {"init": "distill"})


# ----------------------------------------------------------------------------------------------- lopa


def test_lopa_prompt_is_instance_specific_and_backbone_frozen(tokenizer):
    model = adapted("lopa", {"num_virtual_tokens": 5, "rank": 2})
    with torch.no_grad():  # move the u/v heads off their near-zero init
        for head in (model.row, model.col):
            head.net[3].weight.normal_(std=0.5)
    model.eval()
    inputs = batch(tokenizer)
    z = model.prompt(inputs["input_ids"], inputs["attention_mask"])
    assert z.shape == (2, 5, 32)
    assert (z[0] - z[1]).abs().max() > 1e-3  # different inputs, different prompts
    again = model.prompt(inputs["input_ids"][:1], inputs["attention_mask"][:1])
    torch.testing.assert_close(again[0], z[0])  # the same input, the same prompt
    backward(model, inputs)
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert {"shared", "row.net.1.weight", "col.net.3.weight"} <= trained
    assert all(n.startswith(("shared", "row.", "col.", "model.classifier.")) for n in trained)


def test_lopa_inserts_the_prompt_after_the_first_token(tokenizer):
    model = adapted("lopa", {"num_virtual_tokens": 3}).eval()
    inputs = batch(tokenizer)
    seen = {}
    model.model.bert.embeddings.register_forward_hook(lambda m, args, kw, out: seen.update(kw), with_kwargs=True)
    model(**inputs)
    embeds = seen["inputs_embeds"]  # (B, T + m, d)
    words = model.model.bert.embeddings.word_embeddings(inputs["input_ids"])
    torch.testing.assert_close(embeds[:, 0], words[:, 0])  # [CLS] stays first
    torch.testing.assert_close(embeds[:, 4:], words[:, 1:])


def test_lopa_errors():
    with pytest.raises(UserError, match="larger than the hidden size 32"):
        adapted("lopa", {"rank": 33})
    with pytest.raises(UserError, match="rank must be >= 1"):
        method_config("lopa", {"rank": 0})


# ----------------------------------------------------------------------------------------------- prompt_based


def prompt_model(tokenizer, task="sst2", params=None, arch="bert"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adapted("prompt_based", params, arch=arch, tokenizer=tokenizer, task=get_task(task)).eval()


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_prompt_logits_are_mlm_logits_at_the_mask(arch, tokenizer):
    model = prompt_model(tokenizer, arch=arch)
    inputs = batch(tokenizer)
    fields = [model._fields(row) for row in inputs["input_ids"].tolist()]
    seqs, positions = model.assemble(fields, model.patterns[0])
    assert tokenizer.decode(seqs[1]) == "[CLS] dull and far too long it was [MASK]. [SEP]"
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True)
    mlm = model.model(input_ids=ids, attention_mask=(ids != 0).long()).logits  # (B, T, V)
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("terrible", "great")]
    expected = mlm[torch.arange(2), torch.tensor(positions)][:, words]
    torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)


def test_prompt_ensemble_is_the_mean_of_pattern_logits(tokenizer):
    inputs = batch(tokenizer)
    single = [prompt_model(tokenizer, params={"prompts": [i]})(**inputs).logits for i in (0, 2)]
    both = prompt_model(tokenizer, params={"prompts": [0, "Just {mask} ! {sentence}"]})(**inputs).logits
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)


def test_prompt_pairs_and_regression(tokenizer):
    inputs = batch(tokenizer, pairs=["it is good", "a sequel"])
    rte = prompt_model(tokenizer, "rte")
    seqs, _ = rte.assemble([rte._fields(r) for r in inputs["input_ids"].tolist()], rte.patterns[0])
    assert tokenizer.decode(seqs[0]) == "[CLS] a gripping, beautifully acted film? [MASK], it is good [SEP]"
    scores = prompt_model(tokenizer, "stsb")(**inputs).logits
    assert scores.shape == (2, 1) and ((scores >= 0) & (scores <= 5)).all()


def test_prompt_mask_survives_truncation(tokenizer):
    model = prompt_model(tokenizer)
    enc = tokenizer(["word " * 200], truncation=True, max_length=16, return_tensors="pt")
    seqs, positions = model.assemble([model._fields(enc["input_ids"][0].tolist())], model.patterns[0])
    assert seqs[0][positions[0]] == tokenizer.mask_token_id and len(seqs[0]) <= 16 + 5


def test_prompt_untrained_head_is_tied_and_identity(tokenizer):
    base_model = make_tiny("bert", head="masked_lm")
    with pytest.warns(UserWarning, match="masked-LM head is untrained"):
        model = adapt(base_model, method_config("prompt_based"), tokenizer=tokenizer, task=get_task("sst2"))
    transform = model.model.cls.predictions.transform.dense
    assert torch.equal(transform.weight, torch.eye(32))
    assert model.model.get_output_embeddings().weight is model.model.get_input_embeddings().weight
    assert count_params(model, trainable_only=True) == count_params(model)  # LM-BFF: every weight trains


@pytest.mark.parametrize("params, message", [
    ({"prompts": ["{sentence} It was great ."]}, "needs exactly one mask slot"),
    ({"prompts": ["{text} It was {mask} ."]}, "must use each text field"),
    ({"prompts": [7]}, "prompt index 7 is out of range"),
    ({"verbalizer": ["terrible", "magnificently"]}, "'magnificently' is 2 tokens"),
    ({"verbalizer": ["great"]}, "needs 2 words"),
])
def test_prompt_errors(params, message, tokenizer):
    with pytest.raises(UserError, match=message):
        prompt_model(tokenizer, params=params)


def test_prompt_needs_a_tokenizer():
    with pytest.raises(UserError, match="tokenizer"):
        adapt(make_tiny("bert", head="masked_lm"), method_config("prompt_based"), task=get_task("sst2"))


# ----------------------------------------------------------------------------------------------- real training

SST2_MAJORITY = 0.509  # SST-2 dev: 444 of 872 are positive
# Learning rates that work for one epoch over 1,500 SST-2 examples (47 steps of 32) on `default`; below
# them a run can stay at the majority class (adapter 1e-3, dylora 5e-3, lopa 1e-3 did). Measured dev
# accuracy, seeds 42 / 1: adapter 77.4 / 79.6, dylora 74.4 / 72.6, lopa 75.2 / 76.6, lst 77.6 / 74.5,
# prompt_based 77.5 / 76.3.
SLOW_RUNS = {
    "adapter": ({}, 5e-3),
    "dylora": ({"r": 4}, 1e-2),
    "lopa": ({}, 5e-3),
    "lst": ({}, 3e-3),
    "prompt_based": ({}, 1e-4),
}


def train_sst2(method: str, glue_dir, tmp_path):
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell

    params, lr = SLOW_RUNS[method]
    cfg = resolve({"task": "sst2", "model": "default", "method": method, "method_params": params,
                   "data": {"data_dir": str(glue_dir), "max_train_samples": 1500, "max_length": 64},
                   "train": {"epochs": 1, "lr": lr, "num_threads": 1},
                   "eval": {"advglue": False, "latency": False, "save_predictions": False, "baselines": False}})
    result = run_cell(cfg, tmp_path)
    assert result.run_info.status == "completed", result.run_info.error
    return cfg, result


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adapter", "lopa", "lst", "prompt_based"])
def test_learns_sst2(method, glue_dir, tmp_path):
    _, result = train_sst2(method, glue_dir, tmp_path)
    accuracy = result.metrics["trained"]["validation"]["accuracy"]
    assert accuracy >= SST2_MAJORITY + 0.11, f"{method}: dev accuracy {accuracy:.3f}"


@pytest.mark.slow
def test_dylora_one_run_serves_every_rank(glue_dir, tmp_path):
    import numpy as np

    from nluforge.eval.predict import predict
    from nluforge.models.inputs import encode
    from nluforge.models.loading import load_model, load_tokenizer
    from nluforge.tasks import load_task

    cfg, result = train_sst2("dylora", glue_dir, tmp_path)
    dylora, spec = method_module("dylora"), get_task("sst2")
    fresh = load_model("default", num_labels=2)
    model = base.load(tmp_path / cfg.run_id() / "model", fresh, method_config("dylora", cfg.method_params),
                      dylora.adapt).eval()
    tokenizer = load_tokenizer("default")
    dev = load_task(spec, data_dir=glue_dir, splits=["validation"]).splits["validation"]
    enc = encode(dev.texts, dev.labels, tokenizer, 64)
    accuracy = {}
    for k in range(1, cfg.method_params["r"] + 1):
        dylora.set_rank(model, k)
        logits = predict(model, enc, batch_size=64, pad_id=tokenizer.pad_token_id, regression=False)
        accuracy[k] = float((logits.argmax(-1) == np.asarray(dev.labels)).mean())
    r = max(accuracy)
    assert accuracy[r] == pytest.approx(result.metrics["trained"]["validation"]["accuracy"], abs=1e-9)
    assert accuracy[r] >= SST2_MAJORITY + 0.11, accuracy
    assert accuracy[r] >= accuracy[1], accuracy  # the full rank is no worse than rank 1
