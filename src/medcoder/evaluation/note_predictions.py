"""Per-note predictions of a run on one split, stored compactly for later paired comparisons.

Why a file of its own: MLflow keeps one number per metric, but comparing two systems honestly
(bootstrap CIs over notes, a paired test on the *same* notes) needs each note's contribution to
every metric. Re-scoring old models for that is slow and needs their data and code; a small file
written at training time makes a comparison of any runs a matter of seconds.

What one note keeps (numbers and codes only, **never note text**):

* ``id``; ``codes``/``probs``: the top ``top_k`` codes (default 50) by probability, best first;
* ``gold``: the note's distinct gold codes (all of them, also codes outside the label space);
* ``gold_rank``: the 1-based rank of each gold code in the run's ranking of the *whole* label
  space (ties in label-space order, as in :mod:`medcoder.evaluation.metrics`), ``None`` for a gold
  code outside the label space; ``gold_probs`` likewise;
* ``n_predicted``: how many codes have ``prob >= threshold`` (the run's decision threshold).

From these, MAP (CodiEsp's definition, cut at depth 1000, all gold codes counted), P@k/R@k for
any k, and micro precision/recall/F1 at the threshold are *exact*: the predicted set of a note is
its first ``n_predicted`` ranks (every code at or above the threshold outranks every code below
it), so a gold code is a true positive iff ``gold_rank <= n_predicted``. The unit tests check that
these equal :func:`medcoder.evaluation.metrics.compute_all`. The top-k list is for reading (which
codes did the system propose) and for analyses that need scores.

Format: gzip-compressed JSON (``note_predictions_<split>.json.gz``, schema
``medcoder.note_predictions/1``), written atomically and byte-for-byte reproducibly (gzip mtime 0).

Runs trained before this file existed still have ``codiesp_run_<split>.trec`` (the top 1000 codes
with scores); :func:`from_trec` rebuilds the same record from it plus the gold codes.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medcoder.atomic import atomic_write
from medcoder.errors import DataError
from medcoder.evaluation.metrics import CODIESP_MAP_DEPTH

__all__ = [
    "DEFAULT_TOP_K",
    "SCHEMA",
    "NotePrediction",
    "NotePredictions",
    "build_note_predictions",
    "from_trec",
    "note_predictions_filename",
    "read_note_predictions",
    "write_note_predictions",
]

SCHEMA = "medcoder.note_predictions/1"
DEFAULT_TOP_K = 50


def note_predictions_filename(split: str = "test", view: str | None = None) -> str:
    """The artifact name for ``split`` (one name, so writer and reader cannot drift apart); a fused
    run also stores each view alone (``view``), so one run compares its views on the same notes."""
    return f"note_predictions_{split}{'_' + view if view else ''}.json.gz"


@dataclass(frozen=True)
class NotePrediction:
    """One note: its top codes, its gold codes and where the run ranked them."""

    id: str
    codes: list[str]
    probs: list[float]
    gold: list[str]
    gold_rank: list[int | None]
    gold_probs: list[float | None]
    n_predicted: int


@dataclass(frozen=True)
class NotePredictions:
    """A run's per-note predictions on one split (see the module docstring for the fields)."""

    split: str
    threshold: float
    top_k: int
    n_labels: int
    notes: list[NotePrediction]
    map_depth: int = CODIESP_MAP_DEPTH
    source: str = "note_predictions"  # or "trec" (rebuilt by :func:`from_trec`)

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.notes]

    def by_id(self) -> dict[str, NotePrediction]:
        return {n.id: n for n in self.notes}

    def reordered(self, ids: Sequence[str]) -> NotePredictions:
        """The same predictions in the order of ``ids`` (which must be exactly this run's notes)."""
        index = self.by_id()
        return NotePredictions(self.split, self.threshold, self.top_k, self.n_labels, [index[i] for i in ids],
                               self.map_depth, self.source)


def _short(x: float) -> float:
    """Seven significant digits: enough to read and re-rank, a third of the bytes of ``repr``."""
    return float(f"{x:.7g}")


def build_note_predictions(
    ids: Sequence[str],
    probs: npt.ArrayLike,
    label_codes: Sequence[str],
    gold_codes: Sequence[Iterable[str]],
    *,
    threshold: float,
    split: str = "test",
    top_k: int = DEFAULT_TOP_K,
) -> NotePredictions:
    """Summarise a (notes x label space) probability matrix into per-note records.

    ``probs`` are the probabilities the run's metrics were computed from (the decision rule is
    ``probs >= threshold``, the ranking a stable descending sort, as in the metrics module).
    """
    p = np.asarray(probs, dtype=np.float64)
    n, n_labels = p.shape if p.ndim == 2 else (-1, -1)
    if p.ndim != 2 or n != len(ids) or n_labels != len(label_codes):
        raise ValueError(f"probs {p.shape} do not match {len(ids)} notes x {len(label_codes)} codes")
    if len(gold_codes) != n:
        raise ValueError(f"gold_codes has {len(gold_codes)} notes, probs has {n}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    order = np.argsort(-p, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, n_labels + 1), order.shape), axis=1)
    n_predicted = np.count_nonzero(p >= threshold, axis=1)
    index = {c: j for j, c in enumerate(label_codes)}
    k = min(top_k, n_labels)
    notes = []
    for i, doc in enumerate(ids):
        gold = sorted(set(gold_codes[i]))
        cols = [index.get(c) for c in gold]
        notes.append(NotePrediction(
            id=str(doc),
            codes=[label_codes[j] for j in order[i, :k]],
            probs=[_short(v) for v in p[i, order[i, :k]]],
            gold=gold,
            gold_rank=[None if j is None else int(ranks[i, j]) for j in cols],
            gold_probs=[None if j is None else _short(p[i, j]) for j in cols],
            n_predicted=int(n_predicted[i]),
        ))
    return NotePredictions(split, float(threshold), int(top_k), int(n_labels), notes)


def _to_json(preds: NotePredictions) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "split": preds.split,
        "threshold": preds.threshold,
        "top_k": preds.top_k,
        "n_labels": preds.n_labels,
        "map_depth": preds.map_depth,
        "notes": [
            {"id": n.id, "codes": n.codes, "probs": n.probs, "gold": n.gold, "gold_rank": n.gold_rank,
             "gold_probs": n.gold_probs, "n_predicted": n.n_predicted}
            for n in preds.notes
        ],
    }


