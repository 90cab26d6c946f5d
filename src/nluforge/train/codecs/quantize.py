"""Tensor-level pieces of the checkpoint codecs: non-uniform codebooks, lossless XOR deltas, and the
entropy coder, all to and from bytes (stored as ``uint8`` tensors in safetensors; never pickle).

Written here, not taken from a library: no maintained library does DynaQuant-style codebook
quantization of checkpoint deltas. The entropy coder is zstandard (or the standard library's lzma).

- :func:`fit_codebook`: ``2**bits`` centroids from the values' quantiles (DynaQuant's quantile
  codebook), optionally refined by a few Lloyd (k-means) iterations on a sample.
- :func:`quantize` / :func:`dequantize`: nearest-centroid codes as ``uint8`` (one byte per element, so
  the entropy coder sees whole symbols: the codes' entropy, not ``bits``, sets their compressed size).
- :func:`xor_delta` / :func:`undo_xor_delta`: an exact delta of two same-dtype tensors (bit patterns
  XOR-ed, bytes split into planes), for the lossless setting.
"""

from __future__ import annotations

import lzma
from typing import Literal

import torch

from nluforge.core.errors import UserError

Entropy = Literal["zstd", "lzma"]
_KMEANS_SAMPLE = 200_000  # Lloyd iterations run on at most this many values (seeded sample)


def fit_codebook(x: torch.Tensor, bits: int, method: Literal["quantile", "kmeans"] = "quantile",
                 iters: int = 15) -> torch.Tensor:
    """Sorted codebook of ``2**bits`` float32 centroids for the values of ``x`` (any shape).

    When some values are exactly zero (a sparse update: embedding rows no batch touched), one centroid
    is exactly 0 and the others are fitted to the non-zero values, so unchanged elements stay unchanged
    and the remaining levels are not spent on the spike at zero.
    """
    flat = x.detach().reshape(-1).float()  # (N,)
    levels = 2 ** bits
    nonzero = flat[flat != 0]
    sparse = 0 < nonzero.numel() < flat.numel() and levels > 1
    values = nonzero if sparse else flat
    fit_levels = levels - 1 if sparse else levels
    if values.numel() > _KMEANS_SAMPLE:  # quantiles and Lloyd steps on a seeded sample: same codebook each time
        gen = torch.Generator().manual_seed(values.numel())
        values = values[torch.randint(values.numel(), (_KMEANS_SAMPLE,), generator=gen)]
    probs = (torch.arange(fit_levels, dtype=torch.float64) + 0.5) / fit_levels  # mid-quantiles of each bucket
    book = torch.quantile(values.double(), probs).float()  # (L,)
    if method == "kmeans":
        for _ in range(iters):
            codes = _nearest(values, book)
            sums = torch.zeros(fit_levels).index_add_(0, codes, values)
            counts = torch.bincount(codes, minlength=fit_levels).float()
            book = torch.where(counts > 0, sums / counts.clamp(min=1), book).sort().values
    if sparse:
        book = torch.cat([book, torch.zeros(1)]).sort().values
    return book.contiguous()


def _nearest(flat: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (``book`` sorted) for each value: (N,) int64."""
    mids = (book[1:] + book[:-1]) / 2  # (L-1,) decision boundaries
    return torch.bucketize(flat, mids)


def quantize(x: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid codes of ``x`` (flattened) as uint8 (N,)."""
    return _nearest(x.detach().reshape(-1).float(), book).to(torch.uint8)


def dequantize(codes: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    return book[codes.long()]  # (N,) float32


def xor_delta(new: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Exact delta: the bytes of ``new`` XOR those of ``ref``, grouped by byte plane. uint8 (N*itemsize,)."""
    a, b = _bytes(new), _bytes(ref)  # (N, itemsize)
    return (a ^ b).t().contiguous().reshape(-1)  # plane-major: the sign/exponent bytes sit together


def undo_xor_delta(delta: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    b = _bytes(ref)
    a = delta.reshape(b.shape[1], b.shape[0]).t() ^ b
    return a.contiguous().view(ref.dtype).reshape(ref.shape)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).reshape(flat.numel(), flat.element_size())


def compress_bytes(t: torch.Tensor, entropy: Entropy, level: int) -> torch.Tensor:
    """Entropy-code a uint8 tensor; returns the compressed bytes as a uint8 tensor."""
    raw = t.contiguous().numpy().tobytes()
    if entropy == "lzma":
        blob = lzma.compress(raw, preset=min(level, 9))
    else:
        import zstandard

        blob = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)


def decompress_bytes(t: torch.Tensor, entropy: Entropy, size: int, where: str) -> torch.Tensor:
    """The inverse of :func:`compress_bytes`: ``size`` bytes, or a one-line error naming ``where``."""
    blob = t.contiguous().numpy().tobytes()
    try:
        if entropy == "lzma":
            raw = lzma.decompress(blob)
        else:
            import zstandard

            raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=size)
    except Exception as err:  # zstd.ZstdError, lzma.LZMAError: a damaged frame or checksum
        raise UserError(f"compressed checkpoint {where} is corrupt ({type(err).__name__}: {err}); "
                        "delete the checkpoint folder or rerun without --resume") from None
    if len(raw) != size:
        raise UserError(f"compressed checkpoint {where} is corrupt (expected {size} bytes, got {len(raw)}); "
                        "delete the checkpoint folder or rerun without --resume")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
