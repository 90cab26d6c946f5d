"""Every compressor × every method's adapted model: compress, save, reload on a fresh adaptation
(other weights) and get the same logits; and ``nluforge compressors`` lists each with its paper."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError

STEPS = {"groupwise": {"bits": 3, "group_size": 16}, "magnitude": {"sparsity": 0.5},
         "structured": {"heads": 0.5, "neurons": 0.5}, "random_masks": {"sparsity": 0.5, "candidates": 2},
         "hessian_mixed": {"avg_bits": 3, "group_size": 16, "iterations": 3},
         "oneshot": {"sparsity": 0.5}}
# methods whose served model is a plain Hugging Face encoder with nn.Linear projections (merged peft too)
STRUCTURED = {"full", "bitfit", "lora", "ia3", "adalora", "linear_probe", "setfit"}
# methods whose forward has no double backward on CPU (LST's side network: torch's fused attention)
NO_HESSIAN = {"lst"}


def _methods():
    from nluforge.methods import METHODS

    return list(METHODS.names())


@pytest.mark.parametrize("compressor", sorted(STEPS))
@pytest.mark.parametrize("method", _methods())
def test_compressed_model_of_every_method_round_trips(method, compressor, tmp_path, tiny_model, tokenizer):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed
    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    module, mc, spec = method_module(method), method_config(method, {}), get_task("sst2")
    head = "masked_lm" if getattr(module, "HEAD", "") == "masked_lm" else "seq_cls"

    def adapted(seed):
        return module.adapt(tiny_model("bert", seed=seed, head=head), mc, tokenizer=tokenizer, task=spec).eval()

    x = {"input_ids": torch.randint(1000, 3000, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}
    cfg = compress_config(compressor, STEPS[compressor])
    ref = adapted(0)(**x).logits
    calibration = [{**x, "labels": torch.tensor([0, 1])}]
    if compressor in ("structured", "oneshot") and method not in STRUCTURED:
        with pytest.raises(UserError) as err:
            compress(adapted(0), cfg, calibration=calibration)
        assert "structured pruning" in str(err.value) and "\n" not in str(err.value)
        return
    if compressor == "hessian_mixed" and method in NO_HESSIAN:
        with pytest.raises(UserError) as err:
            compress(adapted(0), cfg, calibration=calibration)
        assert "second derivative" in str(err.value) and "\n" not in str(err.value)
        return
    q = compress(adapted(0), cfg, calibration=calibration)
    out = q(**x).logits
    assert out.shape == ref.shape and not torch.equal(out, ref)
    save_compressed(q, cfg, tmp_path / "m")
    assert torch.equal(load_compressed(tmp_path / "m", adapted(1))(**x).logits, out)


def test_compressors_command_lists_each_compressor_with_its_paper():
    from typer.testing import CliRunner

    from nluforge.cli.app import _load_commands, app
    from nluforge.compress import COMPRESSORS

    _load_commands()
    result = CliRunner().invoke(app, ["compressors"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for entry in COMPRESSORS.entries():
        line = next(row for row in result.output.splitlines() if row.split()[:1] == [entry.name])
        assert entry.meta["paper"].split(",")[0] in line
