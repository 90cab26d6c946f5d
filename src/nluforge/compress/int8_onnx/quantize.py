"""int8 ONNX: export the servable model with ``torch.onnx``, quantize it with onnxruntime, serve it there.

Papers: Zafrir, Boudoukh, Izsak & Wasserblat 2019, "Q8BERT: Quantized 8Bit BERT" (arXiv:1910.06188):
8-bit symmetric weights and dynamically quantized activations for every linear layer of BERT keep its
accuracy; onnxruntime's ``quantize_dynamic`` (Microsoft, onnxruntime.ai "Quantize ONNX models") is the
same scheme with int8 GEMM kernels, which is why it runs faster on CPU than fp32 PyTorch.

We use the libraries as they are (no code of our own for the quantizer): ``torch.onnx.export`` (the
TorchScript exporter, dynamic batch and sequence axes; the dynamo exporter when that one fails) and
``onnxruntime.quantization.quantize_dynamic``. Options recorded in the manifest: per-channel weight
scales (``per_channel``), int8 weights (``QInt8``), ``MatMul``/``Gemm``/``Attention`` and (with
``embeddings``) ``Gather`` nodes quantized.

Departures from Q8BERT:
- Post-training only: no quantization-aware fine-tuning (Q8BERT trains with fake quantization).
- Embedding tables in 8 bits too (as Q-BERT does), when ``embeddings`` is set.
- The classification head is quantized with the rest (a ``Gemm``/``MatMul`` like the others).

Serving: :class:`OrtModel` wraps an ``onnxruntime.InferenceSession`` as an ``nn.Module`` whose forward
takes the tokenizer's tensors and returns ``.logits`` (a torch tensor), so ``predict``, ``nluforge
eval``/``predict`` and the latency meters use it like any model. Its session has as many intra-op
threads as torch (``torch.get_num_threads()`` when it is built, i.e. the run's ``train.num_threads``).
Storage: ``model.onnx`` (the quantized graph, weights inside; no pickle).

Refused (a UserError naming the reason): a served model that is not a plain Hugging Face model (a peft
prompt or prefix wrapper, a method's own module), or one whose forward does not export.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.int8_onnx.config import Int8OnnxConfig
from nluforge.compress.targets import servable_form
from nluforge.core.errors import UserError

WEIGHTS = "model.onnx"
OP_TYPES = ["MatMul", "Gemm", "Attention"]


class _Logits:
    """What a Hugging Face classifier returns, as far as nluforge reads it: ``.logits``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class OrtModel(nn.Module):
    """An onnxruntime session that looks like the torch classifier it was exported from."""

    def __init__(self, onnx_bytes: bytes, inputs: list[str], num_threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        self.onnx_bytes, self.input_names = onnx_bytes, list(inputs)
        # predict() and the meters read the device from the first parameter: an empty one on the CPU
        self._device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_ignored) -> _Logits:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["attention_mask"] is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feed = {name: given[name].detach().cpu().to(torch.int64).numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return _Logits(torch.from_numpy(logits))


class _Export(nn.Module):
    """The Hugging Face model with positional inputs and one output (what the ONNX graph exposes)."""

    def __init__(self, model: nn.Module, inputs: list[str]):
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, *args):
        return self.model(**dict(zip(self.inputs, args, strict=True))).logits


def _input_names(model: nn.Module) -> list[str]:
    params = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in params]


def export_onnx(model: nn.Module, path: Path, opset: int) -> list[str]:
    """Write ``model`` (a plain HF classifier) as ONNX with dynamic batch and sequence axes; its inputs."""
    if hasattr(model, "peft_config"):  # servable_form could not merge it: virtual tokens or a key/value prefix
        raise UserError(f"int8_onnx exports models whose forward is the encoder's own; this is an unmerged peft "
                        f"{type(model).__name__} (prompt or prefix tuning); use int8_dynamic or groupwise")
    inputs = _input_names(model)
    if "input_ids" not in inputs:
        raise UserError(f"int8_onnx: {type(model).__name__}.forward takes no input_ids; use int8_dynamic")
    example = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                    for n in inputs)
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs} | {"logits": {0: "batch"}}
    wrapped = _Export(model, inputs).eval()
    errors = []
    for dynamo in (False, True):  # the TorchScript exporter takes dynamic_axes directly; dynamo as a fallback
        try:
            kw = ({"dynamic_axes": axes} if not dynamo else
                  {"dynamic_shapes": tuple({0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
                                           for _ in inputs)})
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on transformers' mask code, not errors
                torch.onnx.export(wrapped, example, str(path), input_names=inputs, output_names=["logits"],
                                  opset_version=opset, dynamo=dynamo, external_data=False, **kw)
            _check_export(wrapped, path, inputs)
            return inputs
        except Exception as err:  # noqa: BLE001 - the exporters raise many types; try the other one
            errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
    raise UserError(f"int8_onnx: the model's forward does not export to ONNX ({errors[-1]}); use int8_dynamic")


def _check_export(wrapped: nn.Module, path: Path, inputs: list[str]) -> None:
    """The fp32 graph gives the torch logits on another batch and sequence size, with padding (a trace
    that baked a shape or a branch in would not)."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 1000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 6:] = 0
    given = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(given[n] for n in inputs)
    with torch.no_grad():
        ref = wrapped(*args).numpy()
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["logits"], {n: a.numpy() for n, a in zip(inputs, args, strict=True)})
    if got.shape != ref.shape or abs(got - ref).max() > 1e-3 * max(1.0, abs(ref).max()):
        raise ValueError("the exported graph gives other logits than the model at another input shape")


def compress(model: nn.Module, cfg: Int8OnnxConfig) -> OrtModel:
    """Export ``model`` to ONNX, quantize it to int8 with onnxruntime, and return the session as a model."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise UserError("int8_onnx needs onnx and onnxruntime: pip install 'nluforge[compress]'") from None
    model = servable_form(model).to("cpu").eval()
    with tempfile.TemporaryDirectory(prefix="nluforge-onnx-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        inputs = export_onnx(model, fp32, cfg.opset)
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "consider pre-processing"
        quantize_dynamic(fp32, int8, op_types_to_quantize=OP_TYPES + (["Gather"] if cfg.embeddings else []),
                         per_channel=cfg.per_channel, weight_type=QuantType.QInt8)
        return OrtModel(int8.read_bytes(), inputs)


def save(model: nn.Module, cfg: Int8OnnxConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.onnx``; the layout names its inputs and the quantizer's options."""
    if not isinstance(model, OrtModel):
        raise UserError("int8_onnx: this model was not compressed by int8_onnx.compress; compress it first")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WEIGHTS).write_bytes(model.onnx_bytes)
    return {"inputs": model.input_names, "weight_type": "QInt8", "per_channel": cfg.per_channel,
            "op_types": OP_TYPES + (["Gather"] if cfg.embeddings else []), "opset": cfg.opset}


def load(folder: Path, model: nn.Module, cfg: Int8OnnxConfig, layout: dict[str, Any]) -> OrtModel:
    """An onnxruntime session over ``folder/model.onnx`` (``model``, the torch structure, is not needed)."""
    path = folder / WEIGHTS
    if not path.is_file():
        raise UserError(f"{path} is missing; recompress the parent run")
    try:
        return OrtModel(path.read_bytes(), layout["inputs"])
    except ImportError:
        raise UserError("int8_onnx needs onnx and onnxruntime: pip install 'nluforge[compress]'") from None
