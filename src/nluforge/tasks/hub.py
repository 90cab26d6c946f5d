"""Loading a task from the Hugging Face Hub with ``datasets`` (imported here only, on first use).

GLUE comes from ``nyu-mll/glue``, AdvGLUE from ``AI-Secure/adv_glue``; their column names are the
spec's canonical text fields and ``label``. Unlabelled rows (label -1, the GLUE test sets) are dropped.

Failing fast matters: offline (``HF_HUB_OFFLINE=1``) ``datasets`` raises at once, but with no network
and no offline flag it retries for ~25 s. So unless offline mode or a proxy is set, we first open a
TCP connection to the Hub (3 s timeout) and stop with a one-line hint if that fails. A cached copy is
still used in offline mode.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split
from nluforge.tasks.spec import TaskSpec

_TRUE = {"1", "true", "yes", "on"}


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _unreachable() -> str:
    """Why the Hub cannot be reached, or ``""`` (also ``""`` when we cannot tell: proxy set)."""
    if _offline() or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return ""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as err:
        return f"{url.hostname} is unreachable ({err})"
    return ""


def _hint(spec: TaskSpec, why: str) -> UserError:
    where = spec.source.glue_dir or "<Task>"
    local = (
        "--advglue-file FILE (AdvGLUE's dev.json) or --data-dir DIR with DIR/advglue/dev.json"
        if spec.source.advglue_key
        else f"--data-dir DIR (or NLUFORGE_DATA_DIR=DIR) with DIR/{where}/train.tsv"
    )
    return UserError(
        f"cannot load '{spec.name}' from the Hugging Face Hub ({spec.source.hub}): {why}; "
        f"use local files instead: {local}"
    )


def load_from_hub(spec: TaskSpec, splits: list[str]) -> dict[str, Split]:
    """Download (or read from the local HF cache) ``splits`` of ``spec``."""
    if not spec.source.hub:
        raise UserError(f"'{spec.name}' has no Hub source; give local files (--data-dir or --train-file)")
    why = _unreachable()
    if why:
        raise _hint(spec, why)
    path, _, config = spec.source.hub.partition(":")
    import datasets

    out = {}
    for split in splits:
        try:
            ds = datasets.load_dataset(path, config or None, split=split)
        except (OSError, ConnectionError) as err:  # offline, unreachable, not found
            raise _hint(spec, str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        except ValueError as err:  # e.g. unknown split
            raise UserError(f"{spec.source.hub} has no split '{split}': {str(err).splitlines()[0]}") from None
        out[split] = _to_split(spec, ds, split)
    return out


def _to_split(spec: TaskSpec, ds, split: str) -> Split:
    columns = [list(ds[f]) for f in spec.text_fields]
    raw = list(ds["label"])
    keep = [i for i, label in enumerate(raw) if label != -1]
    labels = [int(raw[i]) for i in keep] if spec.label_names else [float(raw[i]) for i in keep]
    texts = [tuple(col[i] for col in columns) for i in keep]
    if not texts:
        raise UserError(
            f"split '{split}' of {spec.name} on the Hub has no labelled examples; choose another split"
        )
    return Split(split, texts, labels, f"hub:{spec.source.hub}/{split}")
