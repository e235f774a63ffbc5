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
3. ``(n-gram, c)`` is kept when the n-gram lies in a ``c`` window in at least ``min_notes`` notes,
   and in a ``c`` window in at least ``min_ratio`` of the training notes that contain it at all
   (it is specific to ``c``, not a word of every note);
4. each note gets, per code, its ``max_per_code`` best kept n-grams found in that code's windows, as
   :class:`~medcoder.data.mentions.Mention` objects with *English* offsets.

The dictionary view takes them as its ``mentions`` fit resource and learns each string's precision
out of fold, as for the Spanish spans, so a wrong projection costs only what it proves to cost.

No library offers this (word aligners such as fast_align or SimAlign need a parallel corpus tool
chain or a multilingual encoder that cannot be downloaded here); the counting is a few lines.
Honesty note: which n-grams are kept is decided from counts over all the notes given; the view's
own cross-fitting then learns precisions fold by fold. The notes a run tunes or certifies on are
never given (``medcoder.workflows.fusion.fit_resources`` passes the fitting notes' ids), so their
scores measure the projection honestly.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from medcoder.data.codiesp import TEXT_DIRS, require_release_dir
from medcoder.data.mentions import Mention, load_codiesp_mentions
from medcoder.modeling.lexicon import STOPWORDS, normalize_with_offsets

__all__ = ["load_projected_mentions", "project_mentions"]

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


def project_mentions(
    en_texts: Sequence[str],
    es_texts: Sequence[str],
    es_mentions: Sequence[Sequence[Mention]],
    *,
    min_notes: int = 2,
    min_ratio: float = 0.3,
    max_per_code: int = 3,
    margin: float = 0.03,
    max_n: int = 4,
) -> list[list[Mention]]:
    """English pseudo-mentions per note (aligned with ``en_texts``), mined from these notes only."""
    if not (len(en_texts) == len(es_texts) == len(es_mentions)):
        raise ValueError("en_texts, es_texts and es_mentions must be aligned")
    windows: list[dict[str, dict[str, tuple[int, int]]]] = []  # note -> code -> gram -> offsets
    n_win: Counter[tuple[str, str]] = Counter()
    n_doc: Counter[str] = Counter()
    kinds: dict[str, str] = {}
    for en, es, mentions in zip(en_texts, es_texts, es_mentions, strict=True):
        sentences = _sentences(en)
        per_code: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
        for m in mentions:
            kinds.setdefault(m.code, m.kind)
        if es and en and sentences:
            scale = len(en) / len(es)
            for m in mentions:
                lo = (m.start / len(es) - margin) * len(es) * scale
                hi = (m.end / len(es) + margin) * len(es) * scale
                for s, e in sentences:
                    if e > lo and s < hi:
                        for gram, off in _ngrams(en, s, e, max_n).items():
                            per_code[m.code].setdefault(gram, off)
        windows.append(per_code)
        for code, grams in per_code.items():
            n_win.update((g, code) for g in grams)
        n_doc.update(_ngrams(en, 0, len(en), max_n).keys())
    kept = {(g, c): n / n_doc[g] for (g, c), n in n_win.items()
            if n >= min_notes and n_doc[g] and n / n_doc[g] >= min_ratio}
    out: list[list[Mention]] = []
    for en, per_code in zip(en_texts, windows, strict=True):
        note: list[Mention] = []
        for code, grams in per_code.items():
            best = sorted((g for g in grams if (g, code) in kept),
                          key=lambda g: (-kept[(g, code)], -n_win[(g, code)], -len(g), g))[:max_per_code]
            for g in best:
                s, e = grams[g]
                note.append(Mention(start=s, end=e, code=code, kind=kinds[code], text=en[s:e]))
        out.append(note)
    return out


def load_projected_mentions(root: str | Path, split: str, code_type: str, ids: Sequence[str],
                            **params: float) -> dict[str, list[Mention]]:
    """:func:`project_mentions` over the notes ``ids`` of one CodiEsp split (fit on train only):
    reads the Spanish and English texts and the split's CodiEsp-X spans of ``code_type``."""
    release = require_release_dir(root)
    es_dir, en_dir = release / split / TEXT_DIRS["es"], release / split / TEXT_DIRS["en"]
    spans: Mapping[str, list[Mention]] = load_codiesp_mentions(release, split, code_type)
    ids = list(ids)
    es = [(es_dir / f"{i}.txt").read_text(encoding="utf-8") if (es_dir / f"{i}.txt").is_file() else "" for i in ids]
    en = [(en_dir / f"{i}.txt").read_text(encoding="utf-8") if (en_dir / f"{i}.txt").is_file() else "" for i in ids]
    projected = project_mentions(en, es, [spans.get(i, []) for i in ids], **params)
    return dict(zip(ids, projected, strict=True))
