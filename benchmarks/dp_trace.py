"""A DP-SGD trace on the real model: per-example clipped AdamW steps (sigma configurable) or plain steps,
on SST-2 with the `default` model, printing the loss, dev accuracy (400 examples) and, every 5 steps,
the norm of the clipped mean gradient per parameter kind (LoRA A, LoRA B, head) beside the noise's.

A diagnostic, not a benchmark of record: it chose the DP clipping-norm default (BENCHMARKS.md,
privacy). The two runs that did, at batch 256 with the per-coordinate noise of the 20k setting:

    THREADS=1 PYTHONPATH=src python benchmarks/dp_trace.py --batch 256 --sigma 0.177 --steps 60 \
        --eval-every 20 --lr 2e-3 --c 0.1      # and --c 1.0
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import GLUE_DIR  # noqa: E402

DEV = 400  # dev examples evaluated
CHUNK = 32  # physical chunk of the clipped step


def kind(name: str) -> str:
    """LoRA A, LoRA B, or the tensor's last two name parts (the head's weight and bias)."""
    return "A" if "lora_A" in name else "B" if "lora_B" in name else ".".join(name.split(".")[-2:])


def main() -> None:
    from nluforge.experiments.config import resolve
    from nluforge.experiments.dp_train import physical_chunks
    from nluforge.experiments.pipeline import build_model
    from nluforge.models.inputs import collate, encode
    from nluforge.models.loading import load_tokenizer
    from nluforge.privacy.engine import (
        PrivateGradients,
        clip_groups,
        example_losses,
        per_example_inputs,
        thresholds,
    )
    from nluforge.tasks import load_task

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--mode", choices=["clip", "plain"], default="clip")
    ap.add_argument("--c", type=float, default=0.1, help="clipping norm (total over the groups)")
    ap.add_argument("--sigma", type=float, default=0.0, help="noise multiplier")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--opt", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=None)
    ap.add_argument("--style", choices=["flat", "per_layer"], default="flat")
    ap.add_argument("--eps-adam", type=float, default=None)
    ap.add_argument("--eval-every", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    torch.manual_seed(0)

    cfg = resolve({"task": "sst2", "method": args.method, "data": {"data_dir": str(GLUE_DIR)}})
    data = load_task("sst2", data_dir=str(GLUE_DIR), max_train_samples=args.batch * args.steps)
    tok = load_tokenizer("default")
    model, _, _ = build_model(cfg, data.spec, tok)
    if args.dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = args.dropout
    model.train()
    train, dev = data.splits["train"], data.splits["validation"]
    enc = encode(train.texts, train.labels, tok, 64)
    dev_enc = encode(dev.texts[:DEV], dev.labels[:DEV], tok, 64)
    params = [p for p in model.parameters() if p.requires_grad]
    if args.opt == "adamw":
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    if args.eps_adam is not None:
        opt.param_groups[0]["eps"] = args.eps_adam
    if args.mode == "clip":
        groups = clip_groups(model, args.style, None, None)
        engine = PrivateGradients(model, groups, thresholds(groups, args.c, None), noise_multiplier=args.sigma,
                                  expected_batch_size=args.batch, mode="hooks", seed=0)
    perm = torch.randperm(len(train.texts), generator=torch.Generator().manual_seed(1)).tolist()

    def evaluate() -> float:
        model.eval()
        hits = 0
        with torch.no_grad():
            for start in range(0, DEV, 100):
                batch = collate(dev_enc, list(range(start, min(DEV, start + 100))), tok.pad_token_id, regression=False)
                labels = batch.pop("labels")
                hits += (model(**per_example_inputs(model, batch)).logits.argmax(-1) == labels).sum().item()
        model.train()
        return hits / DEV

    losses, norms, t0 = [], None, time.time()
    for step in range(args.steps):
        batch = collate(enc, perm[step * args.batch:(step + 1) * args.batch], tok.pad_token_id, regression=False)
        if args.mode == "clip":
            loss = sum(engine.accumulate(c).item() * c["input_ids"].shape[0] for c in physical_chunks(batch, CHUNK))
            loss /= args.batch
            norms = engine.stats.norms
            if step % 5 == 0:  # clipped mean gradient per parameter kind, beside the noise on as many coordinates
                sums: dict[str, list[float]] = {}
                for (name, _), acc in zip(sum(groups, []), engine.summed, strict=True):
                    entry = sums.setdefault(kind(name), [0.0, 0])
                    entry[0] += float((acc / args.batch).pow(2).sum())
                    entry[1] += acc.numel()
                noise = args.sigma * args.c / args.batch  # per coordinate of the averaged gradient
                print(json.dumps({"step": step, **{k: {"signal": round(sq ** 0.5, 5), "noise": round(noise * n ** 0.5, 5),
                                                       "n": n} for k, (sq, n) in sums.items()}}), flush=True)
            engine.release(step)
        else:
            mean = example_losses(model, batch).mean()
            mean.backward()
            loss = mean.item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss, 3))
        if args.eval_every and (step + 1) % args.eval_every == 0:
            print(json.dumps({"step": step + 1, "acc400": evaluate(), "loss_recent": round(sum(losses[-5:]) / 5, 3)}),
                  flush=True)
    print(json.dumps({**vars(args), "acc400": evaluate(), "loss_first5": losses[:5], "loss_last10": losses[-10:],
                      "mean_last10": round(sum(losses[-10:]) / 10, 3), "s": round(time.time() - t0),
                      "last_norms_median": None if norms is None else float(norms.median())}))


if __name__ == "__main__":
    main()
