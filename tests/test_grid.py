"""Grid files: product, zip, exclude (exact cell sets) and strict one-line validation errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from nluforge.core.errors import UserError
from nluforge.experiments.grid import load_grid, parse_grid


def grid(text: str, overrides=None):
    return parse_grid(yaml.safe_load(text)).cells(overrides)


def keys(cells, *fields):
    out = []
    for cell in cells:
        d = cell.config.to_dict()
        out.append(tuple(d[f] if "." not in f else d[f.split(".")[0]].get(f.split(".")[1]) for f in fields))
    return out


def test_product_in_axis_order_with_base_and_entry_patches():
    cells = grid("""
base: {train: {epochs: 2}, data: {max_train_samples: 100}}
grid:
  task: [sst2, {name: rte, data: {max_length: 64}}]
  method: [full, {name: lora, params: {r: 4}, train: {lr: 5e-4}}]
  seed: [1, 2]
""")
    assert keys(cells, "task", "method", "seed") == [
        (t, m, s) for t in ("sst2", "rte") for m in ("full", "lora") for s in (1, 2)]
    lora_rte = [c.config for c in cells if c.config.task == "rte" and c.config.method == "lora"][0]
    assert lora_rte.method_params == {"r": 4} and lora_rte.train.lr == 5e-4 and lora_rte.data.max_length == 64
    assert lora_rte.train.epochs == 2 and lora_rte.data.max_train_samples == 100
    assert cells[0].config.train.lr is None and cells[0].config.data.max_length == 128
    assert cells[2].labels == {"task": "sst2", "method": "lora(r=4)", "seed": "1"}
    assert len({c.run_id for c in cells}) == 8


def test_zip_groups_vary_together_and_cross_the_grid():
    cells = grid("""
grid:
  method: [full, bitfit]
zip:
  - task: [sst2, rte]
    data: [{max_train_samples: 2000}, {max_train_samples: 500, max_length: 128}]
  - {seed: [1, 2], train: [{lr: 1e-4}, {lr: 2e-4}]}
""")
    assert keys(cells, "method", "task", "data.max_train_samples", "seed", "train.lr") == [
        (m, t, n, s, lr) for m in ("full", "bitfit") for t, n in (("sst2", 2000), ("rte", 500))
        for s, lr in ((1, 1e-4), (2, 2e-4))]
    assert cells[0].labels["zip[0]"] == "task=sst2,data=max_train_samples=2000"


def test_exclude_drops_partial_matches_against_the_resolved_config():
    cells = grid("""
grid:
  task: [sst2, rte]
  method: [full, {name: lora, params: {r: 8}}, {name: lora, params: {r: 2}}]
  train: [{lr: 1e-4}, {lr: 5e-4}]
exclude:
  - {task: rte, method: lora}
  - {method_params: {r: 2}, train: {lr: 5e-4}}
  - {task: sst2, method: full, train: {lr: 0.0005}}
""")
    assert sorted(keys(cells, "task", "method", "method_params.r", "train.lr")) == sorted([
        ("sst2", "full", None, 1e-4), ("sst2", "lora", 8, 1e-4), ("sst2", "lora", 8, 5e-4),
        ("sst2", "lora", 2, 1e-4), ("rte", "full", None, 1e-4), ("rte", "full", None, 5e-4)])


@dataclass
class _NoOptions:
    pass


@pytest.fixture
def fake_attacks(monkeypatch):
    """Attack registry entries for grid tests (no attack ships yet)."""
    from nluforge.core.registry import Entry
    from nluforge.core.steps import ATTACKS

    entries = {n: Entry(n, _NoOptions) for n in ("advglue", "a", "b")}
    monkeypatch.setattr(ATTACKS, "_entries", {**ATTACKS._entries, **entries})


def test_steps_axes_and_no_grid_is_one_cell(fake_attacks):
    cells = grid("""
base: {task: rte}
grid:
  attack: [null, {method: advglue}, [{method: a}, {method: b}]]
""")
    assert [c.config.attack for c in cells] == [[], [{"method": "advglue"}], [{"method": "a"}, {"method": "b"}]]
    assert [c.labels["attack"] for c in cells] == ["none", "advglue", "a+b"]
    assert len(grid("base: {task: rte}")) == 1


def test_overrides_apply_last_to_every_cell():
    cells = grid("grid: {method: [full, bitfit]}", overrides={"train": {"epochs": 3}, "seed": 7})
    assert [(c.config.train.epochs, c.config.seed) for c in cells] == [(3, 7), (3, 7)]


@pytest.mark.parametrize("text, message", [
    ("grd: {}", "unknown key 'grd' (did you mean 'grid'?)"),
    ("grid: {methd: [full]}", "unknown key 'grid.methd' (did you mean 'method'?)"),
    ("grid: {method: [{name: lora, parms: {r: 8}}]}", "unknown key 'grid.method[0].parms' (did you mean 'params'?)"),
    ("grid: {method: [{name: lora, params: {rank: 8}}]}", "grid.method[0]: unknown key 'method_params (lora).rank'"),
    ("grid: {method: [{name: lora, params: {r: many}}]}", "grid.method[0]: bad value for 'method_params (lora).r'"),
    ("grid: {method: [lorra]}", "grid.method[0]: unknown method 'lorra' (did you mean 'lora'?)"),
    ("grid: {train: [{lrr: 1}]}", "grid.train[0]: unknown key 'train.lrr' (did you mean 'lr'?)"),
    ("grid: {train: [{epochs: -1}]}", "grid.train[0]: train.epochs must be positive"),
    ("grid: {seed: [1, x]}", "grid.seed[1]: bad value for 'seed'"),
    ("grid: {seed: []}", "'grid.seed' must be a non-empty list"),
    ("grid: {seed: 3}", "'grid.seed' must be a non-empty list"),
    ("grid: {task: [{data: {}}]}", "'grid.task[0].name' is required"),
    ("base: {data: {max_train_sample: 5}}", "base: unknown key 'data.max_train_sample'"),
    ("version: 2", "grid 'version' must be 1"),
    ("resources: {num_cpu: 2}", "unknown key 'resources.num_cpu' (did you mean 'num_cpus'?)"),
    ("zip: [{task: [sst2, rte], seed: [1]}]", "'zip[0]' axes must have equal lengths"),
    ("grid: {seed: [1]}\nzip: [{seed: [2]}]", "axis 'seed' appears twice"),
    ("zip: [{tsk: [sst2]}]", "unknown key 'zip[0].tsk' (did you mean 'task'?)"),
    ("exclude: [{methd: full}]", "unknown key 'exclude[0].methd' (did you mean 'method'?)"),
    ("exclude: [{train: {lrr: 1}}]", "unknown key 'exclude[0].train.lrr'"),
    ("grid: {method: [full]}\nexclude: [{method: lora}]", "exclude[0] {'method': 'lora'} matches no cell"),
    ("grid: {method: [full, full]}", "resolve to the same run"),
    ("grid: {method: [{name: lora, train: {lr: 1e-3}}], train: [{lr: 1e-4}]}",
     "'grid.method' and 'grid.train' both set 'train.lr'"),
])
def test_strict_validation_is_one_line_naming_the_key(text, message):
    with pytest.raises(UserError) as err:
        grid(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_and_missing_file_are_user_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {task: [sst2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_grid(bad)
    with pytest.raises(UserError, match="config file not found"):
        load_grid(tmp_path / "missing.yaml")
