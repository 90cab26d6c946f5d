"""Compressed training checkpoints (issue #12): DynaQuant settings vs plain fp32 safetensors.

    python benchmarks/checkpoints.py                       # the issue's setting (~8 core-min per run)
    python benchmarks/checkpoints.py --train-samples 2000 --checkpoint-every 5 --json out.json  # small

The issue's setting (the defaults): `default` fully fine-tuned on 20,000 SST-2 examples (one epoch,
lr 5e-5, batch 32), a checkpoint every 50 steps, and each codec setting: none, dynaquant with the
optimizer state quantized, kept lossless, factored (Adafactor-style second moment, first moment
dropped) or dropped. For each setting one run is killed (an exception
after a checkpoint) and restored ``--restores`` times (10), spread evenly over the run, rebuilding the
model and optimizer from scratch each time. Measured, side by side in one process and one thread:
- the compression ratio against fp32 safetensors over all the run's checkpoints, for the weights
  alone and for the whole checkpoint (weights + optimizer state);
- SST-2 dev accuracy of the model restored once from the run's last checkpoint (a fresh model, the
  weights decoded from the chain; the checkpoint is the cycled run's own, so this isolates the last
  checkpoint's decoding error on top of the cycles; the plain run's restore is exact) and of the final
  model after the restore cycles, with 95% bootstrap intervals;
- the mean time to write one checkpoint (search included) and to restore the last one (its chain).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dump, machine, print_table  # noqa: E402

SETTINGS = {
    "none": ("none", {}),
    "dq-opt-quantize": ("dynaquant", {"optimizer": "quantize"}),
    "dq-opt-lossless": ("dynaquant", {"optimizer": "lossless"}),
    "dq-opt-factored": ("dynaquant", {"optimizer": "factored"}),
    "dq-opt-drop": ("dynaquant", {"optimizer": "drop"}),
}


class Crash(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-samples", type=int, default=20000)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--restores", type=int, default=10)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--codec-params", default="", help="extra dynaquant params, k=v,k=v (e.g. loss_budget=0.01)")
    ap.add_argument("--work-dir", default="/tmp/nluforge-bench-checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42, help="the run's seed (more seeds measure the seed spread)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    extra = dict(kv.split("=", 1) for kv in args.codec_params.split(",") if kv)
    extra = {k: float(v) if "." in v else int(v) if v.isdigit() else v for k, v in extra.items()}
    rows = []
    for name in args.settings:  # each row is dumped as soon as it is measured
        rows.append(bench(name, args, extra))
        dump({"machine": machine(), "args": vars(args), "rows": rows, "partial": True}, args.json)
    base = next((r for r in rows if r["setting"] == "none"), None)
    for r in rows:
        if base is not None:
            r["acc_1_restore_delta"] = round(r["acc_1_restore"] - base["acc_1_restore"], 4)
            r["acc_cycles_delta"] = round(r["acc_cycles"] - base["acc_cycles"], 4)
    cols = ["setting", "n_ckpt", "weights_ratio", "whole_ratio", "weights_mb", "optimizer_mb", "acc_1_restore",
            "acc_1_restore_ci", "acc_cycles", "acc_cycles_ci", "acc_1_restore_delta", "acc_cycles_delta",
            "write_s", "restore_s"]
    print_table(rows, cols, title=f"checkpoints: {args.train_samples} SST-2 examples, every {args.checkpoint_every} steps")
    dump({"machine": machine(), "args": vars(args), "rows": rows}, args.json)


def bench(name: str, args, extra: dict) -> dict:
    import shutil

    import numpy as np

    from nluforge.core.runtime import device_and_accelerator, seed_everything
    from nluforge.eval.predict import predict
    from nluforge.experiments.config import resolve
    from nluforge.experiments.data import encode_splits
    from nluforge.experiments.pipeline import build_model, prepare
    from nluforge.experiments.stages import pad_id
    from nluforge.optim import build_optimizer, linear_schedule
    from nluforge.report.stats import Eval, bootstrap
    from nluforge.train import checkpoint as ckpt
    from nluforge.train import fit
    from nluforge.train.loop import default_update_step, total_steps

    codec, params = SETTINGS[name]
    params = {**params, **extra} if codec != "none" else {}
    cfg = resolve({"task": "sst2", "model": "default", "method": "full", "seed": args.seed,
                   "data": {"max_train_samples": args.train_samples, "data_dir": os.environ.get("NLUFORGE_DATA_DIR")},
                   "train": {"lr": 5e-5, "checkpoint_every": args.checkpoint_every, "checkpoint_codec": codec,
                             "checkpoint_codec_params": params}})
    prep = prepare(cfg)
    enc = encode_splits(prep, ["train", "validation"])
    train, dev = enc["train"], enc["validation"]
    steps = total_steps(cfg.train, len(train))
    n_ckpt = steps // args.checkpoint_every
    # restore right after evenly spread checkpoints
    at = sorted({args.checkpoint_every * max(1, round((i + 1) * n_ckpt / (args.restores + 1)))
                 for i in range(args.restores)})
    work = Path(args.work_dir) / f"{name}-s{args.seed}"
    shutil.rmtree(work, ignore_errors=True)
    write_times: list[float] = []
    real_save = ckpt.save_checkpoint

    def timed_save(*a, **k):
        t = time.perf_counter()
        out = real_save(*a, **k)
        write_times.append(time.perf_counter() - t)
        return out

    ckpt.save_checkpoint = timed_save
    pending = list(at)

    def step(model, batch, ctx):
        if pending and ctx.first and ctx.step == pending[0] and (work / "latest").is_file() \
                and (work / "latest").read_text().strip() == f"step-{ctx.step:06d}":
            pending.pop(0)
            raise Crash
        return default_update_step(model, batch, ctx)

    def fresh():
        seed_everything(cfg.seed)
        model, _, _ = build_model(cfg, prep.spec, prep.tokenizer)
        device, acc = device_and_accelerator("fp32")
        optimizer = build_optimizer("adamw", model, lr=5e-5, weight_decay=cfg.train.weight_decay)
        scheduler = linear_schedule(optimizer, total_steps=steps, warmup_ratio=cfg.train.warmup_ratio)
        model, optimizer = acc.prepare(model, optimizer)
        return model, optimizer, scheduler, acc

    restores = 0
    t0 = time.perf_counter()
    while True:
        model, optimizer, scheduler, acc = fresh()
        try:
            fit(model, train, cfg=cfg.train, seed=cfg.seed, optimizer=optimizer, scheduler=scheduler,
                pad_id=pad_id(prep.tokenizer), accelerator=acc, checkpoint_dir=work, resume=restores > 0,
                update_step=step, show_progress=False)
            break
        except Crash:
            restores += 1
            print(f"{name}: restore {restores} at step {(work / 'latest').read_text().strip()}", flush=True)
    ckpt.save_checkpoint = real_save
    wall = time.perf_counter() - t0
    labels = np.asarray(dev.labels)

    def dev_eval(m):
        preds = predict(acc.unwrap_model(m), dev, batch_size=64, pad_id=pad_id(prep.tokenizer), regression=False)
        ev = bootstrap("accuracy", [Eval(labels, preds.argmax(-1))])
        return round(ev.point, 4), f"[{ev.lo:.3f}, {ev.hi:.3f}]"

    acc_cycles, ci_cycles = dev_eval(model)
    once, _, _, _ = fresh()
    t = time.perf_counter()
    ckpt.restore_weights(work, acc.unwrap_model(once))
    restore_s = time.perf_counter() - t
    acc_once, ci_once = dev_eval(once)
    rows = ckpt.describe_checkpoints(work)
    w = sum(r["weights_mb"] for r in rows)
    o = sum(r["optimizer_mb"] for r in rows)
    fw = sum(r["fp32_weights_mb"] for r in rows)
    fo = sum(r.get("fp32_optimizer_mb", r["optimizer_mb"]) for r in rows)
    return {"setting": name, "codec_params": params, "n_ckpt": len(rows), "restores": restores, "restore_at": at,
            "weights_mb": round(w, 2), "optimizer_mb": round(o, 2), "fp32_weights_mb": round(fw, 2),
            "fp32_optimizer_mb": round(fo, 2), "weights_ratio": round(fw / w, 1),
            "whole_ratio": round((fw + fo) / (w + o), 1), "acc_1_restore": acc_once, "acc_1_restore_ci": ci_once,
            "acc_cycles": acc_cycles, "acc_cycles_ci": ci_cycles,
            "write_s": round(statistics.mean(write_times), 2), "restore_s": round(restore_s, 2),
            "wall_s": round(wall, 1), "bits_last": rows[-1]["bits"]}


if __name__ == "__main__":
    main()
