"""The ``magnitude`` compressor: exact target sparsity, sparse storage, exact reload."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError


def _inputs(batch=4, length=12):
    import torch

    return {"input_ids": torch.randint(1000, 3000, (batch, length)),
            "attention_mask": torch.ones(batch, length, dtype=torch.long)}


def _linears(model):
    from torch import nn

    return {n: m.weight for n, m in model.named_modules() if type(m) is nn.Linear and n != "classifier"}


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("target", [0.3, 0.77])
def test_magnitude_reaches_the_target_sparsity_and_drops_the_smallest_weights(scope, target, tiny_model):
    import torch

    from nluforge.compress import compress, compress_config

    model = tiny_model("bert")
    before = {n: w.detach().clone() for n, w in _linears(model).items()}
    q = compress(model, compress_config("magnitude", {"sparsity": target, "scope": scope}))
    after = _linears(q)
    n = sum(w.numel() for w in after.values())
    zeros = sum(int((w == 0).sum()) for w in after.values())
    if scope == "global":
        assert abs(zeros / n - target) <= 1 / n
    for name, w in after.items():
        kept = w != 0
        assert torch.equal(w[kept], before[name][kept])  # survivors unchanged
        if scope == "layer":
            assert abs(float((~kept).float().mean()) - target) <= 1 / w.numel()
    if scope == "global":  # one threshold for all: every pruned weight is no larger than every kept one
        dropped = torch.cat([before[k][after[k] == 0].abs() for k in after])
        kept = torch.cat([before[k][after[k] != 0].abs() for k in after])
        assert dropped.max() <= kept.min()
    assert torch.equal(q.classifier.weight, tiny_model("bert").classifier.weight)  # skipped by default
    assert torch.equal(q.bert.embeddings.word_embeddings.weight,
                       tiny_model("bert").bert.embeddings.word_embeddings.weight)  # embeddings off by default


def test_magnitude_is_stored_sparse_and_reloads_identically(tmp_path, tiny_model):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    x = _inputs()
    ref = tiny_model("bert")(**x).logits
    cfg = compress_config("magnitude", {"sparsity": 0.9, "embeddings": True})
    q = compress(tiny_model("bert"), cfg)
    out = q(**x).logits
    assert out.shape == ref.shape and not torch.equal(out, ref)
    save_compressed(q, cfg, tmp_path / "m")
    fp32 = sum(p.numel() * 4 for p in tiny_model("bert").parameters())
    pruned = sum(p.numel() for n, p in q.named_parameters() if n.endswith("weight") and p.dim() == 2
                 and not n.startswith("classifier"))
    claimed = fp32 - pruned * 4 + pruned / 8 + pruned * 0.1 * 4  # bitmask + the kept 10% of values
    size = (tmp_path / "m" / "model.safetensors").stat().st_size
    assert claimed <= size < claimed + 20_000 and size < 0.2 * fp32
    again = load_compressed(tmp_path / "m", tiny_model("bert", seed=1))
    assert torch.equal(again(**x).logits, out)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), q.state_dict().values(), strict=True))


def test_sparsity_zero_changes_nothing(tiny_model):
    import torch

    from nluforge.compress import compress, compress_config

    q = compress(tiny_model("bert"), compress_config("magnitude", {"sparsity": 0.0}))
    assert all(torch.equal(a, b) for a, b in zip(q.parameters(), tiny_model("bert").parameters(), strict=True))


@pytest.mark.parametrize("options, needle", [
    ({"sparsity": 1.0}, "magnitude: sparsity must be in [0, 1)"),
    ({"sparsity": -0.1}, "magnitude: sparsity must be in [0, 1)"),
    ({"scope": "model"}, "scope"),
])
def test_bad_options_are_one_line_user_errors(options, needle):
    from nluforge.compress import compress_config

    with pytest.raises(UserError) as err:
        compress_config("magnitude", options)
    assert needle in str(err.value) and "\n" not in str(err.value)
