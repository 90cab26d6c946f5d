"""``oneshot`` (Kwon et al. 2022): the budgeted Fisher mask search, physical removal, and least-squares
mask tuning that brings each pruned layer's output closer to the unpruned model's."""

from __future__ import annotations

import pytest


def _calibration(n_batches=3, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, 3000, (8, 12), generator=g),
             "attention_mask": torch.ones(8, 12, dtype=torch.long), "labels": torch.randint(0, 2, (8,), generator=g)}
            for _ in range(n_batches)]


def test_search_keeps_the_most_fisher_importance_within_the_budget():
    import torch

    from nluforge.compress.oneshot.prune import search

    heads = [torch.tensor([9.0, 0.1]), torch.tensor([8.0, 0.2])]  # two strong heads, two weak
    neurons = [torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])]
    h, n = search(heads, neurons, head_cost=4.0, neuron_cost=1.0, keep_fraction=0.5)  # budget 12 of 24
    assert h * 4 + n <= 12
    assert (h, n) == (2, 4)  # both strong heads, then neurons fill the rest (1 head + 8 neurons: 12 < 20)


def test_prunes_to_the_cost_budget_and_round_trips(tiny_model, tmp_path):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    cal = _calibration()
    x = {k: v for k, v in cal[0].items() if k != "labels"}
    model = tiny_model("bert")
    before = sum(p.numel() for p in model.parameters())
    cfg = compress_config("oneshot", {"sparsity": 0.5, "constraint": "params"})
    q = compress(model, cfg, calibration=cal)
    info = q._nluforge_oneshot
    assert info["kept_cost_fraction"] <= 0.5 + 0.05  # at most one unit per layer over the budget
    assert sum(p.numel() for p in q.parameters()) < before
    out = q(**x).logits
    assert out.shape == (8, 2)
    save_compressed(q, cfg, tmp_path / "m")
    assert torch.equal(load_compressed(tmp_path / "m", tiny_model("bert", seed=1))(**x).logits, out)


def test_reconstruction_lowers_the_pruned_layers_output_error():
    import torch
    from conftest import make_tiny

    from nluforge.compress import compress, compress_config

    cal = _calibration(4)
    teacher = make_tiny("bert")
    x = {k: torch.cat([b[k] for b in cal]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        want = teacher.bert(**x).last_hidden_state
    errors = {}
    for rec in (False, True):
        q = compress(make_tiny("bert"), compress_config("oneshot", {"sparsity": 0.5, "reconstruct": rec}),
                     calibration=cal)
        with torch.no_grad():
            errors[rec] = float((q.bert(**x).last_hidden_state - want).pow(2).mean())
        if rec:
            rows = q._nluforge_oneshot["reconstruction"]
            assert len(rows) == 2
            assert all(r[k]["error_after"] <= r[k]["error_before"] for r in rows for k in ("attention", "ffn"))
            assert any(r[k]["error_after"] < r[k]["error_before"] for r in rows for k in ("attention", "ffn"))
    assert errors[True] < errors[False]


@pytest.mark.parametrize("options", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"finetune_steps": -1}])
def test_bad_options_are_one_line_errors(options):
    from nluforge.compress import compress_config
    from nluforge.core.errors import UserError

    with pytest.raises(UserError) as err:
        compress_config("oneshot", options)
    assert "oneshot" in str(err.value) and "\n" not in str(err.value)
