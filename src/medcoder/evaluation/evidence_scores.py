"""Evidence spans scored against gold mention spans (CodiEsp-X): is the evidence where the code is?

Why: every predicted code carries evidence spans (``{"start", "end", "source", ...}``, offsets
into the note; ``source`` names the view: ``dictionary`` = exact mention matches, ``neural`` =
the spans the code's label attention weighed most). An auditor who checks an auto-accepted code
reads its evidence first, so evidence that misses the mention costs review time or, worse,
confirms a code for the wrong reason. CodiEsp-X annotates, for every gold code of a note, the
character spans that justify it; this module measures evidence against them.

What is scored (per source, i.e. per view, separately, plus ``all`` = every source together,
what the auditor sees):

* **The scored codes** are the *predicted* codes of a note that are also *gold* codes of that
  note with gold spans. A wrong code has no gold span to compare with (that is code precision,
  measured elsewhere); a missed code has no evidence. Gold spans are those of the same
  (note, code) only: evidence on another code's mention is a miss.
* **Character precision / recall / F1, micro-averaged over all scored codes**: characters are
  counted per (note, code) over the *union* of the source's evidence spans E and the union of
  the gold fragments G, then summed over codes: ``P = sum|E∩G| / sum|E|``,
  ``R = sum|E∩G| / sum|G|``. Recall's denominator includes the scored codes for which the
  source has *no* evidence (their gold characters count as missed), so a view that says nothing
  cannot get a high recall; precision counts only codes the source gave evidence for.
* **Hit rate**: the share of the source's evidence spans (each span once, over the scored
  codes) that overlap at least one gold character of that (note, code). "Will the auditor find
  the mention when they click this span?"
* **IoU**: character Jaccard ``|E∩G| / |E∪G|`` per scored code, averaged (macro) over the
  scored codes that *have* evidence from the source; how many codes have none is **coverage**
  (share of scored codes with at least one span from the source), reported beside it, so the
  two questions "is there evidence" and "is it in the right place" stay apart.
* **Discontinuous gold mentions** (``"2787 2801;2810 2823"``) count only their fragments as
  gold characters; the gap between them is not part of the mention. (The official CodiEsp-X
  metric, :mod:`medcoder.evaluation.codiesp_x`, instead takes first start to last end.)

And :func:`auto_accept_overlap`: of the **auto-accepted** codes, the share whose evidence (any
source) overlaps a gold span of that code in that note: the first thing an auditor checks. Its
denominator is every auto-accepted code (a wrong code cannot overlap a gold span of itself and
counts as a miss); the same count over the auto-accepted codes that are gold codes with spans
separates evidence quality from code correctness.

Undefined ratios (nothing to divide by) are ``nan``, never a made-up 0 or 1.

Pure numpy: inputs are plain mappings (``DocumentPrediction.to_dict()["codes"]`` rows work as
they are), so this layer knows nothing of the inference package.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "ALL_SOURCES",
    "AUTO_ACCEPT",
    "AutoAcceptOverlap",
    "EvidenceReport",
    "GoldSpans",
    "SourceScores",
    "auto_accept_overlap",
    "char_counts",
    "gold_spans_from_mentions",
    "overlaps",
    "score_evidence",
]

Fragment = tuple[int, int]
GoldSpans = Mapping[tuple[str, str], Sequence[Fragment]]
"""``(note id, code) -> gold fragments [(start, end), ...]`` (half-open character offsets)."""

#: The pseudo-source "every view's evidence together".
ALL_SOURCES = "all"
#: The routing decision name of an auto-accepted code (``medcoder.routing.reasons.AUTO_ACCEPT``;
#: repeated here because evaluation sits below routing in the layers).
AUTO_ACCEPT = "auto_accept"


def gold_spans_from_mentions(mentions_by_doc: Mapping[str, Iterable[Any]]) -> dict[tuple[str, str], list[Fragment]]:
    """``{doc: [Mention, ...]}`` (:func:`medcoder.data.mentions.load_codiesp_mentions`) -> the
    gold fragments of each (note, code): every fragment of every mention of that code."""
    out: dict[tuple[str, str], list[Fragment]] = defaultdict(list)
    for doc, mentions in mentions_by_doc.items():
        for m in mentions:
            out[(str(doc), str(m.code))].extend((int(s), int(e)) for s, e in m.fragments)
    return dict(out)


def _mask(spans: Iterable[Fragment], length: int) -> np.ndarray:
    mask = np.zeros(length, dtype=bool)
    for s, e in spans:
        mask[max(int(s), 0):max(int(e), 0)] = True
    return mask


def char_counts(pred: Sequence[Fragment], gold: Sequence[Fragment]) -> tuple[int, int, int, int]:
    """``(|E∩G|, |E|, |G|, |E∪G|)`` in characters, over the unions of ``pred`` and ``gold``
    spans (overlapping spans are not counted twice)."""
    length = max([int(e) for _, e in pred] + [int(e) for _, e in gold] + [0])
    e, g = _mask(pred, length), _mask(gold, length)
    return int((e & g).sum()), int(e.sum()), int(g.sum()), int((e | g).sum())


def overlaps(span: Fragment, gold: Sequence[Fragment]) -> bool:
    """True when ``span`` shares at least one character with one of the ``gold`` fragments."""
    s, e = int(span[0]), int(span[1])
    return any(s < ge and gs < e for gs, ge in gold)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


@dataclass
class SourceScores:
    """Counts for one source over the scored codes; the metrics are properties of the counts."""

    source: str
    n_codes: int = 0            # scored codes (predicted and gold, with gold spans)
    n_with_evidence: int = 0    # ... of them with at least one span from this source
    n_spans: int = 0            # the source's spans over the scored codes
    n_spans_hit: int = 0        # ... that overlap a gold fragment of their (note, code)
    char_tp: int = 0            # sum |E∩G|
    char_pred: int = 0          # sum |E|
    char_gold: int = 0          # sum |G| (every scored code)
    iou_sum: float = 0.0        # sum of |E∩G|/|E∪G| over codes with evidence

    def add(self, pred: Sequence[Fragment], gold: Sequence[Fragment]) -> None:
        """Count one scored (note, code): ``pred`` are this source's spans (may be empty)."""
        tp, n_pred, n_gold, union = char_counts(pred, gold)
        self.n_codes += 1
        self.char_gold += n_gold
        if not pred:
            return
        self.n_with_evidence += 1
        self.n_spans += len(pred)
        self.n_spans_hit += sum(overlaps(sp, gold) for sp in pred)
        self.char_tp += tp
        self.char_pred += n_pred
        self.iou_sum += _ratio(tp, union) if union else 0.0

    @property
    def char_precision(self) -> float:
        return _ratio(self.char_tp, self.char_pred)

    @property
    def char_recall(self) -> float:
        return _ratio(self.char_tp, self.char_gold)

    @property
    def char_f1(self) -> float:
        p, r = self.char_precision, self.char_recall
        if math.isnan(p) or math.isnan(r):
            return math.nan
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def hit_rate(self) -> float:
        return _ratio(self.n_spans_hit, self.n_spans)

    @property
    def iou(self) -> float:
        return _ratio(self.iou_sum, self.n_with_evidence)

    @property
    def coverage(self) -> float:
        return _ratio(self.n_with_evidence, self.n_codes)

    def metrics(self) -> dict[str, float]:
        """The rates (nan where undefined), keyed by name."""
        return {"char_precision": self.char_precision, "char_recall": self.char_recall, "char_f1": self.char_f1,
                "hit_rate": self.hit_rate, "iou": self.iou, "coverage": self.coverage}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.metrics()}


