"""Grid runner scaling: the same 8-cell grid on the local, process (2 workers) and Ray (2 CPUs) backends.

The process backend runs twice: with its default start method (a forkserver that has imported torch,
transformers and peft once) and with ``spawn`` (a new interpreter, and its imports, per cell).

    .venv/bin/python benchmarks/grid_scaling.py --data-dir ../shared/data/glue [--out scaling.json]

The cells are small but real: the ``default`` model (all-MiniLM-L6-v2) fine-tuned on 200 SST-2
examples for one epoch with four methods (full, bitfit, lora, prompt_tuning) x two seeds, evaluated on
200 dev examples (no AdvGLUE, no latency meter). Every cell uses one torch thread (``train.num_threads:
1`` and one CPU per worker), so two workers on a 2-core CPU is a fair comparison with one local cell at
a time. Each backend writes to its own fresh results directory.

Reported per backend: wall time, speedup over local, mean cell time (``run_info.wall_time_s``: the
cell's own clock, load to result), mean train time (``cost.train_time_s``), the rest of the cell
(load, tokenize, evaluate, save) and the runner's overhead per cell: ``(wall x slots - sum of cell
times) / cells``, i.e. the worker time not spent inside a cell (process start and imports, Ray
scheduling, idle slots at the end). Torch and the pipeline are imported before any timing, so the
local backend starts warm; process workers and Ray workers pay their own imports (that is the point).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = {
    "base": {"task": "sst2", "model": "default",
             "data": {"max_train_samples": 200, "max_eval_samples": 200, "max_length": 64},
             "train": {"epochs": 1, "batch_size": 32, "num_threads": 1},
             "eval": {"advglue": False, "latency": False, "save_predictions": False}},
    "grid": {"method": ["full", "bitfit", "lora", "prompt_tuning"], "seed": [1, 2]},
}
# (row name, backend, workers, start method of the process backend)
BACKENDS = [("local", "local", 1, "spawn"), ("process", "process", 2, "forkserver"),
            ("process-spawn", "process", 2, "spawn"), ("ray", "ray", 2, "spawn")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("NLUFORGE_DATA_DIR") or str(REPO.parent / "shared" / "data" / "glue")
    parser.add_argument("--data-dir", default=default_data, help="local GLUE folder (holding SST-2/)")
    parser.add_argument("--work-dir", default=None, help="where the results dirs go (default: a temp dir)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--backends", default=",".join(b[0] for b in BACKENDS),
                        help="comma-separated subset of: " + ", ".join(b[0] for b in BACKENDS))
    return parser.parse_args()


def run_backend(name: str, backend: str, workers: int, start_method: str, cells, work: Path) -> dict:
    """Run the grid on one backend into a fresh directory; return its timings."""
    from nluforge.experiments.runners import RunnerOptions, run_grid

    results_dir = work / name
    shutil.rmtree(results_dir, ignore_errors=True)
    options = RunnerOptions(backend, workers=workers, num_cpus=1, start_method=start_method)
    start = time.perf_counter()
    results = run_grid(cells, results_dir, options)
    wall = time.perf_counter() - start
    done = [r for r in results if r.run_info.status == "completed"]
    cell_s = [r.run_info.wall_time_s for r in done]
    train_s = [r.cost.train_time_s for r in done]
    n = max(1, len(done))
    return {"backend": name, "workers": workers, "start_method": start_method if backend == "process" else None,
            "cells": len(results), "completed": len(done),
            "errors": sorted({r.run_info.error for r in results if r.run_info.error}),
            "wall_s": round(wall, 2), "cell_s_mean": round(sum(cell_s) / n, 2),
            "train_s_mean": round(sum(train_s) / n, 2),
            "cell_rest_s_mean": round((sum(cell_s) - sum(train_s)) / n, 2),
            "overhead_s_per_cell": round((wall * workers - sum(cell_s)) / n, 2)}


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="grid scaling: 8 cells, default model, SST-2 200 examples, 1 thread per cell")
    for col in ("backend", "workers", "completed", "wall s", "speedup", "cell s", "train s", "rest s",
                "overhead s/cell"):
        table.add_column(col, justify="right")
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        table.add_row(r["backend"], str(r["workers"]), f"{r['completed']}/{r['cells']}", f"{r['wall_s']:.1f}",
                      speedup, f"{r['cell_s_mean']:.1f}", f"{r['train_s_mean']:.1f}",
                      f"{r['cell_rest_s_mean']:.1f}", f"{r['overhead_s_per_cell']:.1f}")
    Console(stderr=True, width=130).print(table)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    import nluforge.experiments.pipeline  # noqa: F401 - warm imports before any timing
    from nluforge.experiments.grid import parse_grid

    torch.set_num_threads(1)
    grid = parse_grid(GRID, source="grid_scaling")
    cells = [c.config for c in grid.cells({"data": {"data_dir": args.data_dir}})]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="nluforge-scaling-"))
    wanted = args.backends.split(",")
    rows = [run_backend(*backend, cells, work) for backend in BACKENDS if backend[0] in wanted]
    local = next((r["wall_s"] for r in rows if r["backend"] == "local"), None)
    for r in rows:
        r["speedup"] = round(local / r["wall_s"], 2) if local else None
    report = {"grid": GRID, "cpu_count": os.cpu_count(), "torch_threads_per_cell": 1,
              "python": sys.version.split()[0], "torch": torch.__version__, "results": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print_table(rows)


if __name__ == "__main__":
    main()
