"""Run inside the TextAttack 0.3.11 venv (transformers 4.57) by benchmarks/robustness.py; not on its own.

    python _textattack_peer.py MODEL_DIR EXAMPLES.json RECIPE OUT.json [stock|longest]

MODEL_DIR is an nluforge run's ``model/`` (a BertForSequenceClassification folder whose head reads the
*mean* of the last hidden states: ``config.nluforge_pooling: mean``); the wrapper below reproduces that
read, so both tools attack the same function. ``stock`` (the default) tokenizes as TextAttack's own
``HuggingFaceModelWrapper`` does, padding every query to the tokenizer's ``model_max_length`` (512 for
the default model), which is how users run it; ``longest`` pads each batch to its longest query, a
faster peer than TextAttack ships. One torch thread. Writes one record per example.
"""

import json
import sys
import time

import torch

torch.set_num_threads(1)
import textattack  # noqa: E402
from textattack.attack_recipes import DeepWordBugGao2018, PWWSRen2019  # noqa: E402
from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult  # noqa: E402
from textattack.models.wrappers import ModelWrapper  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


class MeanPooledBert(ModelWrapper):
    def __init__(self, path, padding="stock"):
        self.padding = padding
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.mean = getattr(self.model.config, "nluforge_pooling", "cls") == "mean"

    @torch.no_grad()
    def __call__(self, text_list):
        if self.padding == "stock":  # HuggingFaceModelWrapper.__call__ of TextAttack 0.3.11
            n = 512 if self.tokenizer.model_max_length == int(1e30) else self.tokenizer.model_max_length
            enc = self.tokenizer(text_list, add_special_tokens=True, padding="max_length", max_length=n,
                                 truncation=True, return_tensors="pt")
        else:
            enc = self.tokenizer(text_list, padding=True, truncation=True, max_length=128, return_tensors="pt")
        if not self.mean:
            return self.model(**enc).logits.numpy()
        h = self.model.bert(**enc).last_hidden_state  # (B, T, H)
        m = enc["attention_mask"].unsqueeze(-1).float()
        return self.model.classifier((h * m).sum(1) / m.sum(1)).numpy()  # (B, C)


def main():
    model_dir, examples_file, recipe, out = sys.argv[1:5]
    wrapper = MeanPooledBert(model_dir, sys.argv[5] if len(sys.argv) > 5 else "stock")
    examples = json.load(open(examples_file))
    build = {"deepwordbug": DeepWordBugGao2018, "pwws": PWWSRen2019}[recipe]
    attack = build.build(wrapper)
    textattack.shared.utils.set_seed(0)
    records = []
    check = wrapper([e["text"] for e in examples[:8]]).tolist()
    for e in examples:
        t0 = time.perf_counter()
        r = attack.attack(e["text"], e["label"])
        dt = time.perf_counter() - t0
        status = ("success" if isinstance(r, SuccessfulAttackResult) else
                  "skipped" if isinstance(r, SkippedAttackResult) else
                  "failed" if isinstance(r, FailedAttackResult) else type(r).__name__)
        orig = r.original_result.attacked_text
        changed = len(orig.all_words_diff(r.perturbed_result.attacked_text)) if status == "success" else 0
        records.append({"status": status, "words": len(orig.words), "perturbed_words": changed,
                        "queries": r.num_queries, "time_s": dt, "perturbed": r.perturbed_result.attacked_text.text})
    json.dump({"records": records, "logits_first8": check, "textattack": textattack.__version__ if hasattr(
        textattack, "__version__") else "0.3.11", "threads": torch.get_num_threads(),
               "padding": wrapper.padding}, open(out, "w"))


if __name__ == "__main__":
    main()
