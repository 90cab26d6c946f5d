"""Compressed training checkpoints (DynaQuant codec, nluforge.train.codecs) on tiny random models:
round-trip error within each width, unchanged tensors cost ~nothing, restore-then-continue follows the
uncompressed run, kill -9 mid-write, corrupt files, unknown codecs and `nluforge checkpoints`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, src_pythonpath
from test_train_loop import Counter, Crash, accuracy, run, synthetic

from nluforge.core.errors import UserError
from nluforge.experiments.config import TrainConfig, resolve
from nluforge.train import checkpoint as ckpt
from nluforge.train.codecs import make_codec, resolve_codec
from nluforge.train.codecs import quantize as q
from nluforge.train.codecs.dynaquant import group_of

WORKER = REPO / "tests" / "fixtures" / "train_worker.py"
DQ = {"codebook": "kmeans", "loss_budget": 0.01, "research_every": 3}


def _codec_at(bits: int, **params):
    codec = make_codec("dynaquant", {"groups": "tensor", **params})
    codec.alloc = {"w": bits, "v": bits}  # force the width: no search
    codec.cfg.research_every = 10**6
    return codec


@pytest.mark.parametrize("order", ["none", "reference"])
def test_round_trip_error_is_within_each_width(order):
    torch.manual_seed(0)
    w0 = {"w": torch.randn(256, 128), "v": torch.randn(4096)}
    w1 = {k: v + 0.01 * torch.randn_like(v) for k, v in w0.items()}
    errors = {}
    for bits in (0, 2, 3, 4, 6, 8, 16, 32):
        enc = _codec_at(bits, order=order)
        enc.attach(w0)
        blobs, meta, recon = enc.encode_weights(w1, None)
        dec = _codec_at(bits, order=order)
        decoded = dec.decode_weights(blobs, meta, {k: v.clone() for k, v in w0.items()}, "test")
        for name in w0:
            assert torch.equal(decoded[name], recon[name]), (bits, name)  # the reader gets what the writer kept
            delta, err = w1[name] - w0[name], decoded[name] - w1[name]
            rel = float(err.pow(2).mean().sqrt() / delta.std())
            if bits == 0:
                assert torch.equal(decoded[name], w0[name])  # the update is pruned to zero
            elif bits == 32:
                assert torch.equal(decoded[name], w1[name])  # lossless
            elif bits == 16:
                assert rel < 2**-10
            else:
                # Panter-Dite: optimal b-bit quantization of a Gaussian has rms error ~1.5*sigma*2^-b;
                # allow 4x that for a codebook fitted on a finite sample
                assert rel <= 6 * 2**-bits, (bits, name, rel)
                book = blobs[f"{name}::book"]
                # nearest centroid: inside the codebook at most half a gap, outside it the distance to the end
                bound = max(float((book[1:] - book[:-1]).max()) / 2, float(delta.max() - book[-1]),
                            float(book[0] - delta.min()))
                assert float(err.abs().max()) <= bound + 1e-6
            errors.setdefault(name, []).append(rel)
    for rels in errors.values():  # more bits, less error (0 bits is the full delta)
        lossy = rels[1:6]
        assert lossy == sorted(lossy, reverse=True)


def test_an_unchanged_tensor_costs_almost_nothing():
    torch.manual_seed(0)
    w0 = {"w": torch.randn(512, 256), "v": torch.randn(512, 256)}
    w1 = {"w": w0["w"].clone(), "v": w0["v"] + 0.01 * torch.randn(512, 256)}
    fp32 = w0["w"].numel() * 4
    for bits in (4, 8, 16, 32):
        codec = _codec_at(bits)
        codec.attach(w0)
        blobs, _, recon = codec.encode_weights(w1, None)
        unchanged = sum(t.numel() * t.element_size() for k, t in blobs.items() if k.startswith("w::"))
        changed = sum(t.numel() * t.element_size() for k, t in blobs.items() if k.startswith("v::"))
        assert unchanged < 0.005 * fp32, (bits, unchanged)  # < 0.5% of its fp32 size
        assert changed > 20 * unchanged
        assert torch.equal(recon["w"], w0["w"])


def test_quantile_and_kmeans_codebooks():
    x = torch.randn(50_000)
    errs = {}
    for method in ("quantile", "kmeans"):
        book = q.fit_codebook(x, 3, method)
        assert book.numel() == 8 and torch.all(book[1:] >= book[:-1])
        errs[method] = float((q.dequantize(q.quantize(x, book), book) - x).pow(2).mean())
    assert errs["kmeans"] < errs["quantile"]  # Lloyd refinement lowers the mean squared error


def test_sensitivity_search_spends_bits_where_the_loss_is_sensitive():
    torch.manual_seed(0)
    w0 = {"a.layer.0.w": torch.randn(64, 64), "a.layer.1.w": torch.randn(64, 64)}
    weights = {k: (v + 0.1 * torch.randn_like(v)).clone() for k, v in w0.items()}
    target = {k: v.clone() for k, v in weights.items()}

    def calib_loss() -> float:  # only layer 0 matters
        return 1.0 + 100 * float((weights["a.layer.0.w"] - target["a.layer.0.w"]).pow(2).mean())

    codec = make_codec("dynaquant", {"loss_budget": 0.01})
    codec.attach(w0)
    _, meta, _ = codec.encode_weights(weights, calib_loss)
    widths = meta["search"]["widths"]
    assert widths["a.layer.1"] == 0 and widths["a.layer.0"] >= 4
    assert meta["search"]["predicted_increase"] <= 0.01 * meta["search"]["calib_loss"]
    assert torch.equal(weights["a.layer.0.w"], target["a.layer.0.w"])  # the search put the weights back
    assert group_of("bert.encoder.layer.3.attention.self.query.weight", "layer") == "bert.encoder.layer.3"


def _cfg(**kw):
    return TrainConfig(epochs=2, lr=1e-3, batch_size=16, checkpoint_every=3, log_every=1, **kw)


def _losses(log):
    return {r["step"]: r["loss"] for r in log if r["event"] == "train"}


class Bag(torch.nn.Module):
    """Max-pooled embeddings and a linear head: learns the synthetic task (spot one token) in 50 steps,
    which the tiny BERT does not, so a codec that loses the updates shows up in the loss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = torch.nn.Embedding(4000, 32), torch.nn.Linear(32, 2)

    def forward(self, input_ids, attention_mask, **_):
        h = self.emb(input_ids).masked_fill(~attention_mask.bool()[..., None], -1e4).max(1).values  # (B, 32)
        return SimpleNamespace(logits=self.head(h))  # (B, 2)


