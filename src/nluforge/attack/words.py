"""Words of a text as the attack sees them, and the stopwords it leaves alone.

A word is a maximal run of letters, digits, apostrophes, hyphens or underscores, as in TextAttack's
``words_from_text``; everything between words (spaces, punctuation) is kept verbatim, so a perturbed
text differs from its original only inside the words that were swapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[\w'\-]+")

# NLTK's English stopword list (179 words), the list TextAttack's StopwordModification uses.
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he
him his himself she she's her hers herself it it's its itself they them their theirs themselves what
which who whom this that that'll these those am is are was were be been being have has had having do
does did doing a an the and but if or because as until while of at by for with about against between
into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only
own same so than too very s t can will just don don't should should've now d ll m o re ve y ain aren
aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won
won't wouldn wouldn't
""".split())


@dataclass(frozen=True)
class Text:
    """One example's fields; only ``fields[target]`` (the last field: the hypothesis) is attacked."""

    fields: tuple[str, ...]

    @property
    def target(self) -> int:
        return len(self.fields) - 1  # a pair's premise (first field) is left alone

    def spans(self) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(self.fields[self.target])]

    def words(self) -> list[str]:
        return _WORD.findall(self.fields[self.target])

    def replace(self, swaps: dict[int, str]) -> Text:
        """A copy with word ``i`` replaced by ``swaps[i]`` (an empty string deletes the word)."""
        text, spans = self.fields[self.target], self.spans()
        out, last = [], 0
        for i in sorted(swaps):
            start, end = spans[i]
            out += [text[last:start], swaps[i]]
            last = end
        out.append(text[last:])
        new = "".join(out)
        if any(s == "" for s in swaps.values()):
            new = re.sub(r" {2,}", " ", new).strip()
        return Text(self.fields[:self.target] + (new,))
