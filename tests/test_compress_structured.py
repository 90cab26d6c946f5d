"""The ``structured`` compressor: Fisher-ranked heads and FFN neurons removed, a smaller model, exact reload."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError

TINY_HEADS, TINY_NEURONS, HIDDEN, LAYERS = 2, 64, 32, 2  # tests/conftest.py TINY: 2 layers of 2 heads, FFN 64


def _batches(n_batches=3, batch=4, length=10, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, 3000, (batch, length), generator=g),
             "attention_mask": torch.ones(batch, length, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch,), generator=g)} for _ in range(n_batches)]


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_structured_removes_the_claimed_heads_and_neurons_and_reloads_identically(tmp_path, tiny_model):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    x = {k: v for k, v in _batches(1, 3, 12, seed=5)[0].items() if k != "labels"}
    model = tiny_model("bert")
    before = _count(model)
    cfg = compress_config("structured", {"heads": 0.5, "neurons": 0.25})
    q = compress(model, cfg, calibration=_batches())
    heads = [len(h) for h in q._nluforge_structured["heads"]]
    neurons = [len(n) for n in q._nluforge_structured["neurons"]]
    assert sum(heads) == LAYERS * TINY_HEADS // 2 and min(heads) >= 1
    assert sum(neurons) == round(LAYERS * TINY_NEURONS * 0.75)
    d = HIDDEN // TINY_HEADS
    for layer, h, n in zip(q.bert.encoder.layer, heads, neurons, strict=True):
        assert layer.attention.self.query.out_features == h * d == layer.attention.output.dense.in_features
        assert layer.intermediate.dense.out_features == n == layer.output.dense.in_features
    removed_heads, removed_neurons = LAYERS * TINY_HEADS - sum(heads), LAYERS * TINY_NEURONS - sum(neurons)
    per_head = 3 * (HIDDEN * d + d) + d * HIDDEN  # query/key/value rows and biases, attention output columns
    per_neuron = HIDDEN + 1 + HIDDEN  # FFN input row and bias, FFN output column
    assert before - _count(q) == removed_heads * per_head + removed_neurons * per_neuron
    out = q(**x).logits
    assert out.shape == (3, 2)
    save_compressed(q, cfg, tmp_path / "m")
    again = load_compressed(tmp_path / "m", tiny_model("bert", seed=1))
    assert _count(again) == _count(q)
    assert torch.equal(again(**x).logits, out)


def test_pruned_heads_are_the_lowest_fisher_scores(tiny_model):
    import torch

    from nluforge.compress.structured.prune import blocks, fisher_scores, keep_most_important

    model = tiny_model("bert").eval()
    layers = blocks(model)
    heads, neurons = fisher_scores(model, layers, _batches())
    assert [len(h) for h in heads] == [TINY_HEADS] * LAYERS and all((n >= 0).all() for n in neurons)
    keep = keep_most_important(neurons, 0.5)
    kept = torch.cat([neurons[i][k] for i, k in enumerate(keep)])
    dropped = torch.cat([neurons[i][[u for u in range(TINY_NEURONS) if u not in k]] for i, k in enumerate(keep)])
    assert len(kept) == len(dropped) and dropped.max() <= kept.min()


def test_fisher_score_is_the_sum_of_per_example_squared_mask_gradients(tiny_model):
    """Batching must not mix examples: the score of 4 examples in one batch equals 4 batches of one."""
    import torch

    from nluforge.compress.structured.prune import blocks, fisher_scores

    model = tiny_model("bert").eval()
    batch = _batches(1, 4)[0]
    together = fisher_scores(model, blocks(model), [batch])
    apart = fisher_scores(model, blocks(model), [{k: v[i:i + 1] for k, v in batch.items()} for i in range(4)])
    for a, b in zip([*together[0], *together[1]], [*apart[0], *apart[1]], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-10)


def test_every_layer_keeps_a_head_and_a_neuron():
    import torch

    from nluforge.compress.structured.prune import keep_most_important

    scores = [torch.tensor([0.0, 0.0]), torch.tensor([5.0, 6.0])]
    assert keep_most_important(scores, 0.75) == [[1], [1]]  # 3 asked, the first layer's last one stays


def test_structured_without_calibration_or_on_a_wrapped_model_is_a_user_error(tiny_model, tokenizer):
    from nluforge.compress import compress, compress_config
    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    cfg = compress_config("structured")
    with pytest.raises(UserError, match="needs labelled calibration batches"):
        compress(tiny_model("bert"), cfg)
    dylora = method_module("dylora").adapt(tiny_model("bert"), method_config("dylora", {}), tokenizer=tokenizer,
                                           task=get_task("sst2"))
    with pytest.raises(UserError) as err:
        compress(dylora, cfg, calibration=_batches(1))
    assert "DyLoRAModel" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("options, needle", [
    ({"heads": 1.0}, "structured: heads must be in [0, 1)"),
    ({"neurons": -0.5}, "structured: neurons must be in [0, 1)"),
    ({"heads": 0, "neurons": 0}, "nothing to prune"),
    ({"calibration_examples": 0}, "calibration_examples and batch_size must be >= 1"),
])
def test_bad_options_are_one_line_user_errors(options, needle):
    from nluforge.compress import compress_config

    with pytest.raises(UserError) as err:
        compress_config("structured", options)
    assert needle in str(err.value) and "\n" not in str(err.value)