def test_factored_optimizer_state_keeps_the_second_moments_row_and_column_sums():
    """``optimizer: factored``: Adam's v of a matrix from its row/column sums (exact for rank one, zero
    rows stay zero), m restarts at zero, the step count and 1-D state survive, and it stores far less."""
    codec = make_codec("dynaquant", {"optimizer": "factored"})
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.rand(50, generator=g), torch.rand(40, generator=g)
    rows[[3, 17]] = 0.0  # embedding rows of tokens never seen: no second moment
    v = torch.outer(rows, cols)  # (50, 40) rank one
    noisy = v * (1 + 0.1 * torch.rand(50, 40, generator=g))  # (50, 40) near rank one
    state = {"0.exp_avg": torch.randn(50, 40, generator=g), "0.exp_avg_sq": v, "0.step": torch.tensor(123.0),
             "1.exp_avg": torch.randn(64, generator=g), "1.exp_avg_sq": torch.rand(64, generator=g),
             "2.exp_avg_sq": noisy}
    blobs, meta = codec.encode_optimizer(state)
    out = codec.decode_optimizer(blobs, meta, "test")
    assert set(out) == set(state)
    torch.testing.assert_close(out["0.exp_avg_sq"], v, rtol=1e-5, atol=1e-9)
    assert (out["0.exp_avg_sq"][[3, 17]] == 0).all() and (out["0.exp_avg_sq"][0] > 0).all()
    assert (out["0.exp_avg"] == 0).all() and (out["1.exp_avg"] == 0).all()
    assert out["0.step"].item() == 123.0
    assert (out["1.exp_avg_sq"].sqrt() - state["1.exp_avg_sq"].sqrt()).abs().max() < 0.02  # 8-bit codebook
    seen = noisy > 0  # (50, 40)
    rel = ((out["2.exp_avg_sq"] - noisy).abs()[seen] / noisy[seen]).max()
    assert 0 < rel < 0.1  # an estimate, not the tensor
    stored = sum(t.numel() * t.element_size() if torch.is_tensor(t) else len(t) for t in blobs.values())
    assert stored < sum(t.numel() * 4 for t in state.values()) / 10