@dataclass
class AutoAcceptOverlap:
    """Auto-accepted codes whose evidence overlaps a gold span of the same (note, code)."""

    n_auto_accepted: int = 0
    n_overlap: int = 0           # any evidence span overlaps a gold fragment of the code
    n_first_overlap: int = 0     # the first span listed (what the auditor opens first) does
    n_scorable: int = 0          # auto-accepted codes that are gold codes of the note with spans
    n_without_evidence: int = 0  # should be 0: the coder routes such codes to review

    @property
    def share(self) -> float:
        """Over every auto-accepted code (a wrong code counts as not overlapping)."""
        return _ratio(self.n_overlap, self.n_auto_accepted)

    @property
    def share_first(self) -> float:
        return _ratio(self.n_first_overlap, self.n_auto_accepted)

    @property
    def share_scorable(self) -> float:
        """Over the auto-accepted codes that are right and have gold spans (evidence quality alone)."""
        return _ratio(self.n_overlap, self.n_scorable)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share, "share_first": self.share_first,
                "share_scorable": self.share_scorable}


@dataclass
class EvidenceReport:
    """Per-source scores, the auto-accept overlap and the counts behind the scored set."""

    sources: dict[str, SourceScores]
    auto_accept: AutoAcceptOverlap
    n_notes: int
    n_predicted: int             # predicted codes over all notes
    n_predicted_gold: int        # ... that are gold codes of their note (with or without spans)
    n_scored: int                # ... that are gold codes with gold spans (the scored set)

    def metrics(self, prefix: str = "evidence_") -> dict[str, float]:
        """Flat ``{prefix}{source}_{metric}`` keys plus the auto-accept shares and counts."""
        out: dict[str, float] = {}
        for name, s in self.sources.items():
            out.update({f"{prefix}{name}_{k}": v for k, v in s.metrics().items()})
        a = self.auto_accept
        out.update({
            f"{prefix}auto_accept_overlap": a.share,
            f"{prefix}auto_accept_first_overlap": a.share_first,
            f"{prefix}auto_accept_overlap_scorable": a.share_scorable,
            f"{prefix}n_auto_accepted": float(a.n_auto_accepted),
            f"{prefix}n_scored_codes": float(self.n_scored),
        })
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "definitions": {
                "scored_codes": "predicted codes that are gold codes of the note with CodiEsp-X spans",
                "char_precision_recall_f1": "micro over scored codes: sums of |E∩G|, |E|, |G| over (note, code); "
                                            "recall counts the gold characters of scored codes without evidence",
                "hit_rate": "share of evidence spans overlapping a gold fragment of their (note, code)",
                "iou": "mean over scored codes with evidence of |E∩G|/|E∪G|",
                "coverage": "share of scored codes with at least one evidence span from the source",
                "auto_accept_overlap": "share of auto-accepted codes with an evidence span overlapping a gold "
                                       "span of that code (wrong codes count as misses)",
            },
            "n_notes": self.n_notes, "n_predicted": self.n_predicted, "n_predicted_gold": self.n_predicted_gold,
            "n_scored": self.n_scored,
            "sources": {name: s.to_dict() for name, s in self.sources.items()},
            "auto_accept": self.auto_accept.to_dict(),
        }


