"""AdvGLUE evaluation time (issue #13's "all 738 dev examples in under 10 s on this CPU").

    PYTHONPATH=src python benchmarks/advglue_time.py --run RUN_DIR --threads 1 2 [--repeats 2] [--json out.json]

Loads a finished run's model once, then for each thread count puts all six AdvGLUE dev sets (SST-2,
QQP, MNLI matched and mismatched, QNLI, RTE; ``advglue/dev.json.gz`` beside the shared GLUE data)
through it with the evaluation's own ``predict_texts`` (length-sorted batches of 64, max length 128),
and prints JSON and a table of the seconds each pass took. The sets are read before the clock starts.
(The timings of 2026-12-01 in BENCHMARKS.md came from a scratch script with this same loop.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import SHARED_DATA, dump, machine, print_table  # noqa: E402

SETS = ["advglue_sst2", "advglue_qqp", "advglue_mnli", "advglue_mnli_mm", "advglue_qnli", "advglue_rte"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run (its model is timed)")
    ap.add_argument("--advglue", type=Path, default=SHARED_DATA / "advglue" / "dev.json.gz")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    from nluforge.eval.predict import predict_texts
    from nluforge.experiments.servable import load_servable
    from nluforge.tasks import get_task
    from nluforge.tasks.advglue import load_advglue

    servable = load_servable(args.run)
    texts = [load_advglue(get_task(name), args.advglue).texts for name in SETS]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            for batch in texts:
                predict_texts(servable.model, servable.tokenizer, batch, max_length=128, batch_size=64,
                              regression=False)
            rows.append({"threads": torch.get_num_threads(), "repeat": repeat + 1,
                         "examples": sum(len(t) for t in texts), "seconds": round(time.perf_counter() - t0, 2)})
    print_table(rows, ["threads", "repeat", "examples", "seconds"], "AdvGLUE dev, all six sets")
    dump({"machine": machine(), "run": str(args.run), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
