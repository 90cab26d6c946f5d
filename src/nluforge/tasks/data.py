"""Loaded examples: plain Python lists, so a split is cheap to copy, pickle or dump as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from nluforge.tasks.spec import TaskSpec


@dataclass
class Split:
    """One split. ``texts[i]`` is a tuple in the spec's ``text_fields`` order; ``labels[i]`` is a
    class id (classification) or a float (regression). ``source`` says where it was read from."""

    name: str
    texts: list[tuple[str, ...]]
    labels: list[int] | list[float]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: list[int]) -> Split:
        """A new split holding the examples at ``indices``, in that order."""
        return Split(
            self.name, [self.texts[i] for i in indices], [self.labels[i] for i in indices], self.source
        )

    def label_counts(self) -> dict[int, int]:
        """Examples per class id, sorted by id (classification only)."""
        return dict(sorted(Counter(self.labels).items()))


@dataclass
class TaskData:
    """A task's spec and its loaded splits (``train``, the spec's eval splits, ``test`` if labelled).

    ``notes`` are one-line remarks worth showing or recording with a run (a train sample used in
    place of a missing train file, an inferred label set).
    """

    spec: TaskSpec
    splits: dict[str, Split]
    source: str = ""  # "glue_tsv:DIR", "hub:nyu-mll/glue:sst2", "advglue:FILE", "files"
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    @property
    def eval_splits(self) -> list[str]:
        """The spec's eval splits that were loaded, in the spec's order."""
        return [name for name in self.spec.eval_splits if name in self.splits]
