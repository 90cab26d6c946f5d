"""The masked LM behind ``bert_attack``: top-K replacement tokens for each word of a text.

``mlm=NAME`` loads ``AutoModelForMaskedLM`` (a folder or a cached hub id). Without one, the default
encoder (all-MiniLM-L6-v2, which ships no MLM head) is scored through its *tied* word embeddings:
logits = last hidden state @ E^T. That head was never trained as an LM, so its candidates are rougher
than BERT's; the run prints a note saying so.
"""

from __future__ import annotations

import sys

import torch

from nluforge.attack.words import Text
from nluforge.core.errors import UserError


class MaskedLM:
    def __init__(self, name: str | None):
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        from nluforge.models.loading import quiet_transformers, resolve_model

        self.note = None
        with quiet_transformers():
            if name:
                path = resolve_model(name)
                try:
                    self.model = AutoModelForMaskedLM.from_pretrained(path).eval()
                except (OSError, ValueError) as err:
                    raise UserError(f"bert_attack: cannot load a masked LM from '{name}' ({err}); give a "
                                    "folder holding one (e.g. bert-base-uncased), or leave mlm unset") from None
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.tied = None
            else:
                path = resolve_model("default")
                self.model = AutoModel.from_pretrained(path).eval()
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.tied = self.model.get_input_embeddings().weight  # (V, H)
                self.note = ("bert_attack: no masked LM given (-p mlm=MODEL); using the default encoder's "
                             "tied-embedding head, whose candidates are rougher than a real MLM's")
                print(f"note: {self.note}", file=sys.stderr)
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self.whole = torch.tensor([t.isalpha() and not t.startswith("##") for t in vocab])  # (V,)
        self.vocab = vocab

    @torch.inference_mode()
    def top_k(self, text: Text, k: int) -> dict[int, list[str]]:
        """Word index → the K most likely whole-word tokens at its first sub-word (unmasked input)."""
        field = text.fields[text.target]
        enc = self.tokenizer(field, return_offsets_mapping=True, truncation=True, max_length=128,
                             return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        out = self.model(**enc)
        if self.tied is None:
            logits = out.logits[0]  # (T, V)
        else:
            logits = out.last_hidden_state[0] @ self.tied.T  # (T, V)
        logits[:, ~self.whole] = float("-inf")
        starts = {s: t for t, (s, e) in enumerate(offsets) if e > s}
        found = {}
        for i, (start, _end) in enumerate(text.spans()):
            if start in starts:
                ids = logits[starts[start]].topk(k).indices.tolist()
                found[i] = [self.vocab[j] for j in ids]
        return found
