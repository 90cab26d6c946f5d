"""L1: tasks as data. Specs (``specs/*.yaml``), loaders and the official metrics.

- :data:`TASKS` registers the nine GLUE tasks and the six AdvGLUE evaluation-only sets;
  :func:`get_task` looks one up (unknown → one-line error with "did you mean").
- :func:`load_task` reads a task's labelled splits from explicit files, a local AdvGLUE file, a local
  GLUE TSV folder or the Hugging Face Hub, and applies seeded few-shot / subset sampling.
- :func:`compute_metrics` scores predictions with the task's official metrics.

Importing this package reads the small spec YAMLs and nothing heavy: no torch, datasets or sklearn.
"""

from __future__ import annotations

from nluforge.tasks.advglue import find_advglue_file
from nluforge.tasks.data import Split, TaskData
from nluforge.tasks.loading import load_task
from nluforge.tasks.metrics import METRICS, compute_metrics
from nluforge.tasks.spec import TASKS, TaskSource, TaskSpec, advglue_tasks_for, get_task, load_spec

__all__ = [
    "METRICS",
    "TASKS",
    "Split",
    "TaskData",
    "TaskSource",
    "TaskSpec",
    "advglue_tasks_for",
    "compute_metrics",
    "find_advglue_file",
    "get_task",
    "load_spec",
    "load_task",
]
