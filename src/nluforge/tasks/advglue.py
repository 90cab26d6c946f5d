"""AdvGLUE (Wang et al. 2021, "Adversarial GLUE"): the adversarial dev set, read from its ``dev.json``.

The file is one JSON object keyed by task (``sst2``, ``qqp``, ``mnli``, ``mnli-mm``, ``qnli``,
``rte``); each example has ``idx``, the GLUE text fields and an integer ``label`` with the Hugging
Face ``glue`` label ids, so a model trained on the GLUE task scores it directly.

Search order for the file (first hit wins):

1. ``advglue_file`` passed in (``--advglue-file``; must exist);
2. ``$NLUFORGE_ADVGLUE_FILE`` (must exist);
3. next to the GLUE data (``data_dir``, else ``$NLUFORGE_DATA_DIR``): ``DIR/advglue/``,
   ``DIR/AdvGLUE/``, ``DIR/../advglue/``, ``DIR/../AdvGLUE/``, each ``dev.json`` then ``dev.json.gz``;
4. otherwise the Hugging Face Hub (``AI-Secure/adv_glue``), by the caller.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split
from nluforge.tasks.spec import TaskSpec
from nluforge.tasks.tables import label_encoder, read_text

ADVGLUE_ENV = "NLUFORGE_ADVGLUE_FILE"
DATA_DIR_ENV = "NLUFORGE_DATA_DIR"


def _given(path: str | Path, origin: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"AdvGLUE file not found: {path} (from {origin}); expected AdvGLUE's dev.json or dev.json.gz"
        )
    return path


def find_advglue_file(
    advglue_file: str | Path | None = None, data_dir: str | Path | None = None
) -> Path | None:
    """The AdvGLUE ``dev.json(.gz)`` to use, by the search order above; None if none is found."""
    if advglue_file:
        return _given(advglue_file, "advglue_file")
    if os.environ.get(ADVGLUE_ENV):
        return _given(os.environ[ADVGLUE_ENV], f"${ADVGLUE_ENV}")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        return None
    root = Path(data_dir).expanduser()
    for folder in (root / "advglue", root / "AdvGLUE", root.parent / "advglue", root.parent / "AdvGLUE"):
        for name in ("dev.json", "dev.json.gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_advglue_file(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The whole file: task key → list of examples."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not AdvGLUE's dev.json: expected one object keyed by task")
    return data


def load_advglue(spec: TaskSpec, path: Path) -> Split:
    """The ``validation`` split of the AdvGLUE task ``spec`` (e.g. ``advglue_mnli_mm``) from ``path``."""
    key = spec.source.advglue_key
    data = read_advglue_file(path)
    if key not in data:
        raise UserError(
            f"{path} has no AdvGLUE set '{key}' (needed for {spec.name}); it has: {', '.join(data)}"
        )
    encode = label_encoder(spec.label_names, spec.name)
    texts, labels = [], []
    for i, example in enumerate(data[key]):
        missing = [f for f in (*spec.text_fields, "label") if f not in example]
        if missing:
            raise UserError(f"{path}: AdvGLUE '{key}' example {i} has no field '{missing[0]}'")
        try:
            labels.append(encode(example["label"]))
        except ValueError as err:
            raise UserError(f"{err} in {path}, AdvGLUE '{key}' example {i}") from None
        texts.append(tuple(str(example[f]) for f in spec.text_fields))
    if not texts:
        raise UserError(f"split 'validation' of {spec.name} is empty: {path} has no '{key}' examples")
    return Split("validation", texts, labels, f"{path}#{key}")
