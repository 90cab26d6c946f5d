"""Two real processes (torchrun, gloo on CPU) training through ``fit``, with fewer batches than processes.

Before, each rank took ``batches[rank:usable:world]`` with ``usable`` rounded down to a multiple of the
world size: one batch for two ranks gave both ranks nothing, and the loop went round empty epochs forever.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO, src_pythonpath

WORKER = REPO / "tests" / "fixtures" / "train_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_one_batch_take_the_same_steps_and_only_rank_0_writes(tmp_path):
    # 3 examples in batches of 4: one batch an epoch for two processes; two epochs.
    spec = {"n": 3, "batch_size": 4, "epochs": 2, "checkpoint_every": 1, "ckpt_dir": str(tmp_path / "ckpt"),
            "out_dir": str(tmp_path / "out")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": src_pythonpath(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(tmp_path / "spec.json")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang kills the ranks too
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("two training processes did not finish within 240 s (a rank without batches hangs)")
    assert proc.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [(r["steps"], r["calls"]) for r in ranks] == [(2, 2), (2, 2)]  # one step an epoch on each rank
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were all-reduced: the replicas agree
    assert ranks[0]["saves"] >= 1 and ranks[1]["saves"] == 0
    assert (tmp_path / "ckpt" / "latest").read_text() == "step-000001"
