"""Cost meters: peak memory during a block of work, and per-example inference latency.

Peak memory is CUDA ``max_memory_allocated`` on a GPU, and the process's resident set size on CPU,
sampled every 20 ms by a background thread (``ru_maxrss`` would include everything since process
start, e.g. data loading, and could not be reset between runs of a grid).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psutil
import torch
from torch import nn

from nluforge.eval.predict import model_inputs
from nluforge.models.inputs import Encoded, collate


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb`` and ``peak.kind``."""

    def __init__(self, device: torch.device, interval_s: float = 0.02):
        self.device = device
        self.interval_s = interval_s
        self.mb = 0.0
        self.start_mb = 0.0  # what was in use when the block started (allocated on CUDA, RSS on CPU)
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_rss"
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._carry = 0.0  # CUDA: the peak before the last pause
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._proc = psutil.Process()
            self.mb = self.start_mb = self._proc.memory_info().rss / 2**20
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._paused.is_set():
                self.mb = max(self.mb, self._proc.memory_info().rss / 2**20)

    @contextmanager
    def paused(self):
        """Leave a block out of the peak: the evaluations a training run makes between its steps."""
        if self.device.type == "cuda":
            self._carry = max(self._carry, torch.cuda.max_memory_allocated(self.device) / 2**20)
            try:
                yield
            finally:
                torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.mb = max(self.mb, self._proc.memory_info().rss / 2**20)
        self._paused.set()
        try:
            yield
        finally:
            _trim_heap()  # what the block freed but the allocator kept would otherwise count as training's
            self._paused.clear()

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = max(self._carry, torch.cuda.max_memory_allocated(self.device) / 2**20)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.mb = max(self.mb, self._proc.memory_info().rss / 2**20)


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so RSS shows what is live."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim with
            pass


@torch.inference_mode()
def measure_latency(model: nn.Module, enc: Encoded, *, batch_size: int, pad_id: int, regression: bool,
                    n_examples: int = 64, warmup: int = 2) -> float:
    """Mean wall milliseconds per example over the first ``n_examples`` examples, at ``batch_size``."""
    device = next(model.parameters()).device
    model.eval()
    idx = list(range(min(n_examples, len(enc))))
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    tensors = [model_inputs(collate(enc, b, pad_id, regression=regression), device) for b in batches]
    for inputs in tensors[:warmup]:
        model(**inputs)
    _sync(device)
    start = time.perf_counter()
    for inputs in tensors:
        model(**inputs)
    _sync(device)
    return (time.perf_counter() - start) * 1000 / max(len(idx), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
