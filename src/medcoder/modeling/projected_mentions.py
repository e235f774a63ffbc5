"""English mention lexicon for CodiEsp's machine translations, projected from the Spanish spans.

Why: CodiEsp-X gold spans are offsets into the *Spanish* notes, so the English dictionary view knew
only ICD-10-CM wording (dictionary alone: test MAP 0.344 English vs 0.593 Spanish, 2026-11-27
table). The English notes are sentence-by-sentence machine translations of the same cases, so a
Spanish mention's translation sits at about the same relative position of the English note. This
module mines, over the *training* notes it is given only, the English word n-grams that keep
turning up there:

1. each Spanish mention ``[start, end)`` of code ``c`` maps to the English sentences overlapping the
   same relative span of the note (± ``margin`` of its length): the code's *window*;
2. candidates are the 1-4 word n-grams of a window that start and end on a content word;
3. ``(n-gram, c)`` becomes a lexicon entry when the n-gram lies in a ``c`` window in at least
   ``min_notes`` notes, and in a ``c`` window in at least ``min_ratio`` of the notes that contain it
   at all (it is specific to ``c``, not a word of every note).

Step 3 counts labels, so it must see only the notes a lexicon is built from: the training
resource is the unselected candidates of step 2 (:func:`window_candidates`, kind
:data:`PROJECTED`), and the dictionary view selects (:func:`select_projections`) inside each of
its cross-fitting folds and each out-of-fold fit, over that fold's build notes only. An earlier
version selected once over all training notes; the held-out notes' own labels then chose the
lexicon their precisions were measured with (optimistic out-of-fold scores for the stacker). The
dictionary then learns each entry's precision out of fold, as for the Spanish spans, so a wrong
projection costs only what it proves to cost.

No library offers this (word aligners such as fast_align or SimAlign need a parallel corpus tool
chain or a multilingual encoder that cannot be downloaded here); the counting is a few lines.
The notes a run tunes or certifies on are never given (``medcoder.workflows.fusion.fit_resources``
passes the fitting notes' ids).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from medcoder.data.codiesp import TEXT_DIRS, require_release_dir
from medcoder.data.mentions import Mention, load_codiesp_mentions
from medcoder.modeling.lexicon import STOPWORDS, normalize_with_offsets

__all__ = ["PROJECTED", "load_projected_mentions", "note_ngrams", "select_projections", "window_candidates"]

#: ``Mention.kind`` of a projected candidate (its ``text`` is the normalised n-gram).
PROJECTED = "projected"
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def _sentences(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]


def _ngrams(text: str, lo: int, hi: int, max_n: int) -> dict[str, tuple[int, int]]:
    """Content n-grams (1..``max_n`` words, first and last not a stopword or a number) of
    ``text[lo:hi]`` -> the original offsets of their first occurrence."""
    norm, offsets = normalize_with_offsets(text[lo:hi])
    toks: list[tuple[str, int, int]] = []
    start = 0
    for piece in norm.split(" ") if norm else []:
        toks.append((piece, start, start + len(piece)))
        start += len(piece) + 1
    out: dict[str, tuple[int, int]] = {}
    for i in range(len(toks)):
        if toks[i][0] in STOPWORDS or toks[i][0].isdigit():
            continue
        for n in range(1, max_n + 1):
            j = i + n - 1
            if j >= len(toks):
                break
            if toks[j][0] in STOPWORDS or toks[j][0].isdigit():
                continue
            gram = " ".join(t[0] for t in toks[i : j + 1])
            if len(gram) >= 3 and gram not in out:
                out[gram] = (lo + offsets[toks[i][1]], lo + offsets[toks[j][2] - 1] + 1)
    return out


def window_candidates(
    en_texts: Sequence[str],
    es_texts: Sequence[str],
    es_mentions: Sequence[Sequence[Mention]],
    *,
    margin: float = 0.03,
    max_n: int = 4,
) -> list[list[Mention]]:
    """Every content n-gram of every code's window, per note (aligned with ``en_texts``): one
    :class:`Mention` of kind :data:`PROJECTED` per (code, n-gram), at its first occurrence in the
    window. Nothing is selected here: which pairs become lexicon entries is decided by
    :func:`select_projections` over the notes a lexicon is built from (leak-free cross-fitting)."""
    if not (len(en_texts) == len(es_texts) == len(es_mentions)):
        raise ValueError("en_texts, es_texts and es_mentions must be aligned")
    out: list[list[Mention]] = []
    for en, es, mentions in zip(en_texts, es_texts, es_mentions, strict=True):
        sentences = _sentences(en)
        per_code: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
        if es and en and sentences:
            scale = len(en) / len(es)
            for m in mentions:
                lo = (m.start / len(es) - margin) * len(es) * scale
                hi = (m.end / len(es) + margin) * len(es) * scale
                for s, e in sentences:
                    if e > lo and s < hi:
                        for gram, off in _ngrams(en, s, e, max_n).items():
                            per_code[m.code].setdefault(gram, off)
        out.append([Mention(start=a, end=b, code=code, kind=PROJECTED, text=gram)
                    for code, grams in per_code.items() for gram, (a, b) in grams.items()])
    return out


def note_ngrams(text: str, max_n: int = 4) -> frozenset[str]:
    """The content n-grams of a whole note (what "contains the n-gram at all" counts)."""
    return frozenset(_ngrams(text, 0, len(text), max_n))


def select_projections(candidates: Sequence[Sequence[Mention]], ngram_sets: Sequence[frozenset[str]],
                       *, min_notes: int = 2, min_ratio: float = 0.3) -> set[tuple[str, str]]:
    """The ``(n-gram, code)`` pairs found in a code's window in at least ``min_notes`` of these
    notes, and in its window in at least ``min_ratio`` of the notes that contain the n-gram at all.
    ``candidates[i]`` are :func:`window_candidates` of note ``i``, ``ngram_sets[i]`` its
    :func:`note_ngrams`; only the notes passed are counted."""
    n_win: Counter[tuple[str, str]] = Counter()
    n_doc: Counter[str] = Counter()
    for mentions, grams in zip(candidates, ngram_sets, strict=True):
        n_win.update({(m.text, m.code) for m in mentions if m.kind == PROJECTED})
        n_doc.update(grams)
    return {(g, c) for (g, c), n in n_win.items() if n >= min_notes and n_doc[g] and n / n_doc[g] >= min_ratio}


def load_projected_mentions(root: str | Path, split: str, code_type: str, ids: Sequence[str],
                            **params: float) -> dict[str, list[Mention]]:
    """:func:`window_candidates` of the notes ``ids`` of one CodiEsp split (fit on train only):
    reads the Spanish and English texts and the split's CodiEsp-X spans of ``code_type``."""
    release = require_release_dir(root)
    es_dir, en_dir = release / split / TEXT_DIRS["es"], release / split / TEXT_DIRS["en"]
    spans: Mapping[str, list[Mention]] = load_codiesp_mentions(release, split, code_type)
    ids = list(ids)
    es = [(es_dir / f"{i}.txt").read_text(encoding="utf-8") if (es_dir / f"{i}.txt").is_file() else "" for i in ids]
    en = [(en_dir / f"{i}.txt").read_text(encoding="utf-8") if (en_dir / f"{i}.txt").is_file() else "" for i in ids]
    projected = window_candidates(en, es, [spans.get(i, []) for i in ids], **params)
    return dict(zip(ids, projected, strict=True))
