"""What a result records about where it ran: package versions, device, CPU/GPU, threads, git."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("nluforge", "torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "numpy")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state() -> dict[str, Any]:
    """The git commit of the nluforge source tree, if it is a checkout, and whether it is dirty."""
    src = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"git_hash": head, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_hash": None, "git_dirty": None}


def run_meta(device) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"versions": versions(), "device": str(device), "cpu": cpu_name(), "gpu": gpu,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(), **git_state()}
