"""``hessian_mixed`` (Q-BERT mixed precision): power iteration finds the top Hessian eigenvalue, sharper
layers get more bits within the average-bits budget, and the result saves and reloads exactly."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    import torch

    from nluforge.compress.hessian_mixed.quantize import top_eigenvalue

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    a = q @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, -0.3, 0.1])) @ q.T  # known spectrum, top 5.0
    w = torch.randn(6, requires_grad=True)
    b = torch.randn(3, 2, requires_grad=True)  # a second tensor in the group, Hessian 3 * I
    loss = 0.5 * w @ a @ w + 1.5 * (b * b).sum()
    grads = torch.autograd.grad(loss, [w, b], create_graph=True)
    est = top_eigenvalue(list(grads), [w, b], iterations=200, tol=1e-9, generator=g)
    assert est == pytest.approx(float(torch.linalg.eigvalsh(a).max()), rel=1e-3)


def test_allocation_gives_sharper_layers_more_bits_within_the_budget():
    from nluforge.compress.hessian_mixed.quantize import allocate_bits

    err = {b: 4.0 ** -b for b in (2, 3, 4, 8)}  # rounding error falls 4x per bit
    omega = {"flat": 0.01, "mid": 1.0, "sharp": 100.0}
    sizes = {"flat": 100, "mid": 100, "sharp": 100}
    bits = allocate_bits(omega, {g: err for g in omega}, sizes, avg_bits=3.0)
    assert bits["sharp"] > bits["flat"] and bits["sharp"] >= bits["mid"] >= bits["flat"]
    assert sum(bits[g] * sizes[g] for g in bits) / 300 <= 3.0


def test_compress_records_bits_and_eigenvalues_and_round_trips(tiny_model, tmp_path):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed
    from nluforge.compress.hessian_mixed.quantize import average_bits

    g = torch.Generator().manual_seed(0)
    cal = [{"input_ids": torch.randint(1000, 3000, (8, 10), generator=g),
            "attention_mask": torch.ones(8, 10, dtype=torch.long), "labels": torch.randint(0, 2, (8,), generator=g)}
           for _ in range(2)]
    x = {k: v for k, v in cal[0].items() if k != "labels"}
    model = tiny_model("bert")
    ref = model(**x).logits
    cfg = compress_config("hessian_mixed", {"avg_bits": 3, "group_size": 16, "iterations": 10})
    q = compress(model, cfg, calibration=cal)
    out = q(**x).logits
    assert out.shape == ref.shape and not torch.equal(out, ref)
    assert q.config._attn_implementation == "sdpa"  # switched back after the eager estimate
    save_compressed(q, cfg, tmp_path / "m")
    import json

    layout = json.loads((tmp_path / "m" / "compress.json").read_text())["layout"]
    assert set(layout["groups"]) >= {"embeddings", "layer.0", "layer.1"}
    assert all(len(v["eigenvalues"]) == 2 and v["bits"] in (2, 3, 4, 8) for v in layout["groups"].values())
    assert average_bits(layout) <= 3.0 and layout["avg_bits"] == pytest.approx(average_bits(layout), abs=1e-3)
    assert torch.equal(load_compressed(tmp_path / "m", tiny_model("bert", seed=1))(**x).logits, out)
    # packed on disk: well under the fp32 model
    fp32 = sum(p.numel() * 4 for p in tiny_model("bert").parameters())
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < fp32 / 5


@pytest.mark.parametrize("options", [{"choices": [2, 5]}, {"avg_bits": 9}, {"avg_bits": 1.5}])
def test_bad_bits_are_one_line_errors(options):
    from nluforge.compress import compress_config

    with pytest.raises(UserError) as err:
        compress_config("hessian_mixed", options)
    assert "hessian_mixed" in str(err.value) and "\n" not in str(err.value)
