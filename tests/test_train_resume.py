"""Exact resume: AdaLoRA's budget allocation survives a crash, and a training process killed with
``kill -9`` resumes from its last checkpoint, takes only the remaining steps and ends bit-identical."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, make_tiny, src_pythonpath
from test_train_loop import Counter, Crash, assert_same_weights, run, synthetic

from nluforge.experiments.config import TrainConfig
from nluforge.methods import method_config, method_module

WORKER = REPO / "tests" / "fixtures" / "train_worker.py"
ADALORA = method_config("adalora", {"init_r": 8, "target_r": 2, "tinit_ratio": 0.1, "tfinal_ratio": 0.3,
                                    "target_modules": ["query", "key", "value"]})  # 6 adapted layers
# 80 examples, batches of 8: 20 steps. Budget: full to step 2, cut on a cubic schedule to step 14, then fixed.
ADALORA_RUN = TrainConfig(epochs=2, lr=1e-2, batch_size=8, checkpoint_every=4)


def adalora_run(tmp_path=None, *, resume=False, update_step=None, stateless_hooks=False):
    module = method_module("adalora")
    torch.manual_seed(0)
    model = module.adapt(make_tiny("bert", 2), ADALORA)

    def hooks_fn(model, steps):
        hooks = module.train_hooks(model, ADALORA, steps)
        return dataclasses.replace(hooks, state_dict=None, load_state_dict=None) if stateless_hooks else hooks

    kwargs = {"update_step": update_step} if update_step else {}
    return run(synthetic(80, 0), ADALORA_RUN, tmp_path, resume=resume, model=model, hooks_fn=hooks_fn, **kwargs)


def test_adalora_resumed_mid_schedule_matches_an_uninterrupted_run(tmp_path):
    reference, _ = adalora_run()
    pattern = reference.peft_config["default"].rank_pattern
    kept = sum(int((p != 0).sum()) for n, p in reference.named_parameters() if "lora_E" in n)
    assert pattern and kept <= 2 * 6  # the budget fell to target_r per layer on average
    with pytest.raises(Crash):
        adalora_run(tmp_path, update_step=Counter(crash_at=10))
    assert (tmp_path / "latest").read_text() == "step-000008"  # inside the budget schedule
    shutil.copytree(tmp_path, tmp_path.with_name("copy"))
    counter = Counter()
    resumed, result = adalora_run(tmp_path, resume=True, update_step=counter)
    assert counter.calls == 20 - 8 and result.steps == 20
    assert_same_weights(reference, resumed)
    assert resumed.peft_config["default"].rank_pattern == pattern
    # The allocator's smoothed scores matter: resuming without them allocates differently.
    forgetful, _ = adalora_run(tmp_path.with_name("copy"), resume=True, stateless_hooks=True)
    assert not all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(),
                                                      forgetful.state_dict().values(), strict=True))


def kill_mid_run(tmp_path, spec: dict, at_least: int) -> int:
    """Run the training worker on ``spec``, ``kill -9`` it once its latest checkpoint is at step
    ``at_least`` or later, and return that step."""
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": src_pythonpath(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "spec.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "ckpt" / "latest"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and int(latest.read_text().split("-")[1]) >= at_least:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert not (tmp_path / "out").exists(), "the run finished before it could be killed"
    return int(latest.read_text().split("-")[1])


def test_kill_9_mid_run_then_resume_takes_the_remaining_steps(tmp_path):
    spec = {"n": 200, "batch_size": 16, "epochs": 2, "checkpoint_every": 2, "ckpt_dir": str(tmp_path / "ckpt"),
            "out_dir": str(tmp_path / "out"), "step_sleep_s": 0.25}  # 26 steps
    done = kill_mid_run(tmp_path, spec, 6)
    assert 6 <= done < 26

    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=16, checkpoint_every=2)  # the worker's run
    counter = Counter()
    resumed, result = run(synthetic(200, 0), cfg, tmp_path / "ckpt", resume=True, update_step=counter)
    assert counter.calls == 26 - done and counter.steps_seen[0] == done and result.steps == 26
    reference, _ = run(synthetic(200, 0), cfg)
    assert_same_weights(reference, resumed)
