"""L0: registry suggestions, strict config, the merge rule, overrides and atomic writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from nluforge.core.config import build, load_yaml, merge, overrides_to_dict
from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_json, atomic_write_text
from nluforge.core.registry import Registry
from nluforge.experiments.config import RunConfig, resolve


@dataclass
class Inner:
    rate: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    count: int = 1
    inner: Inner = field(default_factory=Inner)


def test_registry_suggests_close_names_and_lists_lazily():
    reg = Registry("method", hint="see `nluforge methods`")
    reg.register("lora", "json:dumps", summary="s")
    assert reg.names() == ["lora"]
    assert reg.get("lora").__name__ == "dumps"  # resolved lazily from "module:attr"
    with pytest.raises(UserError, match=r"unknown method 'lorra' \(did you mean 'lora'\?\)"):
        reg.get("lorra")


def test_build_rejects_unknown_keys_with_the_users_spelling():
    with pytest.raises(UserError, match=r"unknown key 'inner.rat' \(did you mean 'rate'\?\)"):
        build(Outer, {"inner": {"rat": 1}})


def test_build_rejects_ill_typed_values_in_one_line():
    with pytest.raises(UserError) as err:
        build(Outer, {"count": "many"})
    assert "'count'" in str(err.value) and "\n" not in str(err.value)


def test_build_coerces_yaml_scalars():
    assert build(Outer, {"count": "3", "inner": {"rate": "1e-4"}}) == Outer("x", 3, Inner(1e-4))


def test_merge_rule_defaults_then_yaml_then_cli():
    merged = merge({"train": {"lr": 1, "epochs": 1}}, {"train": {"lr": 2}}, {"train": {"epochs": 3}})
    assert merged == {"train": {"lr": 2, "epochs": 3}}


def test_overrides_parse_dotted_keys_and_yaml_values():
    assert overrides_to_dict(["train.lr=1e-4", "method_params.target_modules=[query,value]"]) == {
        "train": {"lr": "1e-4"}, "method_params": {"target_modules": ["query", "value"]}}
    with pytest.raises(UserError, match="key=value"):
        overrides_to_dict(["oops"])


@pytest.mark.parametrize("layer, key", [({"train": {"lr": -1e-3}}, "train.lr"),
                                        ({"train": {"epochs": 0}}, "train.epochs"),
                                        ({"data": {"k_shot": 0}}, "data.k_shot"),
                                        ({"train": {"batch_size": 0}}, "train.batch_size")])
def test_nonsensical_hyperparameters_are_one_line_errors(layer, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        resolve(layer)


def test_run_id_is_a_content_hash_of_the_resolved_config():
    a, b = resolve({"seed": 1}), resolve({"seed": 1})
    assert a.run_id() == b.run_id() and a.run_id().startswith("sst2-default-full-s1--")
    assert resolve({"seed": 2}).run_id() != a.run_id()
    assert isinstance(a, RunConfig)


def test_atomic_writes_replace_whole_files(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert path.read_text().strip() == '{\n  "x": 1\n}'
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left behind


def test_load_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(UserError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_a_bad_choice_names_the_allowed_values():
    @dataclass
    class Pick:
        pooling: Literal["auto", "cls", "mean"] = "auto"

    with pytest.raises(UserError) as err:
        build(Pick, {"pooling": "avg"}, where="")
    assert str(err.value) == "bad value for 'pooling': 'avg' (Input should be 'auto', 'cls' or 'mean')"
