"""Command-line options shared by commands, and the CLI → config mapping (defaults < YAML < flags < --set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nluforge.core.config import load_yaml, merge, overrides_to_dict

DataDir = typer.Option(None, "--data-dir", help="Local GLUE folder (classic TSV layout, .tsv or .tsv.gz). "
                       "Default: $NLUFORGE_DATA_DIR, then the Hugging Face Hub.")
Set = typer.Option(None, "--set", help="Override any config key: --set train.lr=1e-4 (repeatable).")
Param = typer.Option(None, "--param", "-p", help="A method option: -p r=8 -p alpha=16 (repeatable).")
Optim = typer.Option(None, "--optim", help="Optimizer (see `nluforge optimizers`; default adamw).")
OptimParam = typer.Option(None, "--optim-param", help="An optimizer option: --optim-param rank=8 (repeatable).")


def flag_layer(values: dict[str, Any]) -> dict[str, Any]:
    """Nested config mapping from dotted flag names, keeping only the flags the user gave."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        if value is None or value == []:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def config_layers(config: Path | None, flags: dict[str, Any], params: list[str] | None,
                  sets: list[str] | None, optim_params: list[str] | None = None) -> dict[str, Any]:
    """Merge by the one rule: YAML < command-line flags < --param / --optim-param < --set."""
    yaml_layer = load_yaml(config) if config else {}
    param_layer = {"method_params": overrides_to_dict(params)} if params else {}
    if optim_params:
        param_layer["optimizer_params"] = overrides_to_dict(optim_params)
    return merge(yaml_layer, flag_layer(flags), param_layer, overrides_to_dict(sets or []))
