"""L2: compressors. One verb, :func:`compress(model, cfg) -> model`; the config type picks the compressor.

Each compressor is a sub-package with the same file roles: ``config.py`` (its dataclass, importable
without torch, so a bad step fails before any model loads) and ``quantize.py`` (or ``prune.py``, ...)
with ``compress(model, cfg)`` (``compress(model, cfg, calibration=batches)`` for a config whose
``CALIBRATION`` is true), ``save(model, cfg, folder)`` and ``load(folder, model)``. Compressed
models are stored without pickle (safetensors plus a JSON manifest) and rebuilt on load.

A compressed model is a *derived run* (see ``nluforge.experiments.derived``): its own run directory,
with ``run_info.parent`` naming the run it came from.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.core.registry import Registry

COMPRESSORS: Registry[Any] = Registry("compressor")  # unknown name: lists the known ones
MANIFEST = "compress.json"  # in a compressed model folder: which compressor, its config, its layout

COMPRESSORS.register(
    "int8_dynamic", "nluforge.compress.int8_dynamic.config:Int8DynamicConfig",
    summary="int8 weights for every nn.Linear (dynamic activation quantization) and 8-bit embedding tables",
    paper="Zafrir et al. 2019, Q8BERT: Quantized 8Bit BERT (arXiv:1910.06188); embeddings per-row as in "
          "Shen et al. 2020, Q-BERT (AAAI)",
    impl="nluforge.compress.int8_dynamic.quantize",
)
COMPRESSORS.register(
    "groupwise", "nluforge.compress.groupwise.config:GroupwiseConfig",
    summary="2/3/4/8-bit weights (linears and embeddings), a scale and offset per group of weights, bit-packed",
    paper="Shen et al. 2020, Q-BERT: Hessian Based Ultra Low Precision Quantization of BERT (AAAI, "
          "arXiv:1909.05840), group-wise quantization",
    impl="nluforge.compress.groupwise.quantize",
)
COMPRESSORS.register(
    "int8_onnx", "nluforge.compress.int8_onnx.config:Int8OnnxConfig",
    summary="ONNX export + onnxruntime dynamic int8 quantization (per-channel weights, 8-bit embeddings), "
            "served by an onnxruntime session (extra: onnx)",
    paper="Zafrir et al. 2019, Q8BERT: Quantized 8Bit BERT (arXiv:1910.06188); onnxruntime quantize_dynamic",
    impl="nluforge.compress.int8_onnx.quantize",
)
COMPRESSORS.register(
    "hessian_mixed", "nluforge.compress.hessian_mixed.config:HessianMixedConfig",
    summary="Q-BERT mixed precision: each layer's top Hessian eigenvalue (power iteration) picks its bits "
            "from 2/3/4/8 under an average-bits budget; group-wise, bit-packed",
    paper="Shen et al. 2020, Q-BERT: Hessian Based Ultra Low Precision Quantization of BERT (AAAI, "
          "arXiv:1909.05840), Hessian-aware mixed precision",
    impl="nluforge.compress.hessian_mixed.quantize",
)
COMPRESSORS.register(
    "magnitude", "nluforge.compress.magnitude.config:MagnitudeConfig",
    summary="unstructured pruning of the smallest-magnitude weights to a target sparsity (global or per "
            "layer), stored as bitmask + values",
    paper="Han et al. 2015, Learning both Weights and Connections (NeurIPS, arXiv:1506.02626); Zhu & Gupta "
          "2017, To prune, or not to prune (arXiv:1710.01878)",
    impl="nluforge.compress.magnitude.prune",
)
COMPRESSORS.register(
    "structured", "nluforge.compress.structured.config:StructuredConfig",
    summary="removes the least important attention heads and FFN neurons (Fisher scores on calibration "
            "examples from the parent's train split): a smaller, faster model",
    paper="Kwon et al. 2022, A Fast Post-Training Pruning Framework for Transformers (NeurIPS, "
          "arXiv:2204.09656); head masks as in Michel et al. 2019 (NeurIPS)",
    impl="nluforge.compress.structured.prune",
)
COMPRESSORS.register(
    "oneshot", "nluforge.compress.oneshot.config:OneshotConfig",
    summary="retraining-free structured pruning: Fisher mask search under a FLOPs or parameter budget, then "
            "least-squares mask tuning of each pruned layer on calibration data; physically smaller",
    paper="Kwon et al. 2022, A Fast Post-Training Pruning Framework for Transformers (NeurIPS, "
          "arXiv:2204.09656)",
    impl="nluforge.compress.oneshot.prune",
)
COMPRESSORS.register(
    "random_masks", "nluforge.compress.random_masks.config:RandomMasksConfig",
    summary="random unstructured masks at a target sparsity, the best of N by calibration loss (a baseline "
            "for magnitude), stored as bitmask + values",
    paper="Liu et al. 2022, The Unreasonable Effectiveness of Random Pruning (ICLR, arXiv:2202.02643); Gale "
          "et al. 2019, The State of Sparsity in Deep Neural Networks (arXiv:1902.09574)",
    impl="nluforge.compress.random_masks.prune",
)


def compress_config(name: str, options: dict[str, Any] | None = None):
    """The typed config of compressor ``name`` built strictly from ``options``."""
    from nluforge.core.steps import resolve_step

    return resolve_step(COMPRESSORS, "compress", {"method": name, **(options or {})}, f"compress.{name}").config


def _impl(cfg: Any):
    """The implementation module of a config instance (its type picks it)."""
    for entry in COMPRESSORS.entries():
        if entry.load() is type(cfg):
            return importlib.import_module(entry.meta["impl"]), entry.name
    raise UserError(f"{type(cfg).__name__} is not a registered compressor config")


def needs_calibration(cfg: Any) -> bool:
    """Whether compressor config ``cfg`` scores the model on labelled batches (``CALIBRATION``)."""
    return bool(getattr(type(cfg), "CALIBRATION", False))


def compress(model, cfg, calibration=None):
    """Compress ``model`` (in place where the compressor can) and return the compressed model.

    ``calibration``: labelled batches (``input_ids``, ``attention_mask``, ``labels``, ...) for compressors
    that score the model first (:func:`needs_calibration`); the others ignore it.
    """
    module, name = _impl(cfg)
    if not needs_calibration(cfg):
        return module.compress(model, cfg)
    if not calibration:
        raise UserError(f"{name} needs labelled calibration batches to score the model; run it as a derived run "
                        f"(`nluforge compress RUN --method {name}`), which takes them from the parent's train split")
    return module.compress(model, cfg, calibration=calibration)


def save_compressed(model, cfg, folder: str | Path) -> None:
    """Write the compressed weights and a manifest (``compress.json``) into ``folder``."""
    module, name = _impl(cfg)
    folder = Path(folder)
    layout = module.save(model, cfg, folder)
    manifest = {"method": name, "version": cfg.VERSION, "config": _plain(cfg), "layout": layout}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def is_compressed(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def load_compressed(folder: str | Path, model):
    """Rebuild a compressed model: ``model`` has the uncompressed structure (weights are overwritten)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        cfg = compress_config(manifest["method"], manifest.get("config") or {})
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{folder / MANIFEST} is unreadable ({err}); recompress the run") from None
    if manifest.get("version") != cfg.VERSION:
        raise UserError(f"{folder} holds {manifest['method']} format version {manifest.get('version')}, this "
                        f"nluforge reads version {cfg.VERSION}; recompress the parent run")
    module, _ = _impl(cfg)
    return module.load(folder, model, cfg, manifest["layout"])


def _plain(cfg: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)
