"""Prefix tuning (own implementation, no peft): what the contract matrix does not cover.

The attention really is softmax(q [P_k; K]ᵀ / √d + mask) [P_v; V] in every layer, with sdpa and eager
attention; padding stays masked; the MLP reparameterisation trains and round-trips; unsupported
architectures are one-line errors. (Learning: tests/test_methods_learning.py.)
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny

from nluforge.core.errors import UserError
from nluforge.methods import base, method_config, method_module
from nluforge.models.params import count_params

IDS = torch.tensor([[101, 2023, 3185, 2001, 2307, 102], [101, 11771, 102, 0, 0, 0]])  # (B=2, T=6), padded
MASK = (IDS != 0).long()
prefix = method_module("prefix_tuning")


def adapted(params: dict | None = None, arch: str = "bert", attn: str | None = None):
    base_model = make_tiny(arch)
    if attn:
        base_model.set_attn_implementation(attn)
    torch.manual_seed(0)
    return prefix.adapt(base_model, method_config("prefix_tuning", params))


def logits(model, **inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_attends_over_the_prefixes(attn):
    """Layer 0's output equals the written-out formula on its captured input."""
    model = adapted({"num_virtual_tokens": 3}, attn=attn)
    wrapper = model._attention[0]
    seen = {}
    wrapper.register_forward_hook(lambda mod, args, out: seen.update(h=args[0], out=out[0]))
    logits(model, input_ids=IDS, attention_mask=MASK)
    inner = wrapper.attention
    h, heads = seen["h"], model.config.num_attention_heads  # h: (B, T, H)
    kv = model.prefix().detach()[:, 0]  # (N, 2, H)
    B, T, H = h.shape
    d = H // heads

    def split(x):  # (B, S, H) -> (B, heads, S, d)
        return x.view(B, -1, heads, d).transpose(1, 2)

    q = split(inner.query(h))
    k = split(torch.cat([kv[:, 0].expand(B, -1, -1), inner.key.linear(h)], 1))  # (B, heads, N + T, d)
    v = split(torch.cat([kv[:, 1].expand(B, -1, -1), inner.value.linear(h)], 1))
    keep = torch.cat([torch.ones(B, 3, dtype=torch.bool), MASK.bool()], 1)  # (B, N + T)
    scores = (q @ k.transpose(-1, -2)) / d**0.5  # (B, heads, T, N + T)
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H)
    # the padded row's padding queries are not compared: they are ignored downstream
    torch.testing.assert_close(seen["out"][0], expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen["out"][1, :3], expected[1, :3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_is_masked_and_the_prefix_matters(arch, attn):
    model = adapted({"num_virtual_tokens": 4}, arch, attn)
    padded = logits(model, input_ids=IDS, attention_mask=MASK)
    alone = logits(model, input_ids=IDS[1:, :3], attention_mask=MASK[1:, :3])
    no_mask = logits(model, input_ids=IDS[1:, :3])
    with_types = logits(model, input_ids=IDS, attention_mask=MASK, token_type_ids=torch.zeros_like(IDS))
    torch.testing.assert_close(alone, padded[1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(no_mask, alone)
    torch.testing.assert_close(with_types, padded)
    with torch.no_grad():  # the prefixes are in the computation (the tiny head's logits are nearly flat)
        plain = make_tiny(arch)(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states[-1]
        prefixed = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states[-1]
    assert (plain - prefixed).abs().max() > 0.1


def test_wrapped_encoder_alone_is_an_error():
    model = adapted()
    with pytest.raises(RuntimeError, match="call the PrefixTuningModel"):
        model.model(input_ids=IDS, attention_mask=MASK)


def test_unsupported_architecture_is_a_one_line_error():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    with pytest.raises(UserError, match="does not support distilbert") as err:
        prefix.adapt(model, method_config("prefix_tuning"))
    assert "\n" not in str(err.value)


def test_projection_trains_the_mlp_and_round_trips(tmp_path):
    params = {"num_virtual_tokens": 3, "prefix_projection": True, "encoder_hidden_size": 16}
    model = adapted(params)
    assert count_params(model, trainable_only=True) == prefix.expected_trainable(make_tiny("bert"),
                                                                                 method_config("prefix_tuning", params))
    before = [p.detach().clone() for p in model.prefix.mlp.parameters()]
    _train(model, steps=2)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.prefix.mlp.parameters(), strict=True))
    base.save(model, tmp_path)
    loaded = base.load(tmp_path, make_tiny("bert"), method_config("prefix_tuning", params), prefix.adapt)
    torch.testing.assert_close(logits(loaded, input_ids=IDS, attention_mask=MASK),
                               logits(model, input_ids=IDS, attention_mask=MASK), rtol=0, atol=1e-6)


def test_saves_only_the_prefix_and_the_head(tmp_path):
    from safetensors.torch import load_file

    model = adapted()
    base.save(model, tmp_path)
    saved = load_file(str(tmp_path / base.METHOD_STATE))
    assert set(saved) == {"prefix.embedding.weight", "model.classifier.weight", "model.classifier.bias"}
    assert saved["prefix.embedding.weight"].shape == (20, 2 * 2 * 32)  # (N, 2 · layers · hidden)


def _train(model, steps: int, lr: float = 1e-2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(input_ids=IDS, attention_mask=MASK).logits,
                                                 torch.tensor([1, 0]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_learns_sst2_on_the_default_model(glue_dir, tmp_path):
    """47 steps of 32 on SST-2 (as the peft-backed methods' slow tests): clearly above the majority class."""
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell
    from nluforge.tasks import load_task

    counts = load_task("sst2", data_dir=glue_dir).splits["validation"].label_counts()
    majority = max(counts.values()) / sum(counts.values())
    cfg = resolve({"task": "sst2", "model": "default", "method": "prefix_tuning",
                   "data": {"data_dir": str(glue_dir), "max_train_samples": 1500, "max_length": 64},
                   "train": {"epochs": 1, "lr": 3e-2, "batch_size": 32, "num_threads": 1},
                   "eval": {"advglue": False, "latency": False, "save_predictions": False, "baselines": False}})
    result = run_cell(cfg, tmp_path)
    assert result.run_info.status == "completed", result.run_info.error
    accuracy = result.metrics["trained"]["validation"]["accuracy"]
    assert accuracy >= majority + 0.12, f"{accuracy:.3f} vs majority {majority:.3f}"
