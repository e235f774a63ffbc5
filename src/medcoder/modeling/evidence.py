"""Evidence: the character spans of a note that a code's label attention weighed most.

Why: an auditor accepting or correcting a code wants to see *where* the model found it. The label
attention already says which token positions each code looked at; this module maps those positions
back to character offsets. Offsets, not text, so predictions files and audit logs can carry
evidence without copying clinical text (the reader slices the note they already have).

Position arithmetic mirrors :mod:`medcoder.data.chunking` and
:func:`medcoder.modeling.model.compact_tokens`/``pool_tokens``: after compaction a note is its
chunks back to back, each ``[CLS] piece [SEP]`` (all but the last exactly ``chunk_size`` long),
and pooled position ``p`` covers tokens ``[p*stride, (p+1)*stride)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def position_char_span(
    position: int, offsets: Sequence[tuple[int, int]], *, chunk_size: int, stride: int
) -> tuple[int, int] | None:
    """Character span ``(start, end)`` of pooled ``position``; None if it covers only specials."""
    body = chunk_size - 2
    starts, ends = [], []
    for t in range(position * stride, (position + 1) * stride):
        chunk, r = divmod(t, chunk_size)
        if r == 0 or r - 1 >= body:  # [CLS] or the [SEP] of a full chunk
            continue
        tok = chunk * body + r - 1
        if tok >= len(offsets):  # the last chunk's [SEP], or padding
            continue
        start, end = offsets[tok]
        if end > start:
            starts.append(start)
            ends.append(end)
    return (min(starts), max(ends)) if starts else None


def evidence_spans(
    positions: Sequence[int],
    weights: Sequence[float],
    offsets: Sequence[tuple[int, int]],
    *,
    chunk_size: int,
    stride: int,
    text: str | None = None,
    min_weight: float = 0.01,
) -> list[dict[str, Any]]:
    """Spans for one code's top positions, highest weight first; spans that overlap or are one
    character apart (neighbouring words) are merged into one piece of evidence. Positions with
    less than ``min_weight`` of the attention are noise, not evidence. With ``text``, spans are
    widened to whole words (a position may cover only word pieces: ``hemat`` of ``hematuria``)."""
    spans: list[list[Any]] = []
    for pos, w in sorted(zip(positions, weights, strict=True), key=lambda pw: -pw[1]):
        if w < min_weight:
            continue
        span = position_char_span(int(pos), offsets, chunk_size=chunk_size, stride=stride)
        if span is None:
            continue
        if text is not None:
            span = _whole_words(text, *span)
        for s in spans:
            if span[0] <= s[1] + 1 and s[0] <= span[1] + 1:
                s[0], s[1], s[2] = min(s[0], span[0]), max(s[1], span[1]), s[2] + float(w)
                break
        else:
            spans.append([span[0], span[1], float(w)])
    return [{"start": int(a), "end": int(b), "weight": round(w, 4)} for a, b, w in spans]


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end
