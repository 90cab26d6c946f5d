"""What a variant is, and how it is named.

A variant is a run's resolved config minus the seed and the fields that only say where or how the run
was carried out (data paths, logging, checkpoint cadence). Runs of one variant differ only by seed, so
the report averages them. The label is short and readable: method and its params, the data regime, a
non-default optimizer, then compression steps with their params, e.g. ``lora (r=8, alpha=16) · 16-shot +
quantize_dynamic(dtype=int8)``. Attack steps are evaluations of the model, not part of its name (the
robust-accuracy column shows them). Where two variants of a task would share a label, the config values
that differ between them are appended (so two runs that differ only in their attacks stay apart).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

# Dotted config paths that do not change what is being measured.
RUN_ONLY_FIELDS = (
    "seed",
    "name",
    "output_dir",
    "out_dir",
    "run_dir",
    "resume",
    "data.data_dir",
    "eval.advglue_file",
    "eval.save_predictions",
    "eval.baselines",
    "eval.latency_examples",
    "train.log_every",
    "train.checkpoint_every",
)
DEFAULT_OPTIMIZER = "adamw"
STEP_NAME_KEYS = ("name", "method", "type", "kind")


def variant_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the seed and run-only fields."""
    out = copy.deepcopy(dict(config))
    for dotted in RUN_ONLY_FIELDS:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def variant_key(config: Mapping[str, Any]) -> str:
    """A canonical string that is equal for two runs exactly when they are the same variant."""
    return json.dumps(variant_config(config), sort_keys=True, default=str)


def _value(value: Any) -> str | None:
    """A short rendering of a scalar; None for lists, mappings and long strings, which labels leave out
    (when two variants differ only there, :func:`label_variants` appends the difference)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str) and len(str(value)) <= 24:
        return str(value)
    return None


def _call(name: str, params: Mapping[str, Any] | None, sep: str = " ") -> str:
    """``lora`` and ``{"r": 8}`` -> ``lora (r=8)``."""
    shown = [f"{k}={s}" for k, v in (params or {}).items() if (s := _value(v)) is not None]
    return f"{name}{sep}({', '.join(shown)})" if shown else name


def _step(step: Mapping[str, Any]) -> str:
    """A compression or attack step: its name (first of name/method/type/kind) and its scalars."""
    key = next((k for k in STEP_NAME_KEYS if k in step), None)
    name = str(step[key]) if key else "step"
    return _call(name, {k: v for k, v in step.items() if k != key}, sep="")


def training_data(config: Mapping[str, Any]) -> str | None:
    """The data regime a run trained on: ``16-shot``, ``n=2000``, or None for the whole training split."""
    data = config.get("data") or {}
    if data.get("k_shot"):
        return f"{data['k_shot']}-shot"
    if data.get("max_train_samples"):
        return f"n={data['max_train_samples']}"
    return None


def variant_label(config: Mapping[str, Any]) -> str:
    """A short human label for a variant (see the module docstring)."""
    parts = [_call(str(config.get("method", "?")), config.get("method_params"))]
    if (regime := training_data(config)) is not None:
        parts.append(regime)
    optimizer = config.get("optimizer")
    if optimizer and optimizer != DEFAULT_OPTIMIZER:
        parts.append(_call(str(optimizer), config.get("optimizer_params")))
    label = " · ".join(parts)
    label += "".join(f" + {_step(s)}" for s in config.get("compress") or [] if isinstance(s, Mapping))
    return label


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def _differences(configs: list[Mapping[str, Any]]) -> list[str]:
    """Dotted keys whose values are not the same in all of ``configs``."""
    flat = [_flatten(c) for c in configs]
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def model_name(config: Mapping[str, Any]) -> str:
    """The last path component of the model name: ``org/bert-base`` -> ``bert-base``."""
    return str(config.get("model", "?")).rstrip("/").split("/")[-1]


def label_variants(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Labels for the variants of one task, keyed like ``configs``; distinct where configs differ."""
    with_model = len({model_name(c) for c in configs.values()}) > 1
    labels = {k: (f"{model_name(c)}: " if with_model else "") + variant_label(c) for k, c in configs.items()}
    for label in set(labels.values()):
        keys = [k for k, v in labels.items() if v == label]
        if len(keys) < 2:
            continue
        diff = _differences([variant_config(configs[k]) for k in keys])
        for k in keys:
            flat = _flatten(variant_config(configs[k]))
            extra = ", ".join(f"{d.split('.')[-1]}={flat.get(d, '-').strip(chr(34))}" for d in diff)
            labels[k] = f"{label} · {extra}"
    return labels