def write_note_predictions(path: str | Path, preds: NotePredictions) -> Path:
    """Write ``preds`` as gzip JSON, atomically (a killed run leaves no half file); returns the path."""
    raw = json.dumps(_to_json(preds), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob = gzip.compress(raw, mtime=0)  # mtime 0: same predictions, same bytes
    out = Path(path)
    atomic_write(out, lambda fh: fh.write(blob))
    return out


def read_note_predictions(path: str | Path) -> NotePredictions:
    """Read a file of :func:`write_note_predictions`; a problem is a ``DataError`` naming the file."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable note-predictions file ({exc})",
                        hint="it is written by scripts/train.py; re-download or re-train the run") from exc
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise DataError(f"{path}: schema {found!r} is not {SCHEMA!r}", hint="upgrade medcoder to read it")
    try:
        notes = [
            NotePrediction(str(r["id"]), list(r["codes"]), [float(v) for v in r["probs"]], list(r["gold"]),
                           [None if v is None else int(v) for v in r["gold_rank"]],
                           [None if v is None else float(v) for v in r["gold_probs"]], int(r["n_predicted"]))
            for r in data["notes"]
        ]
        preds = NotePredictions(str(data["split"]), float(data["threshold"]), int(data["top_k"]),
                                int(data["n_labels"]), notes, int(data.get("map_depth", CODIESP_MAP_DEPTH)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed note-predictions record ({exc!r})", hint="re-train the run") from exc
    for n in notes:
        if len(n.gold_rank) != len(n.gold) or len(n.gold_probs) != len(n.gold):
            raise DataError(f"{path}: note {n.id!r} has {len(n.gold)} gold codes but "
                            f"{len(n.gold_rank)} ranks", hint="re-train the run")
    if len(set(preds.ids)) != len(notes):
        raise DataError(f"{path}: duplicate note ids", hint="re-train the run")
    return preds


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def from_trec(
    path: str | Path,
    gold_by_id: Mapping[str, Iterable[str]],
    label_codes: Sequence[str],
    *,
    threshold: float,
    split: str = "test",
    top_k: int = DEFAULT_TOP_K,
) -> NotePredictions:
    """Rebuild per-note predictions from a run's ``codiesp_run_<split>.trec`` (older runs).

    The TREC file holds each note's top 1000 codes with the run's *logits* (made strictly
    decreasing by steps of ~1e-9, see :mod:`medcoder.evaluation.codiesp_run`), so probabilities
    are their sigmoid and the ranking is the file's. Exact for MAP (same depth), P@k and R@k; micro
    counts are exact unless more than 1000 codes of a note pass the threshold or a score lies
    within ~1e-9 of it. A gold code of the label space ranked below the file's depth gets the rank
    ``depth + 1`` (a lower bound; no metric here looks further). Only notes in the file are kept;
    each must have gold codes in ``gold_by_id``.
    """
    path = Path(path)
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) < 5:
                    raise DataError(f"{path}:{line_no}: expected 'query Q0 doc rank score tag', got {line.strip()!r}")
                ranked.setdefault(parts[0], []).append((int(parts[3]), parts[2], float(parts[4])))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the TREC run ({exc})") from exc
    except ValueError as exc:
        raise DataError(f"{path}: malformed TREC line ({exc})") from exc
    in_space = set(label_codes)
    missing = [doc for doc in ranked if doc not in gold_by_id]
    if missing:
        raise DataError(f"{path}: {len(missing)} notes of the run have no gold codes (e.g. {missing[0]!r})",
                        hint="the corpus in the run's config.yaml must be the one the run was evaluated on")
    depth = max((len(rows) for rows in ranked.values()), default=0)
    notes = []
    for doc, rows in ranked.items():
        rows.sort()
        codes = [c for _, c, _ in rows]
        probs = [_sigmoid(s) for _, _, s in rows]
        position = {c: r for r, c in enumerate(codes, start=1)}
        gold = sorted(set(gold_by_id[doc]))
        gold_rank = [position.get(c, depth + 1) if c in in_space else None for c in gold]
        gold_probs = [_short(probs[position[c] - 1]) if c in position else None for c in gold]
        notes.append(NotePrediction(doc, codes[:top_k], [_short(v) for v in probs[:top_k]], gold, gold_rank,
                                    gold_probs, int(sum(v >= threshold for v in probs))))
    return NotePredictions(split, float(threshold), int(top_k), len(label_codes), notes, source="trec")
