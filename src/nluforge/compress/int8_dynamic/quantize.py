"""Dynamic int8 quantization of a trained encoder.

Paper: Zafrir, Boudoukh, Izsak & Wasserblat 2019, "Q8BERT: Quantized 8Bit BERT" (arXiv:1910.06188):
symmetric linear 8-bit quantization of every fully connected layer's weights and of the embedding
tables, activations quantized on the fly. The embedding tables follow Shen et al. 2020, "Q-BERT"
(AAAI), which quantizes them group-wise; here a group is one row (one token).

Departures from the papers:
- Post-training only: Q8BERT fine-tunes with quantization-aware training (fake quantization and a
  straight-through estimator). Here the trained model is quantized once, as PyTorch's dynamic
  quantization does (``torch.ao.quantization.quantize_dynamic``): weights int8, activations
  quantized per batch at run time by the fbgemm/x86 kernels. Q8BERT reports that post-training
  dynamic quantization loses more accuracy than QAT on some tasks.
- Weights per output channel by default (``per_channel``; Q8BERT: one scale per matrix), and
  activations in the full 8 bits (``activation_bits``; torch's dynamic linear always uses 7). Each
  of the two changes recovered about 1.5 points of the 3.6 that torch's defaults lost on SST-2.
- Layer norms, softmax and GELU stay in fp32, as in Q8BERT; biases stay fp32 (Q8BERT stores them
  in int32, which the PyTorch kernels do not take).
- A peft model is merged first (LoRA/IA3/AdaLoRA into the base weights); prompt/prefix-tuning models
  keep their soft prompts in fp32.

Storage: no pickle. ``model.safetensors`` holds, for each quantized linear ``name``,
``name.weight_int8`` (out, in) int8, ``name.weight_scale`` / ``name.weight_zero_point`` ((1,) per tensor,
(out,) per channel) and
``name.bias``; each 8-bit embedding's ``weight_int8`` (V, D) and ``scale`` (V, 1) are buffers of
:class:`Int8Embedding`; every other tensor is saved as is. :func:`load` rebuilds the same module
structure on a fresh copy of the uncompressed model and fills it in.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from nluforge.compress.int8_dynamic.config import Int8DynamicConfig
from nluforge.compress.targets import servable_form
from nluforge.core.errors import UserError

WEIGHTS = "model.safetensors"


class Int8Embedding(nn.Module):
    """An embedding table stored in int8 with one fp32 scale per row; looks up, then dequantizes."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings, 1))

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> Int8Embedding:
        q = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        w = emb.weight.detach().float()  # (V, D)
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0  # (V, 1), symmetric per row
        q.weight_int8.copy_(torch.round(w / scale).clamp(-127, 127).to(torch.int8))
        q.scale.copy_(scale)
        return q

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table, (V, D) (for code that reads ``get_input_embeddings().weight``)."""
        return self.weight_int8.float() * self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids (B, T) → (B, T, D)
        return F.embedding(ids, self.weight_int8).float() * F.embedding(ids, self.scale)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row"


class Int8Linear(DynamicLinear):
    """torch's dynamic int8 linear with the activation range as an attribute: torch's own module always
    quantizes activations to 7 bits (``reduce_range=True``); ``reduce_range = False`` uses all 8."""

    reduce_range = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., in) → (..., out)
        y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=self.reduce_range)
        return y.to(x.dtype)

    def _get_name(self) -> str:
        return "Int8Linear"


def _skipped(name: str, skip: list[str]) -> bool:
    return any(name == s or (s.endswith(".") and name.startswith(s)) or name.startswith(s + ".") for s in skip)


def _reads_weights(model: nn.Module) -> list[str]:
    """Prefixes of modules whose forward reads their linears' ``.weight`` tensors (torch's
    TransformerEncoder/DecoderLayer fast-path checks), which a dynamic int8 linear exposes as a method:
    those stay fp32 (e.g. LST's side network)."""
    kinds = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
    return [f"{n}." for n, m in model.named_modules() if isinstance(m, kinds)]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _quantize_structure(model: nn.Module, linears: list[str], embeddings: dict[str, Int8Embedding],
                        cfg: Int8DynamicConfig) -> nn.Module:
    """Swap in 8-bit embeddings and dynamic int8 linears (:class:`Int8Linear`) at the named places."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    for name, q in embeddings.items():
        _set_module(model, name, q)
    qconfig = per_channel_dynamic_qconfig if cfg.per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (torchao is the successor)
        model = quantize_dynamic(model, dict.fromkeys(linears, qconfig), dtype=torch.qint8,
                                 mapping={nn.Linear: Int8Linear}, inplace=True)
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.reduce_range = cfg.activation_bits == 7
    return model


def compress(model: nn.Module, cfg: Int8DynamicConfig) -> nn.Module:
    """Quantize ``model`` for CPU inference: int8 linears, and 8-bit embedding tables when asked."""
    model = servable_form(model).to("cpu").eval()
    skip = [*cfg.skip, *_reads_weights(model)]
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear and not _skipped(n, skip)]
    embeddings = {}
    if cfg.embeddings:
        embeddings = {n: Int8Embedding.from_float(m) for n, m in model.named_modules()
                      if type(m) is nn.Embedding and not _skipped(n, cfg.skip)}
    if not linears and not embeddings:
        raise UserError("int8_dynamic found no nn.Linear or nn.Embedding to quantize (check 'skip')")
    return _quantize_structure(model, linears, embeddings, cfg)


def _dynamic_linears(model: nn.Module) -> dict[str, Any]:
    return {n: m for n, m in model.named_modules() if isinstance(m, DynamicLinear)}


def save(model: nn.Module, cfg: Int8DynamicConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors``; return the layout (which modules are quantized) for the manifest."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    linears = _dynamic_linears(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in linears.items():
        w = mod.weight()
        tensors[f"{name}.weight_int8"] = w.int_repr()
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            tensors[f"{name}.weight_scale"] = torch.tensor([w.q_scale()], dtype=torch.float64)
            tensors[f"{name}.weight_zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) and w.q_per_channel_axis() == 0:
            tensors[f"{name}.weight_scale"] = w.q_per_channel_scales().to(torch.float64)  # (out,)
            tensors[f"{name}.weight_zero_point"] = w.q_per_channel_zero_points().to(torch.int64)
        else:
            raise UserError(f"int8_dynamic: unexpected weight scheme {w.qscheme()} in {name}")
        if mod.bias() is not None:
            tensors[f"{name}.bias"] = mod.bias().detach()
    prefixes = tuple(f"{n}." for n in linears)
    for key, value in model.state_dict().items():
        if not key.startswith(prefixes) and isinstance(value, torch.Tensor):
            tensors[key] = value.detach()
    # clone: safetensors refuses tensors that share storage (tied weights)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(folder / WEIGHTS),
              metadata={"format": "nluforge-int8_dynamic"})
    embeddings = [n for n, m in model.named_modules() if isinstance(m, Int8Embedding)]
    return {"linear": sorted(linears), "embedding": embeddings}


def load(folder: Path, model: nn.Module, cfg: Int8DynamicConfig, layout: dict[str, Any]) -> nn.Module:
    """Rebuild the quantized model on ``model`` (the uncompressed structure) from ``folder``."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / WEIGHTS))
    model = servable_form(model).to("cpu").eval()
    try:
        for n in layout["linear"]:
            have, saved = tuple(model.get_submodule(n).weight.shape), tuple(tensors[f"{n}.weight_int8"].shape)
            if have != saved:
                raise KeyError(f"{n} is {have} here but {saved} in the file")
        embeddings = {n: Int8Embedding(*tensors[f"{n}.weight_int8"].shape, model.get_submodule(n).padding_idx)
                      for n in layout["embedding"]}
        model = _quantize_structure(model, list(layout["linear"]), embeddings, cfg)
        linears = _dynamic_linears(model)
        if sorted(linears) != sorted(layout["linear"]):
            raise KeyError(f"{len(layout['linear'])} quantized linears expected, {len(linears)} rebuilt")
        for name, mod in linears.items():
            q, scale, zero = (tensors.pop(f"{name}.{part}") for part in ("weight_int8", "weight_scale",
                                                                           "weight_zero_point"))
            if scale.numel() == 1:
                qweight = torch._make_per_tensor_quantized_tensor(q, float(scale), int(zero))
            else:  # per output channel (axis 0)
                qweight = torch._make_per_channel_quantized_tensor(q, scale, zero, 0)
            mod.set_weight_bias(qweight, tensors.pop(f"{name}.bias", None))
    except (KeyError, AttributeError) as err:
        raise UserError(f"{folder} does not match the run's model structure ({err}); recompress the parent "
                        "run") from None
    # load_state_dict would ask the quantized linears for their packed form: fill the rest by name
    prefixes = tuple(f"{n}." for n in layout["linear"])
    targets = {k: v for k, v in [*model.named_parameters(remove_duplicate=False),
                                 *model.named_buffers(remove_duplicate=False)] if not k.startswith(prefixes)}
    expected = {k for k in model.state_dict() if not k.startswith(prefixes)}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - set(targets))
    unexpected += [k for k, v in tensors.items() if k in targets and targets[k].shape != v.shape]
    if missing or unexpected:
        raise UserError(f"{folder / WEIGHTS} does not match the run's model (missing {missing[:3]}, "
                        f"unexpected or misshapen {unexpected[:3]}); recompress the parent run")
    with torch.no_grad():
        for key, value in tensors.items():
            targets[key].copy_(value)
    return model.eval()
