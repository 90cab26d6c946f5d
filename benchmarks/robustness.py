"""Robustness benchmark: (a) our attack recipes against TextAttack 0.3.11 on the same model and
examples; (b) attacks across trained variants.

    python benchmarks/robustness.py --run RUN_DIR [--examples 200] [--peer-examples 200]
        [--recipes deepwordbug pwws] [--variants RUN ...] [--skip-peer] [--json out.json]

(a) Peer. TextAttack cannot live beside transformers 5 (its flair dependency), so the script builds
it a venv (``--venv``, default ``.venv-textattack``: ``textattack==0.3.11 transformers==4.57.6
torch==2.13.0`` from this machine's local wheels) and an NLTK data folder (NLTK's English stopwords,
WordNet from /usr/share/wordnet with a generated ``lexnames``; ../shared/DEPENDENCIES.md), then runs
``DeepWordBugGao2018`` and ``PWWSRen2019`` through ``benchmarks/_textattack_peer.py`` on RUN's model
(its mean-pooled head reproduced in the wrapper; the first logits of both sides are compared), twice:
with TextAttack's stock ``HuggingFaceModelWrapper`` tokenization (every query padded to the tokenizer's
512 tokens: how users run it) on the first ``--stock-examples``, and with dynamic padding (a faster
peer than TextAttack ships) on all ``--peer-examples``. Ours
runs the same recipes on the same examples (a seeded sample of SST-2 dev; the peer takes the first
``--peer-examples`` of them), one torch thread each, one after the other. Reported per tool: attack
success rate, mean perturbed-word fraction (over successes), mean queries (over attacked examples),
seconds per example, and ours/peer speed on the same examples.

(b) Variants (``--variants RUN ...``): AdvGLUE-SST-2 clean and adversarial accuracy (from each run's
result.json), each recipe at T=1 and over the sweep T in {0.01, 0.1, 1, 10, 100} (robust accuracy =
the minimum over T), on ``--examples`` dev examples.

Defaults are the issue's settings (200 examples). PWWS in TextAttack takes ~15 s per example on this
CPU, so a smaller ``--peer-examples`` is the documented setting on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import GLUE_DIR, REPO, dump, machine, print_table  # noqa: E402

PEER_PINS = ["textattack==0.3.11", "transformers==4.57.6", "torch==2.13.0"]
SWEEP = [0.01, 0.1, 1.0, 10.0, 100.0]


def build_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-m", "pip", "show", "-q", "textattack"],
                                           capture_output=True).returncode == 0:
        return python
    print(f"building the TextAttack venv in {venv} (pip, a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable if "3.11" in sys.version else "python3.11", "-m", "venv", str(venv)],
                   check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return python


def build_nltk_data(folder: Path) -> Path:
    """NLTK's English stopwords and WordNet 3.0 (Debian files + a generated lexnames)."""
    from nluforge.attack.words import STOPWORDS

    stop = folder / "corpora" / "stopwords"
    stop.mkdir(parents=True, exist_ok=True)
    (stop / "english").write_text("\n".join(sorted(STOPWORDS)) + "\n")
    wn = folder / "corpora" / "wordnet"
    if not (wn / "lexnames").is_file():
        wn.mkdir(parents=True, exist_ok=True)
        for f in Path("/usr/share/wordnet").iterdir():
            if f.is_file():
                shutil.copy(f, wn / f.name)
        script = ("zcat /usr/share/man/man5/lexnames.5WN.gz | sed -n '/^\\.TS/,/^\\.TE/p' | "
                  "grep -E '^[0-9][0-9]\\s' | awk -F'\\t' '{n=$2; gsub(/ /,\"\",n); "
                  "p=(n~/^adj/)?3:(n~/^adv/)?4:(n~/^noun/)?1:2; printf \"%s\\t%s\\t%d\\n\",$1,n,p}'")
        (wn / "lexnames").write_text(subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                                    check=True).stdout)
    return folder


def sst2_dev_sample(n: int, seed: int = 0) -> list[dict]:
    from nluforge.tasks.tables import read_text

    lines = read_text(GLUE_DIR / "SST-2" / "dev.tsv.gz").splitlines()[1:]
    rows = [(s.strip(), int(y)) for s, y in (line.split("\t") for line in lines)]
    picked = random.Random(seed).sample(range(len(rows)), min(n, len(rows)))
    return [{"idx": i, "text": rows[i][0], "label": rows[i][1]} for i in picked]


def summarize(records: list[dict]) -> dict:
    won = [r for r in records if r["status"] == "success"]
    attacked = [r for r in records if r["status"] in ("success", "failed")]
    n = len(records)
    return {"examples": n, "skipped": n - len(attacked),
            "success_rate": len(won) / len(attacked) if attacked else None,
            "perturbed_fraction": sum(r["perturbed_words"] / r["words"] for r in won) / len(won) if won else None,
            "mean_queries": sum(r["queries"] for r in attacked) / len(attacked) if attacked else None,
            "s_per_example": sum(r["time_s"] for r in records) / n if n else None}


def ours(servable, examples: list[dict], recipe: str, temperatures: list[float]) -> dict:
    from nluforge.attack.sweep import attack
    from nluforge.experiments.attacks import recipe_config

    cfg = recipe_config(recipe, {"temperatures": temperatures, "max_examples": None})
    sweep = attack(servable.model, servable.tokenizer, [(e["text"],) for e in examples],
                   [e["label"] for e in examples], recipe, cfg, cache_dir=None)
    return sweep


