"""A run directory's life: start it (never leaving a stale result.json), and the result it records."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from nluforge.core.io import atomic_write_text
from nluforge.experiments.config import RunConfig
from nluforge.results import Cost, RunInfo, RunResult


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start_run_dir(run_dir: Path, cfg: RunConfig, resume: bool) -> None:
    """A fresh run directory (or the existing one, to resume); never a stale result.json."""
    result = run_dir / "result.json"
    if result.exists():
        result.unlink()  # the run is redone: it must not look finished meanwhile
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def build_result(cfg: RunConfig, status, error, started, t0, metrics, cost, device, *,
                 parent: str | None = None) -> RunResult:
    """The run's RunResult; ``parent`` (a sibling run directory's name) marks a derived run."""
    from nluforge.experiments.meta import run_meta

    info = RunInfo(id=cfg.run_id(), slug=cfg.run_id().rsplit("--", 1)[0], status=status, error=error, started=started,
                   finished=now(), wall_time_s=round(time.perf_counter() - t0, 3),
                   parent=parent, step=cfg.step_label())
    meta = run_meta(device) if device is not None else {}
    return RunResult(run_info=info, config=cfg.to_dict(), metrics=metrics, cost=cost or Cost(), meta=meta)
