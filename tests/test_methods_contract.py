"""The contract matrix: every registered method x tiny random BERT and RoBERTa classifiers.

For each (method, architecture) cell: (a) it applies and the adapted model returns (B, num_labels)
logits; (b) the trainable-parameter count equals the method's own ``expected_trainable`` formula on an
unadapted copy; (c) one AdamW step changes only trainable parameters, and at least one; (d) save, then
load onto a fresh base model, gives the same logits; (e) the same seed gives the same trained model.
(peft ``tests/test_custom_models.py`` and composer's algorithm settings run the same kind of matrix.)

A method whose module is not written yet is an expected failure; once the module exists it must pass.
The steps mirror the pipeline: inputs go through ``models.inputs.encode``/``collate``, ``adapt`` gets
the tokenizer and the task spec, the loss is the loop's ``default_loss`` and the method's
``train_hooks`` run where the loop runs them.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import make_tiny

from nluforge.methods import METHODS, base, method_config, method_module
from nluforge.models.params import count_params

TEXTS = [("a gripping , beautifully acted film",), ("dull",), ("the plot is thin but the cast is great fun",),
         ("far too long and never funny",)]
LABELS = [1, 0, 1, 0]
ARCHS = ["bert", "roberta"]


def _exists(name: str) -> bool:
    return importlib.util.find_spec(f"nluforge.methods.{name}") is not None


METHOD_PARAMS = [
    name if _exists(name) else pytest.param(name, marks=pytest.mark.xfail(strict=False, reason="not implemented yet"))
    for name in METHODS.names()
]


class Case:
    """One (method, arch) cell: its module, default config and the pipeline's context."""

    def __init__(self, name: str, arch: str, tokenizer):
        from nluforge.tasks import get_task

        self.module = method_module(name)
        self.cfg = method_config(name)  # the defaults: the contract must hold for them
        self.arch = arch
        self.task = get_task("sst2")
        self.context = {"tokenizer": tokenizer, "task": self.task}
        self.batch = self._batch(tokenizer)

    def base_model(self):
        head = "masked_lm" if getattr(self.module, "HEAD", "sequence_classification") == "masked_lm" else "seq_cls"
        return make_tiny(self.arch, self.task.num_labels, seed=0, head=head)

    def adapted(self, seed: int = 0):
        torch.manual_seed(seed)
        return self.module.adapt(self.base_model(), self.cfg, **self.context)

    def _batch(self, tokenizer) -> dict[str, torch.Tensor]:
        from nluforge.models.inputs import collate, encode

        enc = encode(TEXTS, LABELS, tokenizer, max_length=32)
        return collate(enc, list(range(len(TEXTS))), tokenizer.pad_token_id, regression=False)

    def inputs(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.batch.items() if k != "labels"}


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture(params=METHOD_PARAMS)
def case(request, arch, tokenizer) -> Case:
    return Case(request.param, arch, tokenizer)


def logits_of(model, case: Case) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**case.inputs()).logits  # (B, C)


def train_step(model, case: Case, lr: float = 1e-2) -> None:
    """One optimizer step, with the method's hooks where ``train.loop.fit`` calls them."""
    from nluforge.train.loop import default_loss

    hooks_fn = getattr(case.module, "train_hooks", None)
    hooks = hooks_fn(model, case.cfg, 1) if hooks_fn else base.TrainHooks()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    _call(hooks.before_forward)
    loss, _ = default_loss(model, case.batch)
    loss.backward()
    _call(hooks.after_backward)
    optimizer.step()
    _call(hooks.after_step)
    optimizer.zero_grad(set_to_none=True)


def _call(hook, step: int = 0) -> None:
    if hook is not None:
        hook(step)


def test_applies(case):
    model = case.adapted()
    logits = logits_of(model, case)
    assert logits.shape == (len(TEXTS), case.task.num_labels)
    assert torch.isfinite(logits).all()


def test_trainable_count_matches_formula(case):
    expected = case.module.expected_trainable(case.base_model(), case.cfg)
    assert count_params(case.adapted(), trainable_only=True) == expected


def test_step_changes_only_trainable(case):
    model = case.adapted()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    train_step(model, case)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed, "one step changed no parameter"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:3]}"


def test_save_load_round_trip(case, tmp_path):
    model = case.adapted()
    train_step(model, case)
    expected = logits_of(model, case)
    getattr(case.module, "save", base.save)(model, tmp_path)
    fresh = case.base_model()
    loader = getattr(case.module, "load", None)
    if loader is not None:
        loaded = loader(tmp_path, fresh, case.cfg, **case.context)
    else:
        loaded = base.load(tmp_path, fresh, case.cfg, case.module.adapt, **case.context)
    torch.testing.assert_close(logits_of(loaded, case), expected, rtol=0, atol=1e-5)


def test_deterministic_under_seed(case):
    runs = []
    for _ in range(2):
        model = case.adapted(seed=123)
        torch.manual_seed(7)  # dropout in the training step
        train_step(model, case)
        runs.append(logits_of(model, case))
    assert torch.equal(runs[0], runs[1])
