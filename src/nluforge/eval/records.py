"""Later evaluations of a finished run, recorded as ``RUN_DIR/evals/<name>.json``.

One JSON object per evaluation (the shared contract the report reads)::

    {"name", "created", "source": {"kind": "task"|"file", "task"?, "split"?, "file"?}, "n",
     "metrics": {metric: float}, "label_map": {model_label: file_label} | null,
     "groups": {"field", "values": {value: {"n", metric...}}} | null}

A rerun under the same name replaces the record (written atomically); different names coexist.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_json

EVALS_DIR = "evals"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def task_eval_name(task: str, split: str) -> str:
    return safe_name(f"{task}-{split}")


def file_eval_name(path: str | Path) -> str:
    """``file-<stem>``: the file name without its format suffixes (``dev.csv.gz`` → ``file-dev``)."""
    name = Path(path).name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson"):
        name = name.removesuffix(suffix) if name.lower().endswith(suffix) else name
    return safe_name(f"file-{name}")


def safe_name(name: str) -> str:
    """A record name usable as a file name: other characters become ``_``."""
    cleaned = _UNSAFE.sub("_", name).strip("._")
    if not cleaned:
        raise UserError(f"eval name '{name}' has no usable characters; use letters, digits, '.', '_' or '-'")
    return cleaned


def eval_record(name: str, source: dict[str, Any], n: int, metrics: dict[str, float],
                label_map: dict[str, str] | None = None, groups: dict | None = None) -> dict[str, Any]:
    return {"name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": source, "n": int(n), "metrics": {k: float(v) for k, v in metrics.items()},
            "label_map": label_map, "groups": groups}


def write_eval(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write (or replace) ``run_dir/evals/<name>.json`` atomically; returns its path."""
    folder = Path(run_dir) / EVALS_DIR
    folder.mkdir(exist_ok=True)
    return atomic_write_json(folder / f"{safe_name(record['name'])}.json", record)


def read_evals(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of ``run_dir/evals/``, sorted by name."""
    folder = Path(run_dir) / EVALS_DIR
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
