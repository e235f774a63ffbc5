"""What the review store asks of a bundle's fiscal-year code set: is a replacement a valid
billable code, which billable codes match a search, which codes an Excludes1 note keeps apart.

Why a module: the note page searches on every keystroke, so the search index over ~75,000
billable descriptions is built once per code set (and cached), not per request.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from medcoder.codesets import CodeSet, dotless, dotted

__all__ = [
    "CODE_SHAPE", "CodeIndex", "CodesetLoader", "code_index", "excludes1_conflicts", "normalise_code", "shown",
    "spellings",
]

CodesetLoader = Callable[[int], CodeSet]
_CODE_START = re.compile(r"^[A-Za-z][0-9][0-9A-Za-z]?\.?[0-9A-Za-z]{0,4}$")
_WORD = re.compile(r"[a-z0-9]+")
_SHOWABLE = re.compile(r"^[A-Z0-9]{0,2}[0-9]")
CODE_SHAPE = re.compile(r"^[A-Za-z0-9]{1,8}(?:\.[A-Za-z0-9]{0,8})?$")
"""What a code looks like as typed (ICD-10-CM/PCS, CodiEsp): letters and digits, at most one
dot, no blanks. Checked before a code is echoed in any message, so pasted text never is."""


def normalise_code(code: str) -> str:
    """A code as the store keeps it: trimmed and upper case, otherwise as spelt (a predictions
    file already holds its label space's canonical codes, and ICD-10-PCS codes have no dot, so
    no dot is added here); ``ValueError`` (without the value) when it does not look like a code."""
    raw = code.strip() if isinstance(code, str) else ""
    if not CODE_SHAPE.match(raw):
        raise ValueError("not shaped like a code (letters and digits, at most one dot, no blanks)")
    return raw.upper()


def shown(code: str) -> str:
    """``code`` for a message if it can only be a code (a digit among its first three
    characters, as in every ICD-10 code), else ``"the code given"``: a word typed into the code
    field may be note text."""
    return code if _SHOWABLE.match(code) else "the code given"


def spellings(code: str) -> list[str]:
    """The spellings a typed code may have in the store: as typed, and the dotted CM form
    (``E119`` -> ``E119``, ``E11.9``)."""
    return list(dict.fromkeys([code, dotted(code)]))


class CodeIndex:
    """Billable codes of one code set, searchable by code prefix or by words of the description
    (every query word must start a word of the description)."""

    def __init__(self, codeset: CodeSet) -> None:
        desc = codeset.descriptions
        self.codes = sorted(codeset.billable_codes, key=dotless)
        self.keys = [dotless(c) for c in self.codes]
        self.desc = [desc.get(c, "") for c in self.codes]
        postings: dict[str, list[int]] = {}
        for i, d in enumerate(self.desc):
            for word in set(_WORD.findall(d.lower())):
                postings.setdefault(word, []).append(i)
        self.vocab = sorted(postings)
        self.postings = postings

    def _by_prefix(self, query: str) -> list[int]:
        key = dotless(query.strip().upper())
        lo = bisect.bisect_left(self.keys, key)
        hi = bisect.bisect_left(self.keys, key + "\x7f")
        return list(range(lo, hi))

    def _by_words(self, words: Sequence[str]) -> list[int]:
        hits: set[int] | None = None
        for word in words:
            lo = bisect.bisect_left(self.vocab, word)
            hi = bisect.bisect_left(self.vocab, word + "\x7f")
            found: set[int] = set()
            for v in self.vocab[lo:hi]:
                found.update(self.postings[v])
            hits = found if hits is None else hits & found
            if not hits:
                return []
        return sorted(hits or (), key=lambda i: (len(self.keys[i]), self.keys[i]))

    def search(self, query: str, limit: int = 20) -> list[tuple[str, str]]:
        """``(code, description)`` of billable codes: by code prefix when the query looks like
        the start of a code (``E11``, ``e11.6``) and some code starts so, else by description
        words (``diab neph``)."""
        query = (query or "").strip()
        if not query or limit <= 0:
            return []
        order: list[int] = []
        if _CODE_START.match(query):
            order.extend(self._by_prefix(query)[:limit])
        words = _WORD.findall(query.lower())
        if words and not order:
            seen = set(order)
            order.extend(i for i in self._by_words(words) if i not in seen)
        return [(self.codes[i], self.desc[i]) for i in order[:limit]]


@lru_cache(maxsize=4)
def code_index(codeset: CodeSet) -> CodeIndex:
    """The search index of ``codeset``, built once per code set object (about a second)."""
    return CodeIndex(codeset)


def _excludes(codeset: CodeSet, code: str, other: str) -> bool:
    o = dotless(other)
    return any(o[: len(lo)] >= lo and o[: len(hi)] <= hi for lo, hi in codeset.excludes1(code))


def excludes1_conflicts(codeset: CodeSet, code: str, others: Sequence[str]) -> list[str]:
    """The codes of ``others`` that may not be coded together with ``code`` (an Excludes1 note of
    either code, or of an ancestor, names the other). Empty for a year without a tabular list."""
    if not codeset.has_excludes1:
        return []
    me = dotless(code)
    out = []
    for other in others:
        if dotless(other) == me:
            continue
        if _excludes(codeset, code, other) or _excludes(codeset, other, code):
            out.append(other)
    return list(dict.fromkeys(out))
