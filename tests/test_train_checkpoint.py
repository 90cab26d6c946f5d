"""Checkpoint contents: the loop state, hook state and optimizer state that is not plain tensors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny
from test_train_loop import Counter, Crash, assert_same_weights, run, synthetic

from nluforge.core.errors import UserError
from nluforge.experiments.config import TrainConfig
from nluforge.train import checkpoint as ckpt
from nluforge.train import state_codec
from nluforge.train.loop import LoopState


def test_loop_state_round_trips_through_the_checkpoint(tmp_path):
    model = make_tiny("bert", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = LoopState(step=12, epoch=1, batch_in_epoch=3, examples=200, train_time_s=1.5, eval_time_s=0.25,
                      best=0.75, best_step=8, bad_evals=1, stopped_early=True,
                      history=[{"step": 4, "accuracy": 0.5}, {"step": 8, "accuracy": 0.75}])
    ckpt.save_checkpoint(tmp_path, 12, model, optimizer, None, state.to_json())
    restored = ckpt.load_checkpoint(tmp_path, model, optimizer, None)
    assert LoopState.from_json(restored) == state
    with pytest.raises(UserError, match="unknown fields.*'epochs'"):
        LoopState.from_json({**state.to_json(), "epochs": 2})


def test_hook_state_round_trips_and_is_required_on_resume(tmp_path):
    model = make_tiny("bert", 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = {"scores": {"layer.0.weight": torch.randn(3, 4), "layer.1.weight": torch.arange(5)},
             "pattern": {"layer.0": [True, False]}, "schedule": [20, 2, 6], "none": None}
    loaded: dict = {}
    hooks = SimpleNamespace(state_dict=lambda: saved, load_state_dict=loaded.update)
    ckpt.save_checkpoint(tmp_path, 1, model, optimizer, None, LoopState().to_json(), hooks)
    ckpt.load_checkpoint(tmp_path, model, optimizer, None, hooks)
    assert loaded.keys() == saved.keys() and loaded["pattern"] == saved["pattern"] and loaded["none"] is None
    for name, tensor in saved["scores"].items():
        assert torch.equal(loaded["scores"][name], tensor) and loaded["scores"][name].dtype == tensor.dtype
    ckpt.save_checkpoint(tmp_path, 2, model, optimizer, None, LoopState().to_json())  # no hooks
    with pytest.raises(UserError, match="no state for this method's training hooks"):
        ckpt.load_checkpoint(tmp_path, model, optimizer, None, hooks)


# --- optimizer state that holds objects (GaLore keeps a projector object per parameter) --------------


class Projector:
    """Stands in for GaLore's projector: a plain object with a tensor and settings inside."""

    def __init__(self, ema: torch.Tensor, decay: float, updates: int = 0):
        self.ema, self.decay, self.updates = ema, decay, updates


class ProjectedSGD(torch.optim.SGD):
    """SGD on grad + ema(grad): the projector's state changes every step and steers the update."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                proj = self.state[p].setdefault("projector", Projector(torch.zeros_like(p), decay=0.9))
                proj.ema.mul_(proj.decay).add_(p.grad, alpha=1 - proj.decay)
                proj.updates += 1
                p.add_(p.grad + proj.ema, alpha=-group["lr"])


class ProjectorCodec:
    name = "projected-sgd"

    def encode(self, state):
        tensors, plain = {}, {}
        for idx, slot in state["state"].items():
            proj = slot["projector"]
            tensors[f"{idx}.ema"] = proj.ema
            plain[str(idx)] = {"decay": proj.decay, "updates": proj.updates}
        return tensors, {"param_groups": state["param_groups"], "projectors": plain}

    def decode(self, tensors, meta):
        state = {int(idx): {"projector": Projector(tensors[f"{idx}.ema"], p["decay"], p["updates"])}
                 for idx, p in meta["projectors"].items()}
        return {"state": state, "param_groups": meta["param_groups"]}


def projected_sgd(model):
    return ProjectedSGD([p for p in model.parameters() if p.requires_grad], lr=0.05)


CFG = TrainConfig(epochs=2, lr=0.05, batch_size=16, checkpoint_every=3)  # 64 examples: 8 steps


def test_optimizer_state_with_objects_needs_a_codec(tmp_path):
    with pytest.raises(UserError, match="'0.projector' holds a Projector.*register_optimizer_codec"):
        run(synthetic(64, 0), CFG, tmp_path, optimizer_fn=projected_sgd)


def test_a_registered_codec_resumes_an_optimizer_with_object_state(tmp_path, monkeypatch):
    monkeypatch.setitem(state_codec._CODECS, ProjectedSGD, ProjectorCodec())
    train = synthetic(64, 0)
    reference, _ = run(train, CFG, optimizer_fn=projected_sgd)
    ref_state = run.optimizer.state_dict()["state"]
    with pytest.raises(Crash):
        run(train, CFG, tmp_path, optimizer_fn=projected_sgd, update_step=Counter(crash_at=4))
    assert (tmp_path / "latest").read_text() == "step-000003"
    counter = Counter()
    resumed, result = run(train, CFG, tmp_path, resume=True, optimizer_fn=projected_sgd, update_step=counter)
    assert counter.calls == 8 - 3 and result.steps == 8
    assert_same_weights(reference, resumed)
    state = run.optimizer.state_dict()["state"]
    assert state.keys() == ref_state.keys()
    for idx, slot in state.items():
        assert slot["projector"].updates == ref_state[idx]["projector"].updates == 8
        assert torch.equal(slot["projector"].ema, ref_state[idx]["projector"].ema)


def test_codec_lookup_follows_the_class_and_unwraps_accelerate():
    from accelerate.optimizer import AcceleratedOptimizer

    model = make_tiny("bert", 2)
    assert state_codec.codec_for(torch.optim.AdamW(model.parameters())) is state_codec.FLAT

    class CarriesItsCodec(ProjectedSGD):
        state_codec = ProjectorCodec()

    own = CarriesItsCodec(model.parameters(), lr=0.1)
    assert state_codec.codec_for(own) is CarriesItsCodec.state_codec
    assert state_codec.codec_for(AcceleratedOptimizer(own, device_placement=False)) is CarriesItsCodec.state_codec
