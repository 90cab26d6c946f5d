"""The loop's seams, exercised through ``fit`` on the tiny BERT: hook order, the update step, samplers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny
from test_train_loop import Counter, assert_same_weights, run, synthetic

from nluforge.core.errors import UserError
from nluforge.experiments.config import TrainConfig
from nluforge.models.inputs import collate, length_grouped_batches
from nluforge.optim import build_optimizer
from nluforge.train import fit
from nluforge.train.loop import default_loss
from nluforge.train.samplers import LengthGroupedSampler, PoissonSampler, shard

# --- hooks ------------------------------------------------------------------------------------------


def test_hooks_run_in_order_through_fit():
    """Where fit calls each hook relative to forward, backward, optimizer.step and zero_grad."""
    from accelerate import Accelerator

    events: list[tuple] = []
    model = make_tiny("bert", 2)
    head = model.classifier.weight
    head.register_hook(lambda grad: events.append(("backward",)))
    optimizer = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.01)
    optimizer_step, zero_grad = optimizer.step, optimizer.zero_grad
    optimizer.step = lambda: (events.append(("optimizer.step",)), optimizer_step())
    optimizer.zero_grad = lambda **kw: (events.append(("zero_grad",)), zero_grad(**kw))
    hooks = SimpleNamespace(
        before_forward=lambda step: events.append(("before_forward", step)),
        after_backward=lambda step: events.append(("after_backward", step, head.grad is not None)),
        after_step=lambda step: events.append(("after_step", step, head.grad is not None)),
        on_train_end=lambda: events.append(("on_train_end",)))

    def loss_fn(model, batch):
        events.append(("forward",))
        return default_loss(model, batch)

    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=8, grad_accum=2)  # 40 examples: 5 batches -> 3 steps
    result = fit(model, synthetic(40, 0), cfg=cfg, seed=0, optimizer=optimizer, scheduler=None, pad_id=0,
                 accelerator=Accelerator(cpu=True), loss_fn=loss_fn, hooks=hooks, show_progress=False)
    assert result.steps == 3

    def step(k: int, micro: int) -> list[tuple]:
        return [("before_forward", k), *[("forward",), ("backward",)] * micro, ("after_backward", k, True),
                ("optimizer.step",), ("after_step", k, True), ("zero_grad",)]

    assert events == [*step(0, 2), *step(1, 2), *step(2, 1), ("on_train_end",)]


# --- the update step --------------------------------------------------------------------------------


def spsa_step(model, batch, ctx):
    """A zeroth-order step (SPSA, as MeZO uses it): two forward passes, no backward, no optimizer.step."""
    spsa_step.calls.append(ctx.step)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(ctx.seed * 100_003 + ctx.step)
    zs = [torch.randn(p.shape, generator=gen) for p in params]
    eps, lr = 1e-3, ctx.optimizer.param_groups[0]["lr"]
    with torch.no_grad():
        for p, z in zip(params, zs, strict=True):
            p.add_(eps * z)
        plus, _ = ctx.loss_fn(model, batch)
        for p, z in zip(params, zs, strict=True):
            p.sub_(2 * eps * z)
        minus, _ = ctx.loss_fn(model, batch)
        grad = (plus - minus) / (2 * eps)  # projected gradient along z
        for p, z in zip(params, zs, strict=True):
            p.add_(eps * z - lr * grad * z)
    return (plus + minus) / 2


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # no optimizer.step: expected
def test_a_custom_update_step_replaces_forward_backward_and_the_optimizer_step():
    spsa_step.calls = []
    log: list[dict] = []
    init = make_tiny("bert", 2)
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=16, log_every=1)  # 64 examples: 4 steps an epoch
    model, result = run(synthetic(64, 0), cfg, model=make_tiny("bert", 2), update_step=spsa_step, log=log.append)
    assert result.steps == 8 and spsa_step.calls == list(range(8))  # once per step, with the step number
    assert all(p.grad is None for p in model.parameters())  # no backward ran
    changed = [not torch.equal(p, q) for p, q in zip(model.parameters(), init.parameters(), strict=True)]
    assert all(changed)
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    lrs = [r["lr"] for r in log if r["event"] == "train"]
    assert lrs[-1] == 0.0 and max(lrs) > 0  # the loop still steps the schedule: linear decay to 0


def test_the_default_update_step_is_one_plain_optimizer_step():
    """fit with one step on a fixed batch == forward, backward, clip, SGD step by hand (SGD: the clipping shows)."""
    from accelerate import Accelerator

    train, order = synthetic(12, 0), list(range(12))
    cfg = TrainConfig(epochs=1, max_steps=1, lr=0.5, batch_size=12, max_grad_norm=0.01)
    fitted = make_tiny("bert", 2)
    fit(fitted, train, cfg=cfg, seed=7, optimizer=torch.optim.SGD(fitted.parameters(), lr=cfg.lr), scheduler=None,
        pad_id=0, accelerator=Accelerator(cpu=True), sampler=lambda seed, epoch: [order], show_progress=False)

    model = make_tiny("bert", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    torch.manual_seed(7)  # fit seeds torch with its seed: the same dropout masks
    model.train()
    loss, _ = default_loss(model, collate(train, order, 0, regression=False))
    loss.backward()
    assert torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.01) > 0.1  # the clipping bites
    optimizer.step()
    assert_same_weights(fitted, model)


# --- samplers ---------------------------------------------------------------------------------------


def test_the_default_sampler_gives_the_length_grouped_batches():
    lengths = synthetic(300, 0).lengths()
    assert LengthGroupedSampler(lengths, 16)(3, 1) == length_grouped_batches(lengths, 16, seed=3, epoch=1)
    default, _ = run(synthetic(100, 0), TrainConfig(epochs=1, lr=1e-3, batch_size=8))
    explicit, _ = run(synthetic(100, 0), TrainConfig(epochs=1, lr=1e-3, batch_size=8),
                      sampler=LengthGroupedSampler(synthetic(100, 0).lengths(), 8))
    assert_same_weights(default, explicit)


def test_poisson_sampler_draws_each_example_independently_with_rate_q():
    sampler = PoissonSampler(1000, 50)  # q = 0.05, 20 draws an epoch
    assert sampler(1, 0) == sampler(1, 0) and sampler(1, 0) != sampler(1, 1) and sampler(1, 0) != sampler(2, 0)
    batches = [b for epoch in range(25) for b in sampler(1, epoch)]
    assert len(batches) == 500
    sizes = np.array([len(b) for b in batches])
    assert abs(sizes.mean() - 50) < 1.5  # sd of the mean: sqrt(1000 q (1-q) / 500) = 0.31
    assert abs(sizes.var() - 1000 * 0.05 * 0.95) < 12  # Binomial(n, q) variance, 47.5
    assert all(len(set(b)) == len(b) for b in batches)  # no example twice in one batch
    hits = np.bincount([i for b in batches for i in b], minlength=1000) / len(batches)
    assert abs(hits.mean() - 0.05) < 0.003 and hits.min() > 0.005  # every example, at about rate q


def test_fit_counts_empty_poisson_batches_as_steps():
    train = synthetic(10, 0)
    sampler = PoissonSampler(10, 1)  # q = 0.1: P(empty) = 0.9^10 = 0.35
    drawn = sampler(7, 0) + sampler(7, 1)
    empties = sum(not b for b in drawn)
    assert empties > 0
    counter = Counter()
    _, result = run(train, TrainConfig(epochs=2, lr=1e-3, batch_size=1), sampler=sampler, update_step=counter)
    assert result.steps == counter.calls == 20 and counter.empty == empties
    assert result.examples_seen == sum(len(b) for b in drawn)


def test_poisson_sampling_rejects_gradient_accumulation_before_training():
    counter = Counter()
    with pytest.raises(UserError, match="grad_accum=1"):
        run(synthetic(20, 0), TrainConfig(epochs=1, lr=1e-3, batch_size=4, grad_accum=2),
            sampler=PoissonSampler(20, 4), update_step=counter)
    assert counter.calls == 0
    with pytest.raises(UserError, match="batch_size"):
        PoissonSampler(3, 4)


def test_shard_gives_every_rank_the_same_number_of_batches():
    batches = [[0, 1], [2, 3], [4]]
    assert shard(batches, 0, 1) == batches
    for world in (2, 3, 4, 5):
        shares = [shard(batches, rank, world) for rank in range(world)]
        assert {len(s) for s in shares} == {math.ceil(3 / world)}  # >= 1 even with more ranks than batches
        taken = [b for s in shares for b in s]
        assert all(b in taken for b in batches)  # nothing dropped; the padding repeats batches
    assert shard(batches, 0, 2) == [[0, 1], [4]] and shard(batches, 1, 2) == [[2, 3], [0, 1]]
