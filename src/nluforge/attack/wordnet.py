"""WordNet 3.0 synonyms, read straight from the database files (``index.<pos>``, ``data.<pos>``,
``<pos>.exc``) that Debian's ``wordnet-base`` installs in ``/usr/share/wordnet``.

Our own reader (about 80 lines) instead of nltk: nltk 3.10 refuses a corpus outside ``nltk.data.path``
and needs a ``lexnames`` file Debian does not ship (../shared/DEPENDENCIES.md). It reproduces what
TextAttack's ``WordSwapWordNet`` asks of nltk: ``synsets(word)`` over all four parts of speech, with
nltk's ``morphy`` (exception lists, then the detachment rules), and each synset's lemma names.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from nluforge.core.errors import UserError

WORDNET_ENV = "NLUFORGE_WORDNET_DIR"
DEFAULT_DIR = "/usr/share/wordnet"
_POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's morphy detachment rules (morph.c), as nltk's MORPHOLOGICAL_SUBSTITUTIONS
_RULES = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


def wordnet_dir(given: str | None = None) -> Path:
    """The WordNet database folder; a one-line error saying how to get it when it is missing."""
    path = Path(given or os.environ.get(WORDNET_ENV) or DEFAULT_DIR)
    if not (path / "data.noun").is_file():
        raise UserError(f"WordNet not found in {path} (the pwws recipe needs it); install it with "
                        "`make wordnet` (apt-get install wordnet-base wordnet-sense-index) or point "
                        f"${WORDNET_ENV} at a folder holding WordNet 3.0's index.* and data.* files")
    return path


class WordNet:
    """Lemma → synset offsets per part of speech, and offset → lemma names, loaded once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index: dict[str, dict[str, list[int]]] = {}
        self.exceptions: dict[str, dict[str, list[str]]] = {}
        for pos, name in _POS.items():
            self.index[pos] = self._read_index(folder / f"index.{name}")
            exc = folder / f"{name}.exc"
            self.exceptions[pos] = {}
            if exc.is_file():
                for line in exc.read_text(encoding="utf-8").splitlines():
                    parts = line.split()
                    if len(parts) >= 2:
                        self.exceptions[pos][parts[0]] = parts[1:]
        self._data = {pos: (folder / f"data.{name}").open("rb") for pos, name in _POS.items()}

    @staticmethod
    def _read_index(path: Path) -> dict[str, list[int]]:
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("  "):  # the licence header
                continue
            parts = line.split()
            n_synsets, n_ptr = int(parts[2]), int(parts[3])
            out[parts[0]] = [int(o) for o in parts[4 + n_ptr + 2:][:n_synsets]]
        return out

    def morphy(self, word: str, pos: str) -> list[str]:
        """Base forms of ``word`` in ``pos`` that WordNet lists (nltk's ``_morphy``)."""
        index = self.index[pos]
        if word in self.exceptions[pos]:
            forms = [word, *self.exceptions[pos][word]]
        else:
            forms = [word] + [word[: -len(old)] + new for old, new in _RULES[pos] if word.endswith(old)]
        seen: list[str] = []
        for form in forms:
            if form in index and form not in seen:
                seen.append(form)
        return seen

    def lemma_names(self, pos: str, offset: int) -> list[str]:
        fh = self._data[pos]
        fh.seek(offset)
        parts = fh.readline().decode("utf-8").split()
        count = int(parts[3], 16)  # w_cnt is two hex digits
        names = parts[4: 4 + 2 * count: 2]
        return [n.split("(")[0] for n in names]  # adjectives may carry a marker: "galore(ip)"

    def synonyms(self, word: str) -> list[str]:
        """One-word synonyms of ``word`` over all synsets of all parts of speech (TextAttack's rule:
        no multi-word lemma, not the word itself), in WordNet's order."""
        lower = word.lower()
        out: list[str] = []
        for pos in _POS:
            for form in self.morphy(lower, pos):
                for offset in self.index[pos][form]:
                    for name in self.lemma_names(pos, offset):
                        if name.lower() != lower and "_" not in name and "-" not in name and name not in out:
                            out.append(name)
        return out


@lru_cache(maxsize=4)
def load_wordnet(folder: str | None = None) -> WordNet:
    return WordNet(wordnet_dir(folder))
