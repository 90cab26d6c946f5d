"""The training loop on a tiny random BERT and a synthetic, learnable task."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny

from nluforge.eval.predict import predict
from nluforge.experiments.config import TrainConfig
from nluforge.models.inputs import Encoded, length_grouped_batches
from nluforge.optim import build_optimizer, linear_schedule
from nluforge.train import fit
from nluforge.train.loop import default_update_step, total_steps

MARK = 2000  # label 1 iff this token id appears


def synthetic(n: int, seed: int) -> Encoded:
    rng = random.Random(seed)
    ids, labels = [], []
    for _ in range(n):
        length = rng.randint(4, 20)
        row = [101] + [rng.randint(3000, 3100) for _ in range(length)] + [102]
        label = rng.random() < 0.5
        if label:
            row[rng.randint(1, length)] = MARK
        ids.append(row)
        labels.append(int(label))
    return Encoded(ids, None, labels)


def accuracy(model, enc: Encoded) -> float:
    logits = predict(model, enc, batch_size=64, pad_id=0, regression=False)
    return float((logits.argmax(-1) == np.array(enc.labels)).mean())


def run(train: Encoded, cfg: TrainConfig, tmp_path=None, *, resume=False, evaluate=None, transform=None,
        model=None, hooks_fn=None, optimizer_fn=None, accelerator=None, **fit_kwargs):
    """The tiny BERT (or ``model``) trained by ``fit`` with seed 7 and AdamW (or ``optimizer_fn(model)``);
    ``hooks_fn(model, steps)`` builds hooks."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    model = model if model is not None else make_tiny("bert", 2)
    steps = total_steps(cfg, len(train))
    if optimizer_fn is not None:
        optimizer = optimizer_fn(model)
    else:
        optimizer = build_optimizer("adamw", model, lr=cfg.lr, weight_decay=0.01)
    scheduler = linear_schedule(optimizer, total_steps=steps, warmup_ratio=0.1)
    result = fit(model, train, cfg=cfg, seed=7, optimizer=optimizer, scheduler=scheduler, pad_id=0,
                 accelerator=accelerator or Accelerator(cpu=True), evaluate=evaluate, checkpoint_dir=tmp_path,
                 resume=resume, batch_transform=transform, show_progress=False,
                 hooks=hooks_fn(model, steps) if hooks_fn else None, **fit_kwargs)
    run.optimizer = optimizer  # for tests that inspect its state
    return model, result


class Counter:
    """An update step that counts its calls (and the empty batches among them), then runs the default."""

    def __init__(self, crash_at: int | None = None):
        self.calls, self.empty, self.steps_seen, self.crash_at = 0, 0, [], crash_at

    def __call__(self, model, batch, ctx):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash
        self.empty += batch is None
        self.steps_seen.append(ctx.step)
        return default_update_step(model, batch, ctx)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_fit_learns_a_learnable_task():
    train, dev = synthetic(512, 0), synthetic(256, 1)
    model, result = run(train, TrainConfig(epochs=4, lr=2e-3, batch_size=16))
    assert result.steps == 4 * 32
    assert accuracy(model, dev) > 0.9
    assert result.examples_seen == 4 * 512 and result.examples_per_s > 0


def test_grad_accumulation_counts_optimizer_steps():
    _, result = run(synthetic(100, 0), TrainConfig(epochs=1, lr=1e-3, batch_size=8, grad_accum=4))
    assert result.steps == 4  # 13 batches → 3 full accumulations + 1 partial


def test_length_grouped_batches_are_deterministic_and_grouped():
    lengths = [random.Random(i).randint(1, 100) for i in range(1000)]
    a = length_grouped_batches(lengths, 10, seed=1, epoch=0)
    assert a == length_grouped_batches(lengths, 10, seed=1, epoch=0)
    assert a != length_grouped_batches(lengths, 10, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(1000))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a])
    assert spread < 10  # a random batch of 10 spans ~80 length units


def test_whole_epoch_bucketing_pads_less_than_trainer_style_groups():
    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(4000)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    epoch = length_grouped_batches(lengths, 32, seed=1, epoch=0, mega=10**6)  # the whole epoch
    trainer_like = length_grouped_batches(lengths, 32, seed=1, epoch=0, mega=50)
    assert sorted(i for b in epoch for i in b) == list(range(4000))
    assert len(epoch) == len(trainer_like) == 125
    assert padded(epoch) < padded(trainer_like) < padded(length_grouped_batches(lengths, 32, seed=1, epoch=0,
                                                                               group=False))
    # Equal lengths are reshuffled every epoch, so batches change between epochs.
    assert {tuple(sorted(b)) for b in epoch} != {tuple(sorted(b)) for b in length_grouped_batches(
        lengths, 32, seed=1, epoch=1, mega=10**6)}


