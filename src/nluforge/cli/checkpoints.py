"""``nluforge checkpoints RUN``: a run's training checkpoints, their sizes, codec settings and chain."""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.core.errors import UserError


@app.command()
def checkpoints(run: Path = typer.Argument(..., help="A run directory (or its checkpoints/ folder)."),
                json_out: bool = typer.Option(False, "--json", help="Print the records as JSON instead.")) -> None:
    """List a run's checkpoints: step, size, codec, bits per parameter, weights vs optimizer MB, reference."""
    import json

    from nluforge.train.checkpoint import describe_checkpoints

    ckpt_dir = run if run.name == "checkpoints" or (run / "latest").is_file() else run / "checkpoints"
    if not ckpt_dir.is_dir() or not any(ckpt_dir.glob("step-*")):
        raise UserError(f"{run} has no checkpoints (checkpoints/ is missing or empty); train with "
                        "--set train.keep_checkpoints=true to keep them after a run completes")
    rows = describe_checkpoints(ckpt_dir)
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("step", "codec", "total MB", "weights MB", "optimizer MB", "vs fp32 weights", "bits: share of params",
                  "optimizer", "reference", title=f"checkpoints of {run}")
    for r in rows:
        ratio = r["fp32_weights_mb"] / r["weights_mb"] if r["weights_mb"] else float("inf")
        table.add_row(f"{r['step']}{' (latest)' if r['latest'] else ''}", r["codec"], f"{r['total_mb']:.3f}",
                      f"{r['weights_mb']:.3f}", f"{r['optimizer_mb']:.3f}", f"{ratio:.1f}x", _bits(r["bits"]),
                      r["optimizer_mode"], r["reference"] or "-")
    Console(width=200).print(table)
    codec_rows = [r for r in rows if r["codec"] != "none"]
    if codec_rows:
        s = codec_rows[-1]["settings"]
        typer.echo("codec settings: " + ", ".join(f"{k}={v}" for k, v in s.items()))
        chain_mb = sum(r["weights_mb"] + r["optimizer_mb"] for r in rows)
        fp32_mb = sum(r["fp32_weights_mb"] + r.get("fp32_optimizer_mb", 0) for r in rows)
        typer.echo(f"all checkpoints: {chain_mb:.2f} MB vs {fp32_mb:.2f} MB as fp32 safetensors "
                   f"({fp32_mb / max(chain_mb, 1e-9):.1f}x)")


def _bits(hist: dict[str, int | None]) -> str:
    total = sum(v for v in hist.values() if v) or 1
    return " ".join(f"{b}b:{(v or total) / total:.0%}" for b, v in hist.items())
