"""Checkpoint codecs: how training checkpoints are compressed (``train.checkpoint_codec``).

``none`` writes plain fp32 safetensors (:mod:`nluforge.train.checkpoint`); every other name is a codec
registered here with its config dataclass. A codec is an object with ``attach(initial_weights)``,
``encode_weights`` / ``decode_weights``, ``encode_optimizer`` / ``decode_optimizer``, ``commit`` and
``settings()`` (see :class:`~nluforge.train.codecs.dynaquant.DynaQuantCodec`). To add one, register
``(ConfigClass, CodecClass)`` under a lowercase name in :data:`CHECKPOINT_CODECS`.
"""

from __future__ import annotations

from typing import Any

from nluforge.core.config import build
from nluforge.core.errors import UserError
from nluforge.core.registry import Registry, suggest

CHECKPOINT_CODECS: Registry[tuple[type, type]] = Registry("checkpoint codec")
NONE = "none"


def _dynaquant():
    from nluforge.train.codecs.dynaquant import DynaQuantCodec, DynaQuantConfig

    return DynaQuantConfig, DynaQuantCodec


CHECKPOINT_CODECS.register("dynaquant", "nluforge.train.codecs:_dynaquant",
                           summary="delta + dynamic non-uniform quantization + zstd (Agrawal et al. 2023)")


def codec_names() -> list[str]:
    return [NONE, *CHECKPOINT_CODECS.names()]


def resolve_codec(name: str, params: dict[str, Any] | None) -> Any | None:
    """The codec's typed config (None for ``none``); an unknown codec or option is a one-line error."""
    params = dict(params or {})
    if name == NONE:
        if params:
            raise UserError("train.checkpoint_codec_params is set but train.checkpoint_codec is 'none'; "
                            f"choose a codec ({', '.join(CHECKPOINT_CODECS.names())}) or drop the params")
        return None
    if name.lower() not in CHECKPOINT_CODECS:
        raise UserError(f"unknown checkpoint codec '{name}'{suggest(name.lower(), codec_names())}; "
                        f"known: {', '.join(codec_names())}")
    config_cls, _ = _load(name)
    return build(config_cls, params, where="train.checkpoint_codec_params")


def make_codec(name: str, params: dict[str, Any] | None):
    """A fresh codec object for ``name`` (None for ``none``)."""
    cfg = resolve_codec(name, params)
    return None if cfg is None else _load(name)[1](cfg)


def _load(name: str) -> tuple[type, type]:
    entry = CHECKPOINT_CODECS.entry(name)
    target = entry.load()
    return target() if callable(target) and not isinstance(target, tuple) else target