def test_group_by_length_accepts_a_group_size_and_rejects_nonsense():
    from nluforge.core.errors import UserError
    from nluforge.experiments.config import resolve

    assert resolve({"train": {"group_by_length": 50}}).train.group_by_length == 50
    assert resolve({"train": {"group_by_length": True}}).train.group_by_length is True
    with pytest.raises(UserError, match="group_by_length"):
        resolve({"train": {"group_by_length": -3}})


class Crash(Exception):
    pass


def test_resume_after_a_crash_takes_only_the_remaining_steps(tmp_path):
    train = synthetic(200, 0)
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=16, checkpoint_every=5, log_every=1)  # 13 batches an epoch
    reference, ref_result = run(train, cfg)
    with pytest.raises(Crash):
        run(train, cfg, tmp_path, update_step=Counter(crash_at=17))
    assert (tmp_path / "latest").read_text() == "step-000015"
    log: list[dict] = []
    counter = Counter()
    resumed, result = run(train, cfg, tmp_path, resume=True, update_step=counter, log=log.append)
    assert result.steps == ref_result.steps == 26
    # Only steps 16..26 ran again (a resume that ignored the checkpoint would replay all 26 from step 0),
    # starting at the 3rd batch of the 2nd epoch.
    assert counter.calls == 26 - 15 and counter.steps_seen[0] == 15
    assert [r["step"] for r in log if r["event"] == "train"][0] == 16
    assert result.examples_seen == ref_result.examples_seen == 400
    assert_same_weights(reference, resumed)


@pytest.mark.parametrize("on_disk", [True, False])
def test_early_stopping_and_keep_best(tmp_path, on_disk):
    """The best weights come back from best.safetensors (with a checkpoint dir) or from a CPU copy."""
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.5])
    snapshots = []

    def evaluate(model):
        snapshots.append(model.classifier.weight.detach().clone())
        return {"accuracy": next(scores)}

    cfg = TrainConfig(epochs=3, lr=1e-3, batch_size=16, eval_every=2, early_stopping_patience=2)
    model, result = run(synthetic(200, 0), cfg, tmp_path if on_disk else None, evaluate=evaluate)
    assert result.stopped_early and result.steps == 8
    assert result.best_metric == 0.9 and result.best_step == 4
    assert torch.equal(model.classifier.weight, snapshots[1])  # best weights restored
    assert (tmp_path / "best.safetensors").is_file() == on_disk


def test_eval_every_also_evaluates_the_last_step(tmp_path):
    scores = iter([0.5, 0.6, 0.9])

    def evaluate(model):
        return {"accuracy": next(scores)}

    cfg = TrainConfig(epochs=1, max_steps=7, lr=1e-3, batch_size=8, eval_every=3)
    model, result = run(synthetic(64, 0), cfg, tmp_path, evaluate=evaluate)
    steps_seen = [h["step"] for h in result.history]
    assert steps_seen == [3, 6, 7]  # step 7 is not a multiple of 3 but is the last
    assert result.best_step == 7  # so the final weights can win


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    from nluforge.core.errors import UserError

    train = synthetic(64, 0)
    cfg = TrainConfig(epochs=1, max_steps=4, lr=1e-3, batch_size=8, checkpoint_every=2)
    run(train, cfg, tmp_path)
    step_dir = tmp_path / (tmp_path / "latest").read_text()
    (step_dir / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        run(train, cfg, tmp_path, resume=True)


def test_total_steps_respects_max_steps_and_fractional_epochs():
    cfg = SimpleNamespace(batch_size=10, grad_accum=1, epochs=0.5, max_steps=None)
    assert total_steps(cfg, 100) == 5
    cfg.max_steps = 3
    assert total_steps(cfg, 100) == 3


def test_adamw_uses_the_fused_kernel_on_cpu_and_it_can_be_turned_off():
    model = make_tiny("bert", 2)
    fused = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.01)
    plain = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.01, fused=False)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    # The two kernels take the same step.
    torch.manual_seed(0)
    a, b = make_tiny("bert", 2), make_tiny("bert", 2)
    b.load_state_dict(a.state_dict())
    batch = {"input_ids": torch.randint(3000, 3100, (4, 9)), "labels": torch.tensor([0, 1, 0, 1])}
    for model, kw in ((a, {}), (b, {"fused": False})):
        opt = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.01, **kw)
        model(**batch).loss.backward()
        opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
