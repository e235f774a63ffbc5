"""Loose lexicon matches: a lexicon string's stemmed content words, in any order, close together.

Why: on the tuning fifth of Spanish CodiEsp-D train (seed 42), 75 of the 863 gold (note, code) pairs
the exact dictionary missed had a *discontinuous* gold mention ("carcinoma urotelial infiltrante de
vejiga" annotated as "carcinoma ... vejiga"; "próstata: adenocarcinoma") and a few more differed
only by inflection ("lesiones renales" vs "lesión renal"). An exact automaton cannot see them. This
index matches a string when the Snowball stems of all its content words (stopwords and numbers
dropped, at least two of them) occur within ``window`` tokens of each other in one sentence, in
any order. The dictionary keeps such a match under its own key (``LOOSE_PREFIX + string``), so its
precision is learned out-of-fold apart from the exact match's: a loose match is only as trusted as
it proved to be.

Why Snowball (``snowballstemmer``, BSD-3-Clause): it is the standard light stemmer for Spanish and
English, pure Python, and already what Sphinx and many IR stacks use; writing plural/gender rules by
hand would be a worse copy of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import snowballstemmer

from medcoder.modeling.lexicon import STOPWORDS

__all__ = ["LOOSE_PREFIX", "LooseIndex", "content_stems"]

#: The key under which a loose match of lexicon string ``m`` is counted and scored.
LOOSE_PREFIX = "~"
_LANGUAGES = {"es": "spanish", "en": "english"}


@lru_cache(maxsize=4)
def _stemmer(language: str) -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer(_LANGUAGES.get(language, "spanish"))


@lru_cache(maxsize=200_000)
def _stem(word: str, language: str) -> str:
    # Cached: Snowball in pure Python costs ~20 µs a word, and every note is stemmed at each fit fold
    # and at every prediction; clinical vocabularies repeat, so the cache makes it ~100x cheaper.
    return _stemmer(language).stemWord(word)


def _stem_tokens(tokens: Sequence[str], language: str) -> list[str]:
    return [_stem(t, language) for t in tokens]


def content_stems(norm: str, language: str) -> tuple[str, ...]:
    """Distinct stems of a normalised string's content words (no stopwords, no numbers), sorted."""
    words = [t for t in norm.split() if t not in STOPWORDS and not t.isdigit()]
    return tuple(sorted(set(_stem_tokens(words, language))))


class LooseIndex:
    """Strings with >= 2 content stems, indexed by their rarest-looking (longest) stem."""

    def __init__(self, strings: Sequence[str], *, language: str, window: int) -> None:
        self.language = language
        self.window = int(window)
        self.entries: list[tuple[int, tuple[str, ...]]] = []
        self.by_anchor: dict[str, list[int]] = defaultdict(list)
        for idx, s in enumerate(strings):
            stems = content_stems(s, language)
            if len(stems) < 2 or len(stems) > self.window:
                continue
            anchor = max(stems, key=lambda t: (len(t), t))
            self.by_anchor[anchor].append(len(self.entries))
            self.entries.append((idx, stems))

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, tokens: Sequence[str], sentence: Sequence[int]) -> list[tuple[int, int, int]]:
        """``(string index, first token, last token)`` of each loose match in a tokenised note.

        For each occurrence of an entry's anchor stem, every other stem must occur within
        ``window`` tokens of it in the same sentence; the match spans the nearest such occurrences
        and may not be wider than ``window`` + 1 tokens. One match per (string, anchor occurrence).
        """
        stems = _stem_tokens(tokens, self.language)
        positions: dict[str, list[int]] = defaultdict(list)
        for t, s in enumerate(stems):
            positions[s].append(t)
        out: list[tuple[int, int, int]] = []
        for anchor, at in positions.items():
            for e in self.by_anchor.get(anchor, ()):
                idx, needed = self.entries[e]
                if any(s not in positions for s in needed):
                    continue
                for p in at:
                    lo = hi = p
                    ok = True
                    for s in needed:
                        if s == anchor:
                            continue
                        near = [q for q in positions[s] if abs(q - p) <= self.window and sentence[q] == sentence[p]]
                        if not near:
                            ok = False
                            break
                        q = min(near, key=lambda q: abs(q - p))
                        lo, hi = min(lo, q), max(hi, q)
                    if ok and hi - lo <= self.window:
                        out.append((idx, lo, hi))
        return out