@pytest.mark.parametrize("optimizer", ["quantize", "lossless", "factored", "drop"])
def test_restore_then_continue_follows_the_uncompressed_run(tmp_path, optimizer):
    """A small model (not the tiny BERT: it barely learns in so few steps), 50 steps, a compressed
    checkpoint every 3, killed and restored 4 times; the loss curve and accuracy follow the plain run."""
    train, dev = synthetic(400, 0), synthetic(200, 1)
    cfg = TrainConfig(epochs=2, lr=0.1, batch_size=16, checkpoint_every=3, log_every=1)
    ref_log: list = []
    reference, _ = run(train, cfg, model=Bag(), log=ref_log.append)
    cfg.checkpoint_codec, cfg.checkpoint_codec_params = "dynaquant", {**DQ, "optimizer": optimizer}
    log: list = []
    for crash_at in (10, 11, 11, 11):  # restores at steps 9, 18, 27, 36
        with pytest.raises(Crash):
            run(train, cfg, tmp_path, resume=(tmp_path / "latest").exists(), model=Bag(),
                update_step=Counter(crash_at), log=log.append)
    model, result = run(train, cfg, tmp_path, resume=True, model=Bag(), log=log.append)
    assert result.steps == 50
    ref, got = _losses(ref_log), _losses(log)
    assert len(ckpt.chain(tmp_path, (tmp_path / "latest").read_text())) >= 15  # every checkpoint is a delta
    late = range(41, 51)
    ref_late, got_late = sum(ref[s] for s in late) / 10, sum(got[s] for s in late) / 10
    # both learned (chance: 0.69); dropping Adam's moments 4 times at lr 0.1 costs visibly more
    assert ref_late < 0.1 and got_late < (0.6 if optimizer == "drop" else 0.3), (ref_late, got_late)
    ref_acc, acc = accuracy(reference, dev), accuracy(model, dev)
    assert ref_acc >= 0.95
    assert acc >= ref_acc - (0.1 if optimizer == "drop" else 0.03), (acc, ref_acc)  # drop restarts Adam 4 times
    rows = ckpt.describe_checkpoints(tmp_path)
    # this toy run takes large steps (lr 0.1), so the search often keeps fp16 deltas: a modest ratio
    assert sum(r["weights_mb"] for r in rows) < sum(r["fp32_weights_mb"] for r in rows) / 3
    assert any(r["bits"] != {"0": sum(r["bits"].values())} for r in rows)  # it stored updates, not only zeros


def test_compressed_checkpoint_resume_is_exact_up_to_its_reconstruction(tmp_path):
    """A lossless codec setting (widths 32 only, lossless optimizer) resumes bit-identically."""
    from test_train_loop import assert_same_weights

    train = synthetic(200, 0)
    reference, _ = run(train, _cfg())
    cfg = _cfg(checkpoint_codec="dynaquant", checkpoint_codec_params={"bits": [32], "optimizer": "lossless"})
    with pytest.raises(Crash):
        run(train, cfg, tmp_path, update_step=Counter(crash_at=10))
    resumed, result = run(train, cfg, tmp_path, resume=True)
    assert result.steps == 26
    assert_same_weights(reference, resumed)


def test_corrupt_or_broken_chain_is_a_one_line_error_naming_the_file(tmp_path):
    train = synthetic(100, 0)
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=16, checkpoint_every=2,
                      checkpoint_codec="dynaquant", checkpoint_codec_params=DQ)
    run(train, cfg, tmp_path)  # 7 steps: checkpoints at 2, 4, 6
    latest = (tmp_path / "latest").read_text()
    names = ckpt.chain(tmp_path, latest)
    assert names == ["step-000006", "step-000004", "step-000002"]
    blob = tmp_path / "step-000004" / "weights.dynaquant.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(UserError, match="weights.dynaquant.safetensors is missing or corrupt") as err:
        run(train, cfg, tmp_path, resume=True)
    assert "step-000004" in str(err.value) and "\n" not in str(err.value)
    import shutil

    shutil.rmtree(tmp_path / "step-000002")
    with pytest.raises(UserError, match="delta against step-000002, which is missing"):
        ckpt.restore_weights(tmp_path, run.__globals__["make_tiny"]("bert", 2))


