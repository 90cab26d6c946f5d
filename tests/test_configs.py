"""Every shipped grid YAML validates and expands; the default grid has one source of truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from nluforge.experiments.bench import default_grid_path
from nluforge.experiments.grid import load_grid

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.name for p in SHIPPED} >= {"default.yaml", "methods_sst2.yaml", "smoke.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_grid_validates_and_expands(path):
    cells = load_grid(path).cells()
    assert cells and len({c.run_id for c in cells}) == len(cells)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# nluforge bench"), "a config starts with the command that runs it"


def test_default_grid_is_the_packaged_file():
    assert (REPO / "configs" / "default.yaml").read_bytes() == default_grid_path().read_bytes()
    assert default_grid_path().is_file()


def test_default_grid_covers_three_tasks_four_methods_each_with_an_int8_child():
    cells = load_grid(default_grid_path()).cells()
    assert {c.config.task for c in cells} == {"sst2", "qnli", "stsb"}  # one sentence, pairs, a regression
    assert {c.config.method for c in cells} >= {"full", "bitfit", "lora", "prompt_tuning"}
    trained = {c.run_id for c in cells if not c.config.compress}
    children = [c for c in cells if c.config.compress]
    assert [s["method"] for c in children for s in c.config.compress] == ["int8_dynamic"] * len(trained)
    assert {c.config.parent().run_id() for c in children} == trained  # one int8 child per trained cell
    assert all(c.config.data.max_train_samples and c.config.train.epochs == 1 for c in cells)
    assert all(c.config.eval.advglue for c in cells)
