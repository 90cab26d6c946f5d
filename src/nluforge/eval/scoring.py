"""Scoring a model against labels that are not its own: label maps and per-group breakdowns.

A model predicts its training task's labels; a user's file (or another task) may name them
differently (``positive`` vs ``pos``) or use a coarser set (MNLI's ``neutral`` and ``contradiction``
are RTE's ``not_entailment``). A :class:`LabelMapping` sends each model class to one label of the
scored label set, the *target*; predictions are mapped before any metric is computed.

Which metrics: a registered task's own (its label order is the target order); a file scored with
the model's labels, or a one-to-one renaming of them, keeps the run's metrics (class ids keep their
meaning, so GLUE's F1 of class 1 still means what it did); a map that merges classes scores
accuracy and macro-F1, since the run's class-1 F1 or MCC no longer has a fixed meaning.

No torch here: logits come in as numpy arrays.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nluforge.core.errors import UserError
from nluforge.tasks import TaskSpec, compute_metrics
from nluforge.tasks.tables import normalize_label

COLLAPSED_METRICS = ("accuracy", "macro_f1")
_PAIR = re.compile(r"^\s*([^=]+?)\s*=\s*(.+?)\s*$")


def parse_label_map(values: list[str] | str | None) -> dict[str, str] | None:
    """``--label-map`` values → ``{model label: file label}``.

    Each value is either ``a=b,c=d`` pairs or the path of a YAML/JSON file holding one mapping.
    Several values are merged; the same model label mapped twice to different labels is an error.
    """
    if not values:
        return None
    out: dict[str, str] = {}
    for value in [values] if isinstance(values, str) else values:
        for key, target in _pairs(value):
            key, target = normalize_label(key), normalize_label(target)
            if out.get(key, target) != target:
                raise UserError(f"--label-map maps '{key}' twice ('{out[key]}' and '{target}'); keep one")
            out[key] = target
    return out


def _pairs(value: str) -> list[tuple[str, str]]:
    if Path(value).suffix.lower() in (".yaml", ".yml", ".json"):
        from nluforge.core.config import load_yaml

        data = load_yaml(value)  # JSON is YAML; missing or malformed files are one-line errors
        bad = [k for k, v in data.items() if isinstance(v, (dict, list)) or v is None]
        if bad:
            raise UserError(f"{value}: '{bad[0]}' must map to one label name (model label: file label)")
        return [(str(k), str(v)) for k, v in data.items()]
    pairs = []
    for part in value.split(","):
        match = _PAIR.match(part)
        if not match:
            raise UserError(f"--label-map '{part.strip()}' is not model_label=file_label "
                            "(e.g. --label-map positive=pos,negative=neg, or a YAML/JSON file)")
        pairs.append((match[1], match[2]))
    return pairs


@dataclass(frozen=True)
class LabelMapping:
    """``to_target[model id]`` is the target label id that model class is scored as."""

    model_labels: tuple[str, ...]
    target_labels: tuple[str, ...]
    to_target: tuple[int, ...]
    label_map: dict[str, str] | None  # as the user gave it (normalized); None: the model's own labels

    @property
    def one_to_one(self) -> bool:
        return len(set(self.to_target)) == len(self.model_labels) == len(self.target_labels)

    def map_predictions(self, model_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.to_target, dtype=np.int64)[np.asarray(model_ids, dtype=np.int64)]

    def target_ids(self, labels: list[str], where: str) -> np.ndarray:
        """Normalized label strings → target ids; labels the model can never produce are an error."""
        index = {normalize_label(n): i for i, n in enumerate(self.target_labels)}
        if self.label_map is None and not any(k.lstrip("-").isdigit() for k in index):
            index |= {str(i): i for i in range(len(self.target_labels))}  # GLUE-style 0/1 columns
        unknown = sorted({lab for lab in labels if lab not in index})
        if unknown:
            shown = ", ".join(f"'{u}'" for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            produced = ", ".join(self.target_labels[t] for t in sorted(set(self.to_target)))
            fix = ("map them with --label-map model_label=file_label" if self.label_map is None
                   else "add them as targets in --label-map")
            raise UserError(f"{where} has label(s) {shown} that the model can never produce "
                            f"(it predicts: {produced}); {fix}")
        return np.asarray([index[lab] for lab in labels], dtype=np.int64)


def build_mapping(model_labels: tuple[str, ...], label_map: dict[str, str] | None,
                  target_labels: tuple[str, ...] | None = None) -> LabelMapping:
    """Check ``label_map`` against the model's labels (and a task's ``target_labels``, if fixed).

    Without a map the target is ``target_labels`` (a task's) or the model's own labels, and each
    model label must be a target label. With a map every model label must be mapped (by name or
    class id), onto ``target_labels`` when they are fixed, else onto the map's values in model order.
    """
    if label_map is None:
        targets = target_labels or model_labels
        missing = [m for m in model_labels if m not in targets]
        if missing:
            raise UserError(f"the model's label(s) {', '.join(missing)} are not labels of the data "
                            f"({', '.join(targets)}); pass --label-map model_label=data_label,...")
        return LabelMapping(model_labels, targets, tuple(targets.index(m) for m in model_labels), None)
    by_name = {normalize_label(m): i for i, m in enumerate(model_labels)}
    resolved: dict[int, str] = {}
    for key, target in label_map.items():
        i = by_name.get(key)
        if i is None and key.isdigit() and int(key) < len(model_labels) and key not in by_name:
            i = int(key)
        if i is None:
            raise UserError(f"--label-map names '{key}', which is not a model label "
                            f"(the model's labels: {', '.join(model_labels)})")
        resolved[i] = target
    unmapped = [m for i, m in enumerate(model_labels) if i not in resolved]
    if unmapped:
        raise UserError(f"--label-map does not map the model label(s) {', '.join(unmapped)}; "
                        f"add {unmapped[0]}=<data label>")
    if target_labels is None:
        targets = tuple(dict.fromkeys(resolved[i] for i in range(len(model_labels))))
    else:
        targets = target_labels
        outside = [t for t in resolved.values() if t not in targets]
        if outside:
            raise UserError(f"--label-map maps onto '{outside[0]}', which is not a label of the data "
                            f"({', '.join(targets)})")
    if len(set(resolved.values())) < 2:
        raise UserError(f"--label-map sends every model label to '{targets[0]}'; scoring needs two or more")
    return LabelMapping(model_labels, targets, tuple(targets.index(resolved[i]) for i in range(len(model_labels))),
                        dict(label_map))


def file_spec(run_spec: TaskSpec, mapping: LabelMapping) -> TaskSpec:
    """The spec a file is scored with: the run's metrics, unless the map merges classes."""
    if mapping.one_to_one:
        return dataclasses.replace(run_spec, label_names=mapping.target_labels, verbalizer=None)
    return dataclasses.replace(run_spec, label_names=mapping.target_labels, metrics=COLLAPSED_METRICS,
                               primary_metric="accuracy", verbalizer=None)


def score(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The spec's metrics as plain floats (sklearn's warnings on one-class subsets silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: float(v) for k, v in compute_metrics(spec, predictions, labels).items()}


def group_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray, groups: list[str],
                  field: str) -> dict:
    """``{"field", "values": {value: {"n", metric...}}}``, values in sorted order."""
    keys = np.asarray(groups, dtype=object)
    values = {}
    for value in sorted(set(groups)):
        pick = keys == value
        values[value] = {"n": int(pick.sum()), **score(spec, predictions[pick], labels[pick])}
    return {"field": field, "values": values}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of (N, C) logits, computed in float64; rows sum to 1."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
