"""The command line as a user runs it: train/eval on a tiny model, resume after kill -9, and one
test per bad input (one-line error, exit code 2, no traceback, no finished-looking run directory)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NLUFORGE = [sys.executable, "-m", "nluforge"]
POSITIVE = ["good", "great", "fine", "nice", "happy", "love"]
NEGATIVE = ["bad", "awful", "poor", "sad", "hate", "worst"]
FILLER = ["the", "a", "movie", "film", "plot", "actor", "story", "was", "is", "it", "this", "very"]


def write_sst2(root: Path, n_train: int = 800, n_dev: int = 100, seed: int = 0) -> Path:
    """A learnable SST-2-format folder: the label is carried by one sentiment word."""
    rng = random.Random(seed)
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.random() < 0.5
            words = rng.sample(FILLER, 5) + [rng.choice(POSITIVE if label else NEGATIVE)]
            rng.shuffle(words)
            lines.append(f"{' '.join(words)} \t{int(label)}")
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return root


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*NLUFORGE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err
    for needle in needles:
        assert needle.lower() in last.lower(), last


@pytest.fixture
def sst2_dir(tmp_path):
    return write_sst2(tmp_path / "glue")


@pytest.fixture
def tiny_args(tiny_model_dir, sst2_dir, tmp_path):
    return ["--task", "sst2", "--model", str(tiny_model_dir("bert")), "--data-dir", str(sst2_dir),
            "-o", str(tmp_path / "runs"), "--set", "eval.advglue=false"]


def no_finished_runs(out: Path) -> bool:
    return not list(out.rglob("result.json")) if out.exists() else True


def test_train_then_eval_reproduces_the_dev_metric(tiny_args, tmp_path):
    proc = cli("train", *tiny_args, "--epochs", "3", "--lr", "3e-3", "--batch-size", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["run_info"]["status"] == "completed"
    acc = result["metrics"]["trained"]["validation"]["accuracy"]
    assert acc > 0.8  # the sentiment word is easy to find
    cost = result["cost"]
    assert cost["trainable_params"] == cost["total_params"] > 0
    assert cost["peak_memory_mb"] > 0 and cost["latency_ms_bs1"] > 0 and cost["model_size_mb"] > 0
    assert result["meta"]["versions"]["torch"] and "git_hash" in result["meta"]
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "config.yaml").is_file()
    assert not (run_dir / "checkpoints").exists()  # removed once the run completes
    ev = cli("eval", str(run_dir), "--output", str(tmp_path / "ev.json"))
    assert ev.returncode == 0, ev.stderr[-2000:]
    again = json.loads((tmp_path / "ev.json").read_text())["metrics"]["validation"]["accuracy"]
    assert again == acc


def test_resume_after_kill_9_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    data = write_sst2(tmp_path / "glue", n_train=1000, n_dev=100)
    model = str(tiny_model_dir("bert"))
    common = ["--task", "sst2", "--model", model, "--data-dir", str(data), "--epochs", "2", "--lr", "3e-3",
              "--batch-size", "8", "--set", "eval.advglue=false", "--set", "train.checkpoint_every=20"]
    reference = cli("train", *common, "-o", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-2000:]
    ref_result = json.loads((Path(reference.stdout.strip().splitlines()[-1]) / "result.json").read_text())

    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*NLUFORGE, "train", *common, "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(out.rglob("checkpoints/latest")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert no_finished_runs(out), "the run finished before it could be killed; make it longer"
    [pointer] = out.rglob("checkpoints/latest")
    done = int(pointer.read_text().split("-")[1])  # steps in the checkpoint the resume starts from
    log = pointer.parent.parent / "log.jsonl"
    lines_before = len(log.read_text().splitlines()) if log.is_file() else 0
    resumed = cli("train", *common, "-o", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The resumed process logs (every 20 steps) from the checkpoint on; ignoring it would log step 20 again.
    new_steps = [json.loads(line)["step"] for line in log.read_text().splitlines()[lines_before:]
                 if json.loads(line).get("event") == "train"]
    assert 20 <= done < 250 and new_steps[0] == (done // 20 + 1) * 20, (done, new_steps[:3])
    result = json.loads((Path(resumed.stdout.strip().splitlines()[-1]) / "result.json").read_text())
    a = ref_result["metrics"]["trained"]["validation"]["accuracy"]
    b = result["metrics"]["trained"]["validation"]["accuracy"]
    assert abs(a - b) <= 0.002 and a > 0.8
    assert result["meta"]["train"]["steps"] == ref_result["meta"]["train"]["steps"]


def test_missing_data_dir(tiny_args, tmp_path):
    args = [a if a != tiny_args[5] else str(tmp_path / "nowhere") for a in tiny_args]
    proc = cli("train", *args)
    assert_user_error(proc, "nowhere")
    assert no_finished_runs(tmp_path / "runs")


def test_tsv_without_expected_columns(tiny_args, sst2_dir, tmp_path):
    (sst2_dir / "SST-2" / "train.tsv").write_text("text\ttarget\nfine movie\t1\n")
    proc = cli("train", *tiny_args)
    assert_user_error(proc, "sentence", "train.tsv")
    assert no_finished_runs(tmp_path / "runs")


def test_label_outside_the_label_set(tiny_args, sst2_dir, tmp_path):
    with open(sst2_dir / "SST-2" / "train.tsv", "a") as fh:
        fh.write("a strange row \t7\n")
    proc = cli("train", *tiny_args)
    assert_user_error(proc, "7", "train.tsv")
    assert no_finished_runs(tmp_path / "runs")


def test_empty_split(tiny_args, sst2_dir, tmp_path):
    (sst2_dir / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n")
    proc = cli("train", *tiny_args)
    assert_user_error(proc, "empty")
    assert no_finished_runs(tmp_path / "runs")


@pytest.mark.parametrize("flag, value, needle", [("--task", "sst3", "unknown task 'sst3'"),
                                                 ("--method", "lorra", "did you mean 'lora'"),
                                                 ("--model", "./no/such/model", "model path not found"),
                                                 ("--model", "nobody/no-such-model", "not a local folder")])
def test_unknown_task_method_or_model(tiny_args, tmp_path, flag, value, needle):
    args = list(tiny_args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert_user_error(cli("train", *args), needle)
    assert no_finished_runs(tmp_path / "runs")


@pytest.mark.parametrize("flag, value, needle", [("--lr", "-1e-3", "train.lr must be positive"),
                                                 ("--epochs", "0", "train.epochs must be positive"),
                                                 ("--batch-size", "0", "train.batch_size"),
                                                 ("--k-shot", "-2", "data.k_shot")])
def test_nonsensical_hyperparameters(tiny_args, tmp_path, flag, value, needle):
    assert_user_error(cli("train", *tiny_args, flag, value), needle)
    assert no_finished_runs(tmp_path / "runs")


def test_unknown_method_option(tiny_args, tmp_path):
    assert_user_error(cli("train", *tiny_args, "--method", "bitfit", "-p", "rank=4"), "unknown key", "rank")


def test_corrupt_checkpoint_on_resume(tiny_args, tmp_path):
    args = [*tiny_args, "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=true",
            "--max-steps", "4"]
    proc = cli("train", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()
    (latest / "weights.safetensors").write_bytes(b"\x00not a safetensors file")
    assert_user_error(cli("train", *args, "--resume"), "corrupt")
    assert not (run_dir / "result.json").exists()


def test_eval_of_a_corrupt_saved_model(tiny_args, tmp_path):
    proc = cli("train", *tiny_args, "--max-steps", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    (run_dir / "model" / "model.safetensors").write_bytes(b"garbage")
    assert_user_error(cli("eval", str(run_dir)), "model")


def test_listing_commands():
    tasks = cli("tasks")
    assert tasks.returncode == 0 and "advglue_sst2" in tasks.stdout and "mnli" in tasks.stdout
    methods = cli("methods")
    assert methods.returncode == 0 and "bitfit" in methods.stdout and "LoRA" in methods.stdout
    helptext = cli("train", "--help")
    assert helptext.returncode == 0 and "--data-dir" in helptext.stdout
