"""CodiEsp submission files: a run's ranked codes per note, in the shared task's format.

Two files per split: ``<name>.tsv`` (CodiEsp's official ``articleID<TAB>code`` lines, best code
first, cut at ``depth``) and ``<name>.trec`` (the same ranking as a TREC run, ``query Q0 docid rank
score tag``). Why the second: the official evaluation (``codiespD_P_evaluation.py``) scores with
``trectools``, and trectools 0.0.50 re-sorts a run by *score*, so a run whose scores tie loses its
file order. Scores here are the model's own, strictly decreasing per note (ties, which would be
re-ordered by trectools, are broken by rank with steps far below any real score difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medcoder.atomic import atomic_write_text

__all__ = ["CODIESP_RUN_DEPTH", "write_codiesp_run"]

CODIESP_RUN_DEPTH = 1000  # trectools' default cut, as in the official MAP


def write_codiesp_run(path: str | Path, ids: Sequence[str], label_codes: Sequence[str], scores: np.ndarray,
                      *, depth: int = CODIESP_RUN_DEPTH, tag: str = "medcoder") -> tuple[Path, Path]:
    """Write ``path`` (``.tsv``) and its ``.trec`` twin; returns both paths."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(ids), len(label_codes)):
        raise ValueError(f"scores {s.shape} do not match {len(ids)} notes x {len(label_codes)} codes")
    tsv, trec = [], []
    k = min(depth, len(label_codes))
    for i, doc in enumerate(ids):
        order = np.argsort(-s[i], kind="stable")[:k]
        ranked = s[i, order]
        # strictly decreasing: subtract a rank-proportional step well below float resolution of MAP
        written = ranked - np.arange(k) * 1e-9 * max(1.0, float(np.abs(ranked).max()))
        for r, (j, score) in enumerate(zip(order, written, strict=True), start=1):
            tsv.append(f"{doc}\t{label_codes[j]}")
            trec.append(f"{doc} Q0 {label_codes[j]} {r} {score:.12g} {tag}")
    out = Path(path)
    atomic_write_text(out, "\n".join(tsv) + "\n")
    twin = out.with_suffix(".trec")
    atomic_write_text(twin, "\n".join(trec) + "\n")
    return out, twin