def _spans(evidence: Iterable[Mapping[str, Any]], source: str | None = None) -> list[Fragment]:
    return [(int(e["start"]), int(e["end"])) for e in evidence
            if source is None or e.get("source") == source]


def auto_accept_overlap(predictions: Mapping[str, Sequence[Mapping[str, Any]]], gold: GoldSpans) -> AutoAcceptOverlap:
    """See the module docstring; ``predictions``: ``{note id: [code row, ...]}``, each row with
    ``code``, ``decision`` and ``evidence`` (spans in the coder's order: the first is shown first)."""
    out = AutoAcceptOverlap()
    for doc, rows in predictions.items():
        for row in rows:
            if row.get("decision") != AUTO_ACCEPT:
                continue
            out.n_auto_accepted += 1
            spans = _spans(row.get("evidence") or [])
            fragments = gold.get((str(doc), str(row["code"])), ())
            if not spans:
                out.n_without_evidence += 1
            if fragments:
                out.n_scorable += 1
            if any(overlaps(sp, fragments) for sp in spans):
                out.n_overlap += 1
            if spans and overlaps(spans[0], fragments):
                out.n_first_overlap += 1
    return out


def score_evidence(
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    gold: GoldSpans,
    *,
    gold_codes: Mapping[str, Iterable[str]] | None = None,
    sources: Sequence[str] = (),
) -> EvidenceReport:
    """Score every source's evidence on the scored codes (module docstring).

    ``predictions``: ``{note id: [code row, ...]}`` (rows as in ``DocumentPrediction.to_dict()``:
    ``code``, ``decision``, ``evidence`` = ``[{"start", "end", "source", ...}]``); codes must be
    spelled as in ``gold`` (both normalised by :func:`medcoder.data.codes.canonical_code`).
    ``gold``: :data:`GoldSpans` of the same notes. ``gold_codes``: each note's gold codes, only to
    count predicted gold codes that have no spans (default: the codes in ``gold``). ``sources``:
    sources to report even where no span names them (e.g. every view of the coder); sources found
    in the evidence are added, and ``all`` always.
    """
    by_doc_codes: dict[str, set[str]] = defaultdict(set)
    for doc, code in gold:
        by_doc_codes[str(doc)].add(str(code))
    if gold_codes is not None:
        for doc, codes in gold_codes.items():
            by_doc_codes[str(doc)].update(str(c) for c in codes)
    found = {str(e.get("source")) for rows in predictions.values() for r in rows for e in (r.get("evidence") or [])
             if e.get("source")}
    names = list(dict.fromkeys([*sources, *sorted(found)]))
    scores = {name: SourceScores(name) for name in [*names, ALL_SOURCES]}
    n_predicted = n_predicted_gold = n_scored = 0
    for doc, rows in predictions.items():
        for row in rows:
            n_predicted += 1
            code = str(row["code"])
            if code not in by_doc_codes.get(str(doc), ()):
                continue
            n_predicted_gold += 1
            fragments = list(gold.get((str(doc), code), ()))
            if not fragments:
                continue
            n_scored += 1
            evidence = row.get("evidence") or []
            for name in names:
                scores[name].add(_spans(evidence, name), fragments)
            scores[ALL_SOURCES].add(_spans(evidence), fragments)
    return EvidenceReport(scores, auto_accept_overlap(predictions, gold), len(predictions), n_predicted,
                          n_predicted_gold, n_scored)
