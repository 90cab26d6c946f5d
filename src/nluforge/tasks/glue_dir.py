"""A local GLUE folder in the layout of GLUE's ``download_glue_data.py``.

``DIR/<TaskDir>/{train,dev,dev_matched,dev_mismatched}.tsv`` (or ``.tsv.gz``), TaskDir one of CoLA,
SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI. ``DIR`` may also be the task folder itself (a folder
holding ``train.tsv``/``dev.tsv`` directly); folder names also match case- and dash-insensitively
(``sst2`` finds ``SST-2``). When ``train.tsv(.gz)`` is absent but ``train.sample<N>.tsv(.gz)`` files
exist (the shared MNLI/QNLI/QQP samples), the largest N is used and a notice is logged and recorded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.tasks.data import Split
from nluforge.tasks.spec import TaskSpec
from nluforge.tasks.tables import column, label_encoder, read_table, to_split

log = logging.getLogger("nluforge.tasks")


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _has_files(folder: Path, spec: TaskSpec) -> bool:
    return any(find_file(folder, stem) for stem in spec.source.glue_files.values()) or bool(_samples(folder))


def find_task_dir(spec: TaskSpec, root: Path) -> Path:
    """The folder holding ``spec``'s TSVs: ``root/<TaskDir>``, a look-alike name, or ``root`` itself."""
    name = spec.source.glue_dir
    if not root.is_dir():
        raise UserError(
            f"GLUE data folder not found: {root}; pass --data-dir DIR (or NLUFORGE_DATA_DIR) "
            f"with DIR/{name}/train.tsv"
        )
    if (root / name).is_dir():
        return root / name
    for child in sorted(root.iterdir()):
        if child.is_dir() and _squash(child.name) == _squash(name):
            return child
    if _has_files(root, spec):
        return root
    raise UserError(
        f"no {name} folder in {root} (expected {root / name}/train.tsv[.gz] and dev files); "
        f"point --data-dir at the GLUE root holding {name}/, or at the {name} folder itself"
    )


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.tsv``, else ``folder/stem.tsv.gz``, else None."""
    for path in (folder / f"{stem}.tsv", folder / f"{stem}.tsv.gz"):
        if path.is_file():
            return path
    return None


def _samples(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("train.sample*.tsv*"):
        match = re.fullmatch(r"train\.sample(\d*)\.tsv(\.gz)?", path.name)
        if match and path.is_file():
            found.append((int(match.group(1) or 0), path))
    return sorted(found)


def split_file(spec: TaskSpec, folder: Path, split: str, notes: list[str]) -> Path:
    """The file for ``split``; for train, the largest ``train.sample<N>`` when the full file is absent."""
    stem = spec.source.glue_files[split]
    path = find_file(folder, stem)
    if path is None and split == "train" and _samples(folder):
        rows, path = _samples(folder)[-1]
        note = f"{spec.name}: {folder}/train.tsv is absent; training on the sample {path.name} ({rows} rows)"
        log.warning(note)
        notes.append(note)
    if path is None:
        raise UserError(
            f"missing {split} data for {spec.name}: expected {folder / stem}.tsv or "
            f"{folder / stem}.tsv.gz; add it or choose other splits"
        )
    return path


def read_glue_split(spec: TaskSpec, path: Path, split: str) -> Split:
    """Parse one GLUE TSV, picking columns by header name (by index for header-less CoLA)."""
    cols = spec.source.glue_columns
    table = read_table(path, header=spec.source.glue_header)
    text_cols = [column(table, [cols[f]], f"text field '{f}' of {spec.name}") for f in spec.text_fields]
    label_col = column(table, [cols["label"]], f"the label of {spec.name}")
    return to_split(table, split, text_cols, label_col, label_encoder(spec.label_names, spec.name))


def load_glue_dir(spec: TaskSpec, root: Path, splits: list[str]) -> tuple[dict[str, Split], list[str]]:
    """Read ``splits`` of ``spec`` from the GLUE folder ``root``; returns splits and notes."""
    folder = find_task_dir(spec, root)
    notes: list[str] = []
    out = {}
    for split in splits:
        if split not in spec.source.glue_files:
            raise UserError(
                f"{spec.name} has no '{split}' split in a GLUE folder; "
                f"available: {', '.join(spec.source.glue_files)}"
            )
        out[split] = read_glue_split(spec, split_file(spec, folder, split, notes), split)
    return out, notes