def peer(python: Path, nltk_data: Path, model_dir: Path, examples: list[dict], recipe: str, work: Path,
         padding: str) -> dict:
    ex_file, out = work / "examples.json", work / f"peer-{recipe}-{padding}.json"
    ex_file.write_text(json.dumps(examples))
    env = {**os.environ, "NLTK_DATA": str(nltk_data), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    t0 = time.perf_counter()
    proc = subprocess.run([python, str(Path(__file__).with_name("_textattack_peer.py")), str(model_dir),
                           str(ex_file), recipe, str(out), padding], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"TextAttack peer failed ({recipe}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    data["wall_s"] = time.perf_counter() - t0
    return data


def _row(recipe: str, tool: str, s: dict, ratio: float | None) -> dict:
    def pct(x):
        return None if x is None else 100 * x

    return {"recipe": recipe, "tool": tool, "n": s["examples"], "skipped": s["skipped"],
            "success %": pct(s["success_rate"]), "perturbed %": pct(s["perturbed_fraction"]),
            "queries": s["mean_queries"], "s/example": s["s_per_example"], "peer/ours time": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished SST-2 run (the attacked model)")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--peer-examples", type=int, default=200)
    ap.add_argument("--stock-examples", type=int, default=200,
                    help="examples for TextAttack with its stock wrapper (every query padded to 512 tokens: "
                         "slow); the first N of --peer-examples")
    ap.add_argument("--recipes", nargs="+", default=["deepwordbug", "pwws"])
    ap.add_argument("--variants", nargs="*", type=Path, default=[])
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--venv", type=Path, default=REPO / ".venv-textattack")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)
    from nluforge.experiments.servable import load_servable

    servable = load_servable(args.run)
    examples = sst2_dev_sample(args.examples)
    out: dict = {"machine": machine(), "run": str(args.run), "examples": len(examples), "peer": {}, "ours": {},
                 "variants": {}}
    rows = []
    if not args.skip_peer:
        python = build_venv(args.venv)
        work = Path(tempfile.mkdtemp(prefix="robustness-"))
        nltk_data = build_nltk_data(work / "nltk_data")
        sub = examples[: args.peer_examples]
        for recipe in args.recipes:
            ours_sub = ours(servable, sub, recipe, [1.0])
            recs = [o.to_json() for o in ours_sub.outcomes[1.0]]
            ours_logits = servable.model.eval()(**servable.tokenizer([e["text"] for e in sub[:8]], padding=True,
                                                                     return_tensors="pt")).logits.detach().numpy()
            out["ours"][recipe] = {**summarize(recs), "records": recs}
            rows.append(_row(recipe, "nluforge", out["ours"][recipe], None))
            for padding, n in (("longest", len(sub)), ("stock", min(args.stock_examples, len(sub)))):
                if n == 0:
                    continue
                p = peer(python, nltk_data, servable.run_dir / "model", sub[:n], recipe, work, padding)
                s_peer = summarize(p["records"])
                s_ours_same = summarize(recs[:n])  # ours on the same examples, for the speed ratio
                out["peer"][f"{recipe}/{padding}"] = {
                    **s_peer, "max_logit_diff_first8": float(np.abs(np.array(p["logits_first8"])
                                                                    - ours_logits[: len(p["logits_first8"])]).max()),
                    "ours_s_per_example_same": s_ours_same["s_per_example"], "records": p["records"]}
                tool = "textattack 0.3.11 (" + ("stock wrapper: pad to 512" if padding == "stock"
                                                else "dynamic padding") + ")"
                rows.append(_row(recipe, tool, s_peer, s_peer["s_per_example"] / s_ours_same["s_per_example"]))
        print_table(rows, ["recipe", "tool", "n", "skipped", "success %", "perturbed %", "queries", "s/example",
                           "peer/ours time"], f"(a) against TextAttack, SST-2 dev, {args.peer_examples} examples")
    vrows = []
    for run in args.variants:
        from nluforge.results import read_result

        v = load_servable(run)
        res = read_result(run)
        row = {"variant": run.name, "sst2 dev": res.metrics.get("trained", {}).get("validation", {}).get("accuracy"),
               "advglue_sst2": res.metrics.get("trained", {}).get("advglue_sst2", {}).get("accuracy")}
        for recipe in args.recipes:
            sw = ours(v, examples, recipe, SWEEP)
            m = sw.metrics()
            at1 = sw.metrics_at(1.0)
            row.setdefault(f"clean ({len(examples)})", at1["clean_accuracy"])
            row[f"{recipe} success T=1"] = at1["attack_success_rate"]
            row[f"{recipe} s/ex T=1"] = at1["s_per_example"]
            row[f"{recipe} T=1"] = m["accuracy_under_attack_t1"]
            row[f"{recipe} min_T"] = m["accuracy_under_attack"]
            row[f"{recipe} worst T"] = m["worst_temperature"]
        out["variants"][run.name] = row
        vrows.append(row)
    if vrows:
        print_table(vrows, list(vrows[0]), f"(b) variants, {len(examples)} SST-2 dev examples")
    dump(out, args.json_out)


if __name__ == "__main__":
    main()
