"""CodiEsp-X (the explainability sub-task): submission files and the official F1.

**Format** (TeMU-BSC ``codiesp-evaluation-script``, ``codiespX_evaluation.py``, read for this
module; none of its code is copied): a headerless, tab-separated file with four columns::

    articleID <TAB> "start end" <TAB> DIAGNOSTICO|PROCEDIMIENTO <TAB> code

one line per (code, reference position); a code may appear on several lines (one per mention).
Codes are written as CodiEsp spells them (lower case, ``n44.8``, ``bw03zzz``). Positions are one
contiguous ``start end`` pair (the script splits on the first space and casts both halves to
int, so a discontinuous ``s e;s e`` cannot be submitted). The file holds offsets and codes only,
never note text.

**Metric** (micro-averaged over the whole file, as that script computes it):

* predicted positives = distinct (article, code) pairs in the submission; gold positives =
  distinct (article, code) pairs in the gold ``{split}X.tsv`` (D *and* P rows);
* a gold (article, code) is a true positive when *some* submitted line of that article and code
  has a position that contains *some* gold reference of that code with at most ``tolerance``
  (10) characters to spare on each side: ``0 <= gold_start - pred_start <= 10`` and
  ``0 <= pred_end - gold_end <= 10``. A discontinuous gold reference spans its first start to its
  last end. One matched reference is enough for a code with several;
* ``P = TP / predicted``, ``R = TP / gold``, ``F1 = 2PR / (P + R)`` (0 when ``P + R = 0``).
  The label column is not compared (the code decides).

Differences, said here so nobody is surprised: the official script first drops predicted codes
that are not in the CodiEsp code lists (``codiesp-D_codes.tsv``/``-P_codes.tsv``; not shipped with
the corpus copy here); a medcoder coder predicts only codes of its label space, which are CodiEsp
training codes, so that filter is a no-op for its submissions. With no predicted positives the
script divides by zero; here precision is ``nan`` (and F1 0 when recall is 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medcoder.atomic import atomic_write_text
from medcoder.data.codiesp import _read_utf8
from medcoder.errors import DataError

__all__ = ["LABELS", "OFFICIAL_TOLERANCE", "XRow", "XScores", "codiesp_x_scores", "read_x_gold",
           "read_x_submission", "submission_rows", "write_codiesp_x"]

#: medcoder code type -> CodiEsp-X label.
LABELS = {"D": "DIAGNOSTICO", "P": "PROCEDIMIENTO"}
#: Characters a predicted position may extend beyond the gold reference on each side.
OFFICIAL_TOLERANCE = 10


@dataclass(frozen=True)
class XRow:
    """One CodiEsp-X line: a code of an article at ``[start, end)``, labelled D or P."""

    doc: str
    start: int
    end: int
    label: str
    code: str

    def line(self) -> str:
        return f"{self.doc}\t{self.start} {self.end}\t{self.label}\t{self.code}"


@dataclass
class XScores:
    """The official CodiEsp-X counts and micro P/R/F1."""

    tp: int
    n_predicted: int
    n_gold: int
    tolerance: int = OFFICIAL_TOLERANCE

    @property
    def precision(self) -> float:
        return self.tp / self.n_predicted if self.n_predicted else math.nan

    @property
    def recall(self) -> float:
        return self.tp / self.n_gold if self.n_gold else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(r):
            return math.nan
        if math.isnan(p) or p + r == 0:
            return 0.0
        return 2 * p * r / (p + r)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _fail(path: Path, line_no: int, what: str) -> DataError:
    return DataError(f"{path}:{line_no}: {what}", hint="CodiEsp-X lines are tab-separated, positions 'start end'")


def read_x_gold(path: str | Path) -> list[XRow]:
    """The gold ``{split}X.tsv`` as the official script reads it: codes as written, a
    discontinuous reference from its first start to its last end."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CodiEsp-X gold file not found", hint="check the CodiEsp root and split")
    rows = []
    for line_no, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 5:
            raise _fail(path, line_no, f"expected 5 fields, got {len(fields)}")
        tokens = [t for t in re.split(r"[ ;]", fields[4].strip().strip('"')) if t]
        try:
            start, end = int(tokens[0]), int(tokens[-1])
        except (IndexError, ValueError) as exc:
            raise _fail(path, line_no, f"bad position {fields[4]!r}") from exc
        rows.append(XRow(fields[0].strip(), start, end, fields[1].strip(), fields[2].strip()))
    return rows


def read_x_submission(path: str | Path) -> list[XRow]:
    """A submission file (four columns, ``start end`` positions) back into rows."""
    path = Path(path)
    rows = []
    for line_no, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 4:
            raise _fail(path, line_no, f"expected 4 fields, got {len(fields)}")
        try:
            start, end = (int(x) for x in fields[1].split(" ", 1))
        except ValueError as exc:
            raise _fail(path, line_no, f"bad position {fields[1]!r}") from exc
        rows.append(XRow(fields[0], start, end, fields[2], fields[3]))
    return rows


def submission_rows(predictions: Mapping[str, Sequence[Mapping[str, Any]]], code_type: str,
                    *, sources: Iterable[str] | None = None) -> list[XRow]:
    """One line per evidence span of every predicted code (``{note id: [code row, ...]}``, rows
    with ``code`` and ``evidence``), from the given ``sources`` (None: every source). Codes
    without evidence have no position and are left out: the format cannot express them.
    Identical lines are written once; note order, then code order, then span order is kept."""
    if code_type not in LABELS:
        raise ValueError(f"code_type={code_type!r}: expected one of {sorted(LABELS)}")
    keep = None if sources is None else set(sources)
    out: dict[XRow, None] = {}
    for doc, rows in predictions.items():
        for row in rows:
            for e in row.get("evidence") or []:
                if keep is None or e.get("source") in keep:
                    out[XRow(str(doc), int(e["start"]), int(e["end"]), LABELS[code_type],
                             str(row["code"]).lower())] = None
    return list(out)


def write_codiesp_x(path: str | Path, rows: Iterable[XRow]) -> Path:
    """Write a submission atomically (:mod:`medcoder.atomic`); returns the path."""
    out = Path(path)
    lines = [r.line() for r in rows]
    atomic_write_text(out, "\n".join(lines) + ("\n" if lines else ""))
    return out


def codiesp_x_scores(gold: Iterable[XRow], predicted: Iterable[XRow], *,
                     tolerance: int = OFFICIAL_TOLERANCE) -> XScores:
    """The official CodiEsp-X micro P/R/F1 (module docstring)."""
    gold_refs: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for g in gold:
        gold_refs.setdefault((g.doc, g.code), []).append((g.start, g.end))
    pred_pos: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for p in predicted:
        pred_pos.setdefault((p.doc, p.code), []).append((p.start, p.end))
    tp = 0
    for key, refs in gold_refs.items():
        positions = pred_pos.get(key, ())
        if any(0 <= gs - ps <= tolerance and 0 <= pe - ge <= tolerance
               for gs, ge in refs for ps, pe in positions):
            tp += 1
    return XScores(tp, len(pred_pos), len(gold_refs), tolerance)
