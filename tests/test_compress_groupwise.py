"""The ``groupwise`` compressor: k-bit group-wise weights, bit-packed on disk, exact reload."""

from __future__ import annotations

import pytest

from nluforge.core.errors import UserError

X_IDS = (1000, 3000)


def _inputs(batch=4, length=12):
    import torch

    return {"input_ids": torch.randint(*X_IDS, (batch, length)),
            "attention_mask": torch.ones(batch, length, dtype=torch.long)}


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_then_unpack_gives_the_codes_back_in_ceil_n_bits_over_8_bytes(bits):
    import torch

    from nluforge.compress.groupwise.quantize import pack, unpack

    codes = torch.randint(0, 2**bits, (1001,))
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-1001 * bits // 8)
    assert torch.equal(unpack(packed, bits, 1001), codes.to(torch.int32))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_each_weight_is_within_half_a_step_of_its_group(bits):
    import torch

    from nluforge.compress.groupwise.quantize import dequantize_tensor, quantize_tensor

    torch.manual_seed(bits)
    w = torch.randn(37, 50) * torch.logspace(-3, 1, 50)  # groups of very different ranges; 1850 % 64 != 0
    qweight, scale, offset = quantize_tensor(w, bits, 64)
    assert scale.dtype == torch.float16 and scale.numel() == -(-w.numel() // 64)
    w_hat = dequantize_tensor(qweight, scale, offset, list(w.shape), bits, 64)
    bound = scale.float().repeat_interleave(64)[: w.numel()].view(w.shape) / 2
    assert ((w - w_hat).abs() <= bound * (1 + 1e-5) + 1e-7).all()
    assert len(torch.unique(w_hat.flatten()[:64])) <= 2**bits  # at most 2^k values a group


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_groupwise_shrinks_the_weights_and_reloads_identically(bits, tmp_path, tiny_model):
    import torch

    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    model = tiny_model("bert")
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = _inputs()
    ref = model(**x).logits  # (4, 2)
    cfg = compress_config("groupwise", {"bits": bits, "group_size": 32})
    q = compress(model, cfg)
    out = q(**x).logits
    assert out.shape == ref.shape and not torch.equal(out, ref)
    assert torch.equal(q.classifier.weight, original["classifier.weight"])  # skipped by default
    assert torch.equal(q.bert.embeddings.LayerNorm.weight, original["bert.embeddings.LayerNorm.weight"])
    changed = [n for n, p in q.named_parameters() if not torch.equal(p, original[n])]
    assert "bert.embeddings.word_embeddings.weight" in changed
    assert "bert.encoder.layer.1.output.dense.weight" in changed
    save_compressed(q, cfg, tmp_path / "m")
    # size: the quantized weights at bits/32 of fp32 plus 4 bytes (fp16 scale + offset) per group of 32
    quantized = sum(original[n].numel() for n in changed)
    rest = sum(p.numel() for n, p in original.items() if n not in changed)
    claimed = quantized * bits / 8 + quantized / 32 * 4 + rest * 4
    size = (tmp_path / "m" / "model.safetensors").stat().st_size
    assert claimed <= size < claimed * 1.02 + 20_000  # + the safetensors header
    assert size < (bits / 32 + 0.04) * sum(p.numel() * 4 for p in original.values()) + 20_000
    again = load_compressed(tmp_path / "m", tiny_model("bert", seed=1))  # other weights: all overwritten
    assert torch.equal(again(**x).logits, out)


def test_more_bits_stay_closer_to_the_original_model(tiny_model):

    from nluforge.compress import compress, compress_config

    x = _inputs()
    ref = tiny_model("bert")(**x).logits
    errors = [(compress(tiny_model("bert"), compress_config("groupwise", {"bits": b, "group_size": 32}))(**x)
               .logits - ref).abs().max().item() for b in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2]


def test_embeddings_false_and_skip_keep_those_weights_fp32(tiny_model):
    import torch

    from nluforge.compress import compress, compress_config

    model = tiny_model("bert")
    word = model.bert.embeddings.word_embeddings.weight.detach().clone()
    ffn = model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    q = compress(model, compress_config("groupwise", {"embeddings": False, "skip": ["classifier", "layer.0"]}))
    assert torch.equal(q.bert.embeddings.word_embeddings.weight, word)
    assert torch.equal(q.bert.encoder.layer[0].intermediate.dense.weight, ffn)
    assert not torch.equal(q.bert.encoder.layer[1].intermediate.dense.weight,
                           tiny_model("bert").bert.encoder.layer[1].intermediate.dense.weight)


@pytest.mark.parametrize("options, needle", [
    ({"bits": 5}, "groupwise: bits must be one of 2, 3, 4, 8, got 5"),
    ({"bits": 16}, "groupwise: bits must be one of 2, 3, 4, 8, got 16"),
    ({"group_size": 1}, "groupwise: group_size must be >= 2"),
])
def test_bad_options_are_one_line_user_errors(options, needle):
    from nluforge.compress import compress_config

    with pytest.raises(UserError) as err:
        compress_config("groupwise", options)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_skipping_everything_is_a_user_error(tiny_model):
    from nluforge.compress import compress, compress_config

    with pytest.raises(UserError, match="no nn.Linear or nn.Embedding"):
        compress(tiny_model("bert"), compress_config("groupwise", {"skip": ["bert", "classifier"]}))


def test_a_folder_of_another_structure_is_rejected(tmp_path, tiny_model):
    from nluforge.compress import compress, compress_config, load_compressed, save_compressed

    cfg = compress_config("groupwise")
    save_compressed(compress(tiny_model("bert"), cfg), cfg, tmp_path / "m")
    with pytest.raises(UserError, match="does not match"):
        load_compressed(tmp_path / "m", tiny_model("bert", num_labels=3))
