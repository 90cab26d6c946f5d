"""Methods learn: a few dozen steps on a tiny synthetic task take each method clearly above chance.

The task: sequences of filler tokens with one signal token (one of two ids) at a random position; the
label says which. A frozen random encoder carries the signal only weakly (a linear probe on it reaches
~0.8 in these steps), so a method passes only if what it trains reaches into the encoder. The model is
a tiny random BERT with a larger init (0.2) and no dropout, so the frozen features are not flat: with
conftest's ``make_tiny`` (init 0.02) even the frozen-feature baselines stay at chance.

Covered: the methods whose saved form is nluforge's own trained-tensor state (BitFit, prefix tuning),
each also saved after training and reloaded onto a fresh base with identical logits.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from nluforge.methods import base, method_config, method_module
from nluforge.models.params import BASE_REF, count_params

VOCAB = 4000
SIGNAL = torch.tensor([3001, 3002])  # label 0, label 1
FILLER = torch.arange(2000, 2100)


def synthetic_task(n: int, *, length: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] f f s f [SEP]``: ids (n, length) with the signal at a random inner position, labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    ids = FILLER[torch.randint(0, len(FILLER), (n, length), generator=g)]
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[torch.arange(n), torch.randint(1, length - 1, (n,), generator=g)] = SIGNAL[labels]
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, labels


def tiny_base(seed: int = 0):
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    config = BertConfig(**{**TINY, "vocab_size": VOCAB}, initializer_range=0.2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    config._name_or_path = "tiny-random-bert"
    return AutoModelForSequenceClassification.from_config(config).eval()


def accuracy(model, data) -> float:
    ids, labels = data
    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.argmax(-1)
    return (predicted == labels).float().mean().item()


def train(model, data, *, steps: int, lr: float, batch_size: int = 32) -> list[float]:
    ids, labels = data
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ids), (batch_size,), generator=g)
        logits = model(input_ids=ids[idx], attention_mask=torch.ones_like(ids[idx])).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# method -> (params, lr, freeze the head); measured: bitfit 0.95, prefix (head frozen) 0.92,
# linear probe 0.80, all from ~0.45 before training, 80 steps.
CASES = {
    "bitfit": ({}, 3e-2, False),
    "prefix_tuning": ({"num_virtual_tokens": 4}, 3e-2, True),  # the prefixes alone, through a frozen head
}


@pytest.mark.parametrize("name", list(CASES))
def test_learns_the_synthetic_task_and_reloads_exactly(name, tmp_path):
    params, lr, frozen_head = CASES[name]
    module, cfg = method_module(name), method_config(name, params)
    torch.manual_seed(0)
    model = module.adapt(tiny_base(), cfg)
    head = [p for m in base.head_modules(getattr(model, "model", model)) for p in m.parameters()]
    for p in head if frozen_head else ():
        p.requires_grad_(False)
    test = synthetic_task(256, seed=1)
    before = accuracy(model, test)
    losses = train(model, synthetic_task(256), steps=80, lr=lr)
    after = accuracy(model, test)
    assert mean(losses[-5:]) < mean(losses[:5]) / 2, (losses[:5], losses[-5:])
    assert after >= 0.85 and after > before + 0.25, (before, after)

    for p in head:  # the method's own trainable set again: the head is saved with it
        p.requires_grad_(True)
    getattr(module, "save", base.save)(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()  # never a copy of the frozen base
    assert (tmp_path / BASE_REF).is_file()
    fresh = tiny_base()  # the same frozen base, as reloading a checkpoint gives, with another head init
    torch.manual_seed(5)
    fresh.classifier.reset_parameters()
    loaded = base.load(tmp_path, fresh, cfg, module.adapt)
    ids = test[0][:16]
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_bitfit_saves_only_biases_and_head_with_a_base_reference(tmp_path):
    import json

    from safetensors.torch import load_file

    module = method_module("bitfit")
    model = module.adapt(tiny_base(), method_config("bitfit"))
    base.save(model, tmp_path)
    saved = load_file(str(tmp_path / base.METHOD_STATE))
    assert saved and all(k.endswith(".bias") or k.startswith("classifier.") for k in saved)
    assert sum(v.numel() for v in saved.values()) == count_params(model, trainable_only=True)
    reference = json.loads((tmp_path / BASE_REF).read_text())
    assert reference["base_model_name_or_path"] == "tiny-random-bert" and reference["complete"] is False
    assert reference["saved_params"] < reference["total_params"] / 10


def test_size_figures_of_each_saved_form(tmp_path, tiny_model_dir):
    """delta: what ships on top of the base; standalone: base weights + delta (or the folder itself)."""
    from nluforge.models.loading import load_model
    from nluforge.models.params import size_figures

    base_dir = tiny_model_dir("bert")
    base_mb = sum(p.stat().st_size for p in base_dir.iterdir() if p.name in ("model.safetensors", "config.json")) / 1e6
    figures = {}
    for name in ("full", "bitfit", "lora"):
        model = method_module(name).adapt(load_model(str(base_dir), num_labels=2), method_config(name))
        folder = tmp_path / name
        base.save(model, folder)
        figures[name] = size_figures(folder)
    full, bitfit, lora = figures["full"], figures["bitfit"], figures["lora"]
    assert full.delta_mb == full.standalone_mb and full.base is None
    assert abs(full.standalone_mb - base_mb) < 0.01 * base_mb  # the same weights, re-saved
    for small in (bitfit, lora):
        assert small.base == str(base_dir) and small.delta_mb < full.delta_mb / 5
        assert small.standalone_mb == pytest.approx(base_mb + small.delta_mb, abs=1e-3)
    assert size_figures(tmp_path / "bitfit", base="no/such-model").standalone_mb is None  # base not here


def test_cost_size_fields_are_optional_in_old_results():
    from nluforge.results import Cost, RunResult

    old = {"run_info": {"id": "a--1", "slug": "a", "status": "completed"}, "config": {},
           "cost": {"model_size_mb": 90.9}}
    cost = RunResult.from_dict(old).cost
    assert (cost.model_size_mb, cost.delta_size_mb, cost.standalone_size_mb) == (90.9, None, None)
    new = RunResult.from_dict({**old, "cost": {"delta_size_mb": 0.2, "standalone_size_mb": 91.1}}).to_dict()
    assert new["cost"]["delta_size_mb"] == 0.2 and Cost(**new["cost"]).standalone_size_mb == 91.1
