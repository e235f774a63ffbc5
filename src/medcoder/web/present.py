"""Turning store views into what a coder reads: highlighted text segments, reasons and views in
plain words, the codes currently on a note.

Pure functions over plain values, so the page logic is testable without a server. Text is never
marked up here: segments carry the raw substring and Jinja2 escapes it when the page is rendered
(autoescape), which is what keeps a note holding ``<script>`` inert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REASONS", "SOURCES", "Segment", "codes_on_note", "plain_reason", "plain_source", "segments"]

#: Routing reasons (``../shared/DESIGN.md``, stable names) in words a coder reads.
REASONS: dict[str, str] = {
    "low_confidence": "the model is not sure enough to accept it alone",
    "rare_code": "a rare code: few training examples",
    "new_code": "new in this fiscal year's code set",
    "excludes1_conflict": "Excludes1 conflict with another suggested code",
    "invalid_code": "not a valid billable code in the bundle's fiscal year",
    "truncated_note": "the note was cut before scoring: read to the end",
    "empty_note": "the note is empty",
    "no_evidence": "no evidence span in the note",
    "audit_alarm": "the audited precision monitor raised an alarm",
    "audit_status_unreadable": "the audit status could not be read",
    "negated_mention": "only negated or hypothetical mentions",
    "sibling_conflict": "conflicts with a sibling code",
}

#: Views (evidence ``source`` / code ``sources``) in plain words, and the CSS class of their spans.
SOURCES: dict[str, tuple[str, str]] = {
    "neural": ("attention of the neural model", "ev-attention"),
    "dictionary": ("dictionary mention", "ev-mention"),
    "tfidf": ("tf-idf terms", "ev-term"),
    "reviewer": ("selected by the reviewer", "ev-reviewer"),
}


def plain_reason(reason: str) -> str:
    return REASONS.get(reason, reason.replace("_", " "))


def plain_source(source: str) -> str:
    return SOURCES.get(source, (source.replace("_", " "), ""))[0]


@dataclass
class Segment:
    """A run of note text and the evidence kinds covering it (empty: plain text)."""

    text: str
    classes: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)

    @property
    def marked(self) -> bool:
        return bool(self.classes)


def segments(text: str, evidence: Iterable[Mapping[str, Any]]) -> list[Segment]:
    """``text`` cut at every evidence boundary; each piece lists the kinds of span covering it.

    Offsets are code points into the note as scored; spans outside the text are clipped, empty or
    malformed spans ignored (evidence comes from a file and must not break the page). A span
    flagged ``negated`` adds the ``ev-negated`` class.
    """
    spans: list[tuple[int, int, str, bool]] = []
    n = len(text)
    for span in evidence:
        try:
            start, end = int(span["start"]), int(span["end"])
        except (KeyError, TypeError, ValueError):
            continue
        start, end = max(0, start), min(n, end)
        if end > start:
            spans.append((start, end, str(span.get("source", "")), bool(span.get("negated", False))))
    if not spans:
        return [Segment(text)] if text else []
    cuts = sorted({0, n, *(s for s, _, _, _ in spans), *(e for _, e, _, _ in spans)})
    out: list[Segment] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        classes: list[str] = []
        titles: list[str] = []
        for s, e, source, negated in spans:
            if s <= a and b <= e:
                css = SOURCES.get(source, ("", "ev-other"))[1]
                for c in ("ev", css, "ev-negated" if negated else ""):
                    if c and c not in classes:
                        classes.append(c)
                title = plain_source(source) + (" (negated)" if negated else "")
                if title not in titles:
                    titles.append(title)
        out.append(Segment(text[a:b], classes, titles))
    return out


def codes_on_note(codes: Sequence[Any], added: Sequence[Any], *, without: str | None = None) -> list[str]:
    """The codes the note would carry now: accepted, auto-accepted or still undecided suggestions,
    replacements and added codes (rejected and queried ones left out). ``without`` drops the code
    being replaced, so a replacement is checked against the others only (Excludes1 as you choose)."""
    out: list[str] = []
    for c in codes:
        if c.code == without:
            continue
        if c.current == "replace" and c.replaced_by:
            out.append(c.replaced_by)
        elif c.current in (None, "accept"):
            out.append(c.code)
    out += [a.code for a in added if a.code != without and a.current != "reject"]
    return list(dict.fromkeys(out))
