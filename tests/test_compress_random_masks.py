"""The ``random_masks`` compressor: random masks at an exact sparsity, the best by calibration loss, exact reload."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError


def _batches(n_batches=2, batch=4, length=10, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, 3000, (batch, length), generator=g),
             "attention_mask": torch.ones(batch, length, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch,), generator=g)} for _ in range(n_batches)]


def test_random_masks_prune_each_tensor_exactly_and_keep_the_lowest_loss_candidate(tiny_model):
    import torch
    from torch import nn

    from nluforge.compress import compress, compress_config
    from nluforge.compress.calibration import mean_loss

    cal = _batches()
    before = {n: m.weight.detach().clone() for n, m in tiny_model("bert").named_modules()
              if type(m) is nn.Linear and n != "classifier"}
    q = compress(tiny_model("bert"), compress_config("random_masks", {"sparsity": 0.6, "candidates": 5}),
                 calibration=cal)
    for name, w in before.items():
        pruned = q.get_submodule(name).weight
        assert int((pruned == 0).sum()) == round(0.6 * w.numel())
        assert torch.equal(pruned[pruned != 0], w[pruned != 0])
    scores = q._nluforge_random_masks
    losses = scores["candidate_losses"]
    assert len(set(losses)) == 5 and scores["kept"] == losses.index(min(losses))
    assert mean_loss(q, cal) == pytest.approx(min(losses), abs=1e-5)  # the model holds the kept mask
    one = compress(tiny_model("bert"), compress_config("random_masks", {"sparsity": 0.6, "candidates": 1}),
                   calibration=cal)
    assert one._nluforge_random_masks["candidate_losses"] == [losses[0]]  # candidate i: seed + i
    assert mean_loss(q, cal) <= mean_loss(one, cal) + 1e-6


def test_random_masks_store_sparse_and_reload_identically(tmp_path, tiny_model):
    import json

    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    x = {k: v for k, v in _batches(1, 3, 12, seed=3)[0].items() if k != "labels"}
    cfg = compress_config("random_masks", {"sparsity": 0.9, "candidates": 2, "embeddings": True})
    q = compress(tiny_model("bert"), cfg, calibration=_batches())
    out = q(**x).logits
    save_compressed(q, cfg, tmp_path / "m")
    fp32 = sum(p.numel() * 4 for p in tiny_model("bert").parameters())
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 0.2 * fp32
    layout = json.loads((tmp_path / "m" / "compress.json").read_text())["layout"]
    assert len(layout["candidate_losses"]) == 2 and abs(layout["sparsity"] - 0.9) < 1e-3
    assert torch.equal(load_compressed(tmp_path / "m", tiny_model("bert", seed=1))(**x).logits, out)


@pytest.mark.parametrize("options, needle", [
    ({"sparsity": 1.0}, "random_masks: sparsity must be in [0, 1)"),
    ({"candidates": 0}, "random_masks: candidates must be >= 1"),
    ({"batch_size": 0}, "calibration_examples and batch_size must be >= 1"),
])
def test_bad_options_are_one_line_user_errors(options, needle):
    from nluforge.compress import compress_config

    with pytest.raises(UserError) as err:
        compress_config("random_masks", options)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_random_masks_without_calibration_is_a_user_error(tiny_model):
    from nluforge.compress import compress, compress_config

    with pytest.raises(UserError, match="needs labelled calibration batches"):
        compress(tiny_model("bert"), compress_config("random_masks"))
