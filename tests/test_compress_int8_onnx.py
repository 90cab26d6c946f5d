"""``int8_onnx``: ONNX export + onnxruntime int8; the session serves predict() like the torch model."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError


def _inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 3000, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0  # padding: the exported graph must honour the mask like the torch model
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("method", ["full", "bitfit", "lora", "adapter"])
def test_onnx_int8_logits_match_torch_and_round_trip(method, tiny_model, tokenizer, tmp_path):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed
    from nluforge.compress.int8_onnx.quantize import OrtModel
    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    module, mc = method_module(method), method_config(method, {})

    def adapted(seed):
        model = module.adapt(tiny_model("bert", seed=seed), mc, tokenizer=tokenizer, task=get_task("sst2"))
        with torch.no_grad():  # fresh adapters are identity maps: make them change the output
            for name, p in model.named_parameters():
                if "lora_B" in name or "adapter" in name:
                    p.normal_(0, 0.05)
        return model.eval()

    torch.manual_seed(0)
    x = _inputs()
    ref_model = adapted(0)
    ref = ref_model(**x).logits
    cfg = compress_config("int8_onnx", {})
    q = compress(ref_model, cfg)
    assert isinstance(q, OrtModel)
    out = q(**x).logits
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=0.02), (out - ref).abs().max()
    short = q(**{k: v[:2, :5] for k, v in x.items()}).logits  # other batch and sequence sizes
    assert short.shape == (2, 2)
    save_compressed(q, cfg, tmp_path / "m")
    assert (tmp_path / "m" / "model.onnx").stat().st_size > 0
    assert torch.equal(load_compressed(tmp_path / "m", adapted(1))(**x).logits, out)


def test_session_uses_torchs_thread_count_and_predict_runs_through_it(tiny_model, tokenizer):
    import torch

    from nluforge.compress import compress, compress_config
    from nluforge.eval.meters import measure_latency
    from nluforge.eval.predict import predict
    from nluforge.models.inputs import encode

    model = tiny_model("bert")
    q = compress(model, compress_config("int8_onnx", {"per_channel": False}))
    assert q.session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    enc = encode([("a fine film",), ("dull and long , a waste",), ("ok",)], [1, 0, 1], tokenizer, 32)
    logits = predict(q, enc, batch_size=2, pad_id=0, regression=False)
    assert logits.shape == (3, 2)
    ref = predict(model, enc, batch_size=2, pad_id=0, regression=False)
    assert abs(logits - ref).max() < 0.02
    assert measure_latency(q, enc, batch_size=2, pad_id=0, regression=False, n_examples=3) > 0


def test_a_prompt_wrapper_is_refused_with_one_line(tiny_model, tokenizer):
    from nluforge.compress import compress, compress_config
    from nluforge.methods import method_config, method_module
    from nluforge.tasks import get_task

    model = method_module("prompt_tuning").adapt(tiny_model("bert"), method_config("prompt_tuning", {}),
                                                 tokenizer=tokenizer, task=get_task("sst2"))
    with pytest.raises(UserError) as err:
        compress(model, compress_config("int8_onnx", {}))
    assert "int8_onnx" in str(err.value) and "\n" not in str(err.value)