def test_unknown_codec_or_option_fails_in_prepare():
    with pytest.raises(UserError, match="unknown checkpoint codec 'dynaquat'.*did you mean 'dynaquant'"):
        resolve_codec("dynaquat", {})
    with pytest.raises(UserError, match="unknown key 'train.checkpoint_codec_params.bitz'"):
        resolve_codec("dynaquant", {"bitz": [2]})
    with pytest.raises(UserError, match="bits must be widths"):
        resolve_codec("dynaquant", {"bits": [5, 12]})
    with pytest.raises(UserError, match="codec is 'none'"):
        resolve_codec("none", {"bits": [2]})
    from nluforge.experiments.sections import resolve_sections

    with pytest.raises(UserError, match="unknown checkpoint codec"):
        resolve_sections(resolve({"train": {"checkpoint_codec": "zip"}}))
    # an unset codec leaves run ids as they were
    assert resolve({}).hash8() == resolve({"train": {"checkpoint_codec": "none"}}).hash8()
    assert resolve({}).hash8() != resolve({"train": {"checkpoint_codec": "dynaquant"}}).hash8()


def test_cli_unknown_codec_is_one_line():
    env = {**os.environ, "PYTHONPATH": src_pythonpath(), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "nluforge", "train", "--checkpoint-codec", "zstd"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [line for line in lines if line.startswith("error:")] and "unknown checkpoint codec 'zstd'" in lines[0]


def test_kill_9_during_a_compressed_checkpoint_write_leaves_a_restorable_one(tmp_path):
    spec = {"n": 200, "batch_size": 16, "epochs": 2, "checkpoint_every": 2, "ckpt_dir": str(tmp_path / "ckpt"),
            "out_dir": str(tmp_path / "out"), "checkpoint_codec": "dynaquant", "codec_params": DQ,
            "write_sleep_s": 0.5}  # each file of a checkpoint takes 0.5 s more to write
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": src_pythonpath(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "spec.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_dir = tmp_path / "ckpt"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:  # the third checkpoint is being written
        if (ckpt_dir / ".tmp-step-000006").is_dir() and (ckpt_dir / "latest").is_file():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert (ckpt_dir / ".tmp-step-000006").is_dir(), "killed outside the write"
    assert (ckpt_dir / "latest").read_text() == "step-000004"
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=16, checkpoint_every=2,
                      checkpoint_codec="dynaquant", checkpoint_codec_params=DQ)
    counter = Counter()
    _, result = run(synthetic(200, 0), cfg, ckpt_dir, resume=True, update_step=counter)
    assert counter.steps_seen[0] == 4 and result.steps == 26
    assert not list(ckpt_dir.glob(".tmp-*"))


def test_checkpoints_command_lists_steps_sizes_bits_and_chain(tmp_path):
    from typer.testing import CliRunner

    from nluforge.cli.app import _load_commands, app

    ckpt_dir = tmp_path / "run" / "checkpoints"
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=16, checkpoint_every=2,
                      checkpoint_codec="dynaquant", checkpoint_codec_params=DQ)
    run(synthetic(100, 0), cfg, ckpt_dir)
    _load_commands()
    out = CliRunner().invoke(app, ["checkpoints", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    for needle in ("step-000004", "initial", "dynaquant", "(latest)", "codebook=kmeans", "as fp32 safetensors"):
        assert needle in out.output, needle
    rows = json.loads(CliRunner().invoke(app, ["checkpoints", str(tmp_path / "run"), "--json"]).output)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert [r["reference"] for r in rows] == ["initial", "step-000002", "step-000004"]
    assert all(r["weights_mb"] < r["fp32_weights_mb"] / 4 for r in rows)
    assert all(sum(r["bits"].values()) == sum(rows[0]["bits"].values()) for r in rows)


def test_grid_axis_over_checkpoint_codecs_is_checked_per_cell():
    import yaml

    from nluforge.experiments.grid import parse_grid

    grid = {"base": {"task": "sst2"},
            "grid": {"train": [{"checkpoint_codec": "none"},
                               {"checkpoint_codec": "dynaquant", "checkpoint_codec_params": {"optimizer": "drop"}}]}}
    cells = parse_grid(yaml.safe_load(yaml.safe_dump(grid))).cells()
    assert [c.config.train.checkpoint_codec for c in cells] == ["none", "dynaquant"]
    assert len({c.config.run_id() for c in cells}) == 2
    grid["grid"]["train"].append({"checkpoint_codec": "dynaquantt"})
    with pytest.raises(UserError, match=r"grid.train\[2\].*unknown checkpoint codec 'dynaquantt'"):
        parse_grid(yaml.safe_load(yaml.safe_dump(grid)))
