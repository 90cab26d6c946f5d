"""Where a run executes: seeding, the device and accelerator, and which process may write.

A leaf module (it imports only the standard library at import time; torch and accelerate inside the
functions), so every stage can use it without importing the pipeline. Under ``torchrun`` or
``accelerate launch`` each process builds the same accelerator; :func:`is_main_process` says which one
creates, writes and records the run, and :func:`barrier` lets the others wait for it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(num_threads: int | None) -> None:
    """torch intra-op threads on CPU; ``None`` leaves the current setting."""
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)


def resolve_precision(precision: Precision) -> str:
    """``auto`` → bf16 on a CUDA device that supports it, else fp32."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and not cuda:
        warnings.warn(f"{precision} autocast on CPU is usually much slower than fp32", stacklevel=3)
    return precision


def device_and_accelerator(precision: Precision = "auto") -> tuple[Any, Any]:
    """A fresh ``accelerate.Accelerator`` (a grid runs many cells in one process) and its device."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[resolve_precision(precision)]
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=1, cpu=_cpu_only())
    return acc.device, acc


def _cpu_only() -> bool:
    """accelerate starts a (gloo) process group for CPU processes only when told they are CPU-only."""
    import torch

    return not torch.cuda.is_available()


def is_distributed() -> bool:
    """True when launched with several processes (``torchrun``, ``accelerate launch``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_state():
    """accelerate's per-process state (rank, world size); starts the process group under torchrun."""
    from accelerate.state import PartialState

    return PartialState(cpu=_cpu_only())


def is_main_process() -> bool:
    """Rank 0, or the only process. Cheap (no torch import) for single-process runs."""
    if not is_distributed():
        return True
    return process_state().is_main_process


def barrier() -> None:
    """Wait until every process gets here; a no-op in a single process."""
    if is_distributed():
        process_state().wait_for_everyone()
