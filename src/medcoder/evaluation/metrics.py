"""Metrics for multi-label ICD coding, vectorised over (notes x codes).

These run after every epoch on the dev split (~250 notes x ~1,800 codes) and on larger label
spaces, so every metric is built from one stable ``argsort`` per row, cumulative sums and
``bincount``; nothing loops over labels or thresholds in Python. Cost is O(n·L log L).

Conventions shared by every function (documented once here so the numbers are comparable):

* ``probs``: float array (n_docs, n_labels); any monotone score works for the ranking metrics.
* ``y_true``: {0,1} array of the same shape, over the *label space* only.
* Decision rule: a code is predicted when ``probs >= threshold``.
* Ranking: codes sorted by descending score; ties keep column (label-space) order, because a
  stable sort is the only tie rule that is deterministic and cheap. Every ranking metric
  (P@k, R@k, MAP) uses the same order.
* Gold codes outside the label space can never be retrieved, but they are real codes a coder
  must assign. Following CodiEsp, MAP (and R@k when ``n_gold``/``gold_codes`` is given) counts
  them in the denominator, so a small label space cannot flatter the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

__all__ = [
    "METRIC_KEYS",
    "CODIESP_MAP_DEPTH",
    "ReliabilityCurve",
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "macro_f1",
    "precision_at_k",
    "recall_at_k",
    "mean_average_precision",
    "codiesp_map",
    "micro_auc",
    "macro_auc",
    "ece",
    "reliability_curve",
    "tune_global_threshold",
    "compute_all",
]

#: Keys returned by :func:`compute_all`, in logging order (the MLflow contract, minus the split
#: prefix and ``label_coverage``, which the caller adds).
METRIC_KEYS: tuple[str, ...] = (
    "map",
    "micro_f1",
    "macro_f1",
    "micro_precision",
    "micro_recall",
    "p_at_5",
    "p_at_8",
    "p_at_15",
    "r_at_10",
    "r_at_15",
    "micro_auc",
    "macro_auc",
    "ece",
)

#: The official CodiEsp script scores MAP with ``trectools.TrecEval.get_map(trec_eval=False)``,
#: whose default depth is 1000: gold codes ranked below position 1000 contribute nothing.
CODIESP_MAP_DEPTH = 1000

_P_AT = (5, 8, 15)
_R_AT = (10, 15)


# --------------------------------------------------------------------------------------------
# input handling and shared ranking
# --------------------------------------------------------------------------------------------


def _as_arrays(probs: npt.ArrayLike, y_true: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(float64 scores, bool labels)``, failing loudly on shape mismatches.

    A silent broadcast between (n, L) and (L,) would produce plausible but wrong numbers, so the
    shapes must match exactly.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (n_docs, n_labels), got shape {p.shape}")
    if y.shape != p.shape:
        raise ValueError(f"y_true shape {y.shape} does not match probs shape {p.shape}")
    return p, y.astype(bool, copy=False)


def _n_gold_array(n_gold: npt.ArrayLike | None, y: np.ndarray) -> np.ndarray:
    """Per-note gold count; defaults to the in-space count ``y.sum(1)``.

    A count smaller than the in-space hits would push recall/AP above 1, which can only mean the
    caller mixed up splits or label spaces, so it is rejected.
    """
    in_space = y.sum(axis=1)
    if n_gold is None:
        return in_space
    n = np.asarray(n_gold, dtype=np.int64).reshape(-1)
    if n.shape[0] != y.shape[0]:
        raise ValueError(f"n_gold has {n.shape[0]} entries for {y.shape[0]} notes")
    if np.any(n < in_space):
        bad = int(np.argmax(n < in_space))
        raise ValueError(
            f"n_gold[{bad}]={n[bad]} is smaller than the {in_space[bad]} gold codes of note {bad} "
            "inside the label space; n_gold must count all gold codes of the note"
        )
    return n


def _rank_order(p: np.ndarray, depth: int | None = None) -> np.ndarray:
    """Column indices per row by descending score, ties in column order, cut at ``depth``."""
    order = np.argsort(-p, axis=1, kind="stable")
    return order if depth is None else order[:, :depth]


def _ranked(rel: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Relevance of each ranked position (n_docs, depth)."""
    return np.take_along_axis(rel, order, axis=1)


def _safe_mean(values: np.ndarray) -> float:
    """Mean that returns NaN (not a warning) on an empty selection."""
    return float(values.mean()) if values.size else float("nan")


def _p_at_k_ranked(ranked: np.ndarray, k: int) -> float:
    return _safe_mean(ranked[:, :k].sum(axis=1) / k)


def _r_at_k_ranked(ranked: np.ndarray, k: int, n_gold: np.ndarray) -> float:
    keep = n_gold > 0
    return _safe_mean(ranked[keep, :k].sum(axis=1) / n_gold[keep])


def _ap_ranked(ranked: np.ndarray, n_gold: np.ndarray) -> float:
    """Mean over notes with gold of sum_{relevant ranks r} precision@r / n_gold."""
    hits = np.cumsum(ranked, axis=1)
    ranks = np.arange(1, ranked.shape[1] + 1)
    prec_sum = np.where(ranked, hits / ranks, 0.0).sum(axis=1)
    keep = n_gold > 0
    return _safe_mean(prec_sum[keep] / n_gold[keep])


def _gold_matrix(
    label_codes: Sequence[str], gold_codes: Sequence[Sequence[str]], n_docs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance over the label space plus the count of *all* distinct gold codes per note.

    Duplicates are dropped (as CodiEsp's script does: a code annotated twice in a note is one
    relevant document). This is the only Python loop in the module and it is O(total gold codes).
    """
    index = {code: j for j, code in enumerate(label_codes)}
    if len(index) != len(label_codes):
        raise ValueError("label_codes contains duplicates; each column needs a unique code")
    if len(gold_codes) != n_docs:
        raise ValueError(f"gold_codes has {len(gold_codes)} notes, probs has {n_docs}")
    rel = np.zeros((n_docs, len(label_codes)), dtype=bool)
    n_gold = np.zeros(n_docs, dtype=np.int64)
    for i, codes in enumerate(gold_codes):
        unique = set(codes)
        n_gold[i] = len(unique)
        cols = [index[c] for c in unique if c in index]
        rel[i, cols] = True
    return rel, n_gold


# --------------------------------------------------------------------------------------------
# thresholded metrics
# --------------------------------------------------------------------------------------------


def _counts(
    probs: npt.ArrayLike, y_true: npt.ArrayLike, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-label (tp, fp, fn, n_gold) at ``probs >= threshold``."""
    p, y = _as_arrays(probs, y_true)
    pred = p >= threshold
    tp = np.count_nonzero(pred & y, axis=0)
    fp = np.count_nonzero(pred & ~y, axis=0)
    fn = np.count_nonzero(~pred & y, axis=0)
    return tp, fp, fn, tp + fn


def _ratio(num: float, den: float) -> float:
    """num/den with 0/0 -> 0, the scikit-learn ``zero_division=0`` convention."""
    return float(num / den) if den else 0.0


def _thresholded(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n_gold: np.ndarray
) -> dict[str, float]:
    """Micro P/R/F1 and macro-F1 from per-label counts (one pass over the matrix for all four)."""
    tps, fps, fns = tp.sum(), fp.sum(), fn.sum()
    keep = n_gold > 0
    return {
        "micro_precision": _ratio(tps, tps + fps),
        "micro_recall": _ratio(tps, tps + fns),
        "micro_f1": _ratio(2 * tps, 2 * tps + fps + fns),
        # labels with gold always have 2tp + fp + fn >= 1, so no 0/0 here
        "macro_f1": _safe_mean(2 * tp[keep] / (2 * tp[keep] + fp[keep] + fn[keep])),
    }


def micro_precision(probs: npt.ArrayLike, y_true: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Share of predicted (note, code) pairs that are gold; 0 when nothing is predicted."""
    return _thresholded(*_counts(probs, y_true, threshold))["micro_precision"]


def micro_recall(probs: npt.ArrayLike, y_true: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Share of in-space gold (note, code) pairs that are predicted; 0 when there is no gold."""
    return _thresholded(*_counts(probs, y_true, threshold))["micro_recall"]


def micro_f1(probs: npt.ArrayLike, y_true: npt.ArrayLike, threshold: float = 0.5) -> float:
    """F1 of the pooled counts, ``2tp / (2tp + fp + fn)`` (identical to 2PR/(P+R))."""
    return _thresholded(*_counts(probs, y_true, threshold))["micro_f1"]


def macro_f1(probs: npt.ArrayLike, y_true: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Unweighted mean of per-label F1 over the labels that occur in ``y_true`` (Edin et al. 2023).

    Why only labels with gold: a 250-note dev/test split contains a fraction of the ~1,800 codes
    of the label space; averaging over all of them (Mullenbach et al.) would mostly measure how
    many codes the split happens to lack, and would move whenever the label space grows. False
    positives on codes absent from the split still lower micro-precision; they are just not
    their own macro term. Per-label F1 is ``2tp/(2tp+fp+fn)`` (P or R of 0/0 count as 0, as
    ``zero_division=0`` in scikit-learn). Returns NaN when no label has gold.
    """
    return _thresholded(*_counts(probs, y_true, threshold))["macro_f1"]


def f1_optimal_threshold(scores: npt.ArrayLike, y_true: npt.ArrayLike) -> tuple[float, float]:
    """Exact F1-optimal threshold for the rule ``score >= t`` over all given pairs: ``(t, best_f1)``.

    Every distinct score is a candidate; sorting once and taking cumulative true-positive counts
    gives F1 = 2·TP / (k + P) at all candidates in O(N log N) instead of re-scoring a grid. Returns
    the *score value itself* (not a midpoint), so ``scores >= t`` reproduces the optimum exactly.
    Among equal F1 maxima the highest threshold wins (fewer codes for coders to review). With no
    gold at all F1 is 0 everywhere; the neutral 0.5 is returned. Shared by the metric module and
    the calibration's decision thresholds (global and per code).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(y_true, dtype=np.float64).ravel()
    n_pos = float(y.sum())
    if s.size == 0 or n_pos == 0:
        return 0.5, 0.0
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    tp_cum = np.cumsum(y[order])
    # last position of each run of equal scores: everything up to it is predicted at that score
    last = np.append(np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1)
    f1 = 2.0 * tp_cum[last] / (last + 1 + n_pos)
    best = int(np.argmax(f1))  # first max == highest threshold among equal F1
    return float(sorted_scores[last[best]]), float(f1[best])


def tune_global_threshold(probs: npt.ArrayLike, y_true: npt.ArrayLike) -> float:
    """The single threshold that maximises micro-F1 on this (dev) split (see
    :func:`f1_optimal_threshold`)."""
    p, y = _as_arrays(probs, y_true)
    return f1_optimal_threshold(p, y)[0]


# --------------------------------------------------------------------------------------------
# ranking metrics
# --------------------------------------------------------------------------------------------


def precision_at_k(probs: npt.ArrayLike, y_true: npt.ArrayLike, k: int) -> float:
    """Mean over all notes of (gold codes among the top k) / k.

    Notes without in-space gold count as 0 (they still receive k suggestions). The denominator
    stays k even when the label space has fewer than k codes, as in trec_eval's P@k.
    """
    p, y = _as_arrays(probs, y_true)
    return _p_at_k_ranked(_ranked(y, _rank_order(p, k)), k)


def recall_at_k(
    probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    k: int,
    n_gold: npt.ArrayLike | None = None,
) -> float:
    """Mean over notes with gold of (gold codes among the top k) / (gold codes of the note).

    ``n_gold`` (per note) lets the denominator include gold codes outside the label space, which
    is the honest recall a coder sees; by default it is the in-space count ``y_true.sum(1)``.
    Notes with no gold are excluded (recall is undefined for them). NaN if no note has gold.
    """
    p, y = _as_arrays(probs, y_true)
    return _r_at_k_ranked(_ranked(y, _rank_order(p, k)), k, _n_gold_array(n_gold, y))


def mean_average_precision(
    probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    n_gold: npt.ArrayLike | None = None,
    depth: int | None = CODIESP_MAP_DEPTH,
) -> float:
    """CodiEsp-style MAP with the gold given as a label-space matrix.

    Per note: rank every label-space code (ties in column order), cut the ranking at ``depth``
    (1000, as the official script; ``None`` = no cut), and sum precision@r over the ranks r that
    hold a gold code, divided by ``n_gold`` (default ``y_true.sum(1)``; pass the count of all
    gold codes to penalise codes the model cannot predict). Mean over notes with ``n_gold > 0``.
    """
    p, y = _as_arrays(probs, y_true)
    return _ap_ranked(_ranked(y, _rank_order(p, depth)), _n_gold_array(n_gold, y))


def codiesp_map(
    probs: npt.ArrayLike,
    label_codes: Sequence[str],
    gold_codes: Sequence[Sequence[str]],
    depth: int | None = CODIESP_MAP_DEPTH,
) -> float:
    """CodiEsp's official MAP (task D/P), computed from scores instead of a ranked TSV.

    Mirrors ``codiespD_P_evaluation.py`` (TeMU-BSC), which calls
    ``trectools.TrecEval.get_map(trec_eval=False)``:

    * the run for a note is the ranking of all label-space codes (the official run is the
      submitted file order; here it is descending score, ties in column order);
    * the ranking is cut at ``depth`` = 1000 (trectools' default);
    * AP = sum of precision@r at each rank r holding a gold code / number of distinct gold codes
      of the note, *including* codes outside the label space (they never appear in the ranking);
    * MAP = mean AP over notes with at least one gold code (the official script averages over
      notes present in both run and gold; every note is in our run).

    Codes are compared as exact strings; normalise both sides the same way beforehand (the
    official script lowercases both). Returns NaN when no note has gold.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(label_codes):
        raise ValueError(f"probs shape {p.shape} does not match {len(label_codes)} label_codes")
    rel, n_gold = _gold_matrix(label_codes, gold_codes, p.shape[0])
    return _ap_ranked(_ranked(rel, _rank_order(p, depth)), n_gold)


def _rank_auc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Column-wise ROC AUC as the Mann-Whitney U statistic from average ranks.

    Equals ``roc_auc_score`` exactly (tied scores count one half) at the cost of one sort per
    column; scikit-learn's version builds a full ROC curve per label and is ~5x slower pooled and
    one Python call per label in the macro case. Columns must hold both classes.
    """
    ranks = rankdata(scores, axis=0)
    pos = truth.sum(axis=0).astype(np.float64)
    neg = truth.shape[0] - pos
    rank_sum = np.where(truth, ranks, 0.0).sum(axis=0)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def micro_auc(probs: npt.ArrayLike, y_true: npt.ArrayLike) -> float:
    """ROC AUC over all (note, code) pairs pooled; NaN when only one class is present.

    Same Mann-Whitney statistic as :func:`macro_auc`, with the tie groups found on one flat
    sort, which is several times faster than ``rankdata`` on ~500k pairs.
    """
    p, y = _as_arrays(probs, y_true)
    truth = y.ravel()
    if truth.all() or not truth.any():
        return float("nan")
    scores = p.ravel()
    order = np.argsort(scores)
    sorted_scores = scores[order]
    sorted_truth = truth[order].astype(np.int64)
    # tied scores share the average of their 1-based ranks (start+1 .. end)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    rank_sum = np.dot((starts + 1 + ends) / 2.0, np.add.reduceat(sorted_truth, starts))
    pos = float(sorted_truth.sum())
    neg = scores.size - pos
    return float((rank_sum - pos * (pos + 1) / 2) / (pos * neg))


def macro_auc(probs: npt.ArrayLike, y_true: npt.ArrayLike) -> float:
    """Mean per-label ROC AUC over labels with both classes in ``y_true``; NaN if there are none.

    Labels without a positive (or without a negative) in the split have no AUC; skipping them
    mirrors the macro-F1 rule of averaging only over codes the split can say something about.
    """
    p, y = _as_arrays(probs, y_true)
    n_pos = y.sum(axis=0)
    keep = (n_pos > 0) & (n_pos < y.shape[0])
    if not keep.any():
        return float("nan")
    return float(np.mean(_rank_auc(p[:, keep], y[:, keep])))


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


class ReliabilityCurve(NamedTuple):
    """Per non-empty bin: mean predicted probability, observed positive rate, pair count."""

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def _bin_sums(
    probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    n_bins: int,
    strategy: Literal["quantile", "uniform"],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum of probabilities, sum of labels) per bin over all (note, code) pairs.

    ``quantile``: sort all pairs by score (stable) and cut the order into ``min(n_bins, N)``
    groups of equal count (sizes differ by at most one). Cutting the sorted order rather than
    using quantile *edges* keeps the mass equal even when ~99% of pairs share near-zero scores,
    and the calibration report (``medcoder.calibration.report``) uses these same bins, so
    ``test_ece`` from training and the report agree. Tied scores may straddle bins.
    ``uniform``: bin i holds ``i/n_bins <= p < (i+1)/n_bins`` (the last bin also holds p = 1).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _as_arrays(probs, y_true)
    scores = p.ravel()
    truth = y.ravel().astype(np.float64)
    if strategy == "quantile":
        if scores.size == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        order = np.argsort(scores, kind="stable")
        k = min(n_bins, scores.size)
        starts = (np.arange(k) * scores.size) // k
        counts = np.diff(np.append(starts, scores.size)).astype(np.float64)
        return counts, np.add.reduceat(scores[order], starts), np.add.reduceat(truth[order], starts)
    if strategy != "uniform":
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    idx = np.digitize(scores, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=scores, minlength=n_bins)
    pos_sum = np.bincount(idx, weights=truth, minlength=n_bins)
    return counts, conf_sum, pos_sum


def ece(
    probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    n_bins: int = 15,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> float:
    """Expected calibration error over all (note, code) pairs: sum_b (n_b/N)·|acc_b - conf_b|.

    Pairs, not notes, because the routing policy auto-accepts individual codes on their
    probability. Equal-mass bins are the default: with ~99.5% of pairs near 0, uniform bins put
    almost everything in the first bin and hide miscalibration where decisions are made. With
    fewer pairs than bins each pair is its own bin (ECE becomes the mean |y - p|).
    Returns NaN on empty input.
    """
    counts, conf_sum, pos_sum = _bin_sums(probs, y_true, n_bins, strategy)
    total = counts.sum()
    if total == 0:
        return float("nan")
    # n_b·|acc_b - conf_b| = |pos_sum_b - conf_sum_b|, so no per-bin division is needed
    return float(np.abs(pos_sum - conf_sum).sum() / total)


def reliability_curve(
    probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    n_bins: int = 15,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> ReliabilityCurve:
    """Points of a reliability diagram, binned exactly as :func:`ece` (empty bins dropped)."""
    counts, conf_sum, pos_sum = _bin_sums(probs, y_true, n_bins, strategy)
    keep = counts > 0
    return ReliabilityCurve(
        confidence=conf_sum[keep] / counts[keep],
        accuracy=pos_sum[keep] / counts[keep],
        counts=counts[keep].astype(np.int64),
    )


# --------------------------------------------------------------------------------------------
# everything at once
# --------------------------------------------------------------------------------------------


def compute_all(
    probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    *,
    threshold: float,
    gold_codes: Sequence[Sequence[str]] | None = None,
    label_codes: Sequence[str] | None = None,
    n_gold: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """All contract metrics (:data:`METRIC_KEYS`) for one split, sharing one ranking.

    * ``map``: :func:`codiesp_map` when ``gold_codes`` and ``label_codes`` are given (gold codes
      outside the label space count); otherwise the same AP with gold = ``y_true`` and
      denominator ``n_gold`` (default ``y_true.sum(1)``).
    * ``r_at_*``: denominator ``n_gold`` if given, else the distinct gold codes from
      ``gold_codes`` if given, else ``y_true.sum(1)`` -- i.e. out-of-space gold counts whenever
      the caller tells us about it, consistently with ``map``.
    * thresholded metrics use ``probs >= threshold``; ``ece`` uses 15 equal-mass bins.

    The caller adds the ``dev_``/``test_`` prefix and ``label_coverage``.
    """
    p, y = _as_arrays(probs, y_true)
    if (gold_codes is None) != (label_codes is None):
        raise ValueError("gold_codes and label_codes must be given together")
    if gold_codes is not None and label_codes is not None:
        if len(label_codes) != p.shape[1]:
            raise ValueError(f"{len(label_codes)} label_codes for {p.shape[1]} probs columns")
        map_rel, map_n_gold = _gold_matrix(label_codes, gold_codes, p.shape[0])
        recall_n_gold = _n_gold_array(map_n_gold if n_gold is None else n_gold, y)
    else:
        map_rel = y
        map_n_gold = recall_n_gold = _n_gold_array(n_gold, y)

    order = _rank_order(p, max(CODIESP_MAP_DEPTH, *_P_AT, *_R_AT))
    ranked_y = _ranked(y, order[:, : max(*_P_AT, *_R_AT)])
    result: dict[str, float] = {
        "map": _ap_ranked(_ranked(map_rel, order[:, :CODIESP_MAP_DEPTH]), map_n_gold),
        **_thresholded(*_counts(p, y, threshold)),
    }
    for k in _P_AT:
        result[f"p_at_{k}"] = _p_at_k_ranked(ranked_y, k)
    for k in _R_AT:
        result[f"r_at_{k}"] = _r_at_k_ranked(ranked_y, k, recall_n_gold)
    result["micro_auc"] = micro_auc(p, y)
    result["macro_auc"] = macro_auc(p, y)
    result["ece"] = ece(p, y)
    return {key: float(result[key]) for key in METRIC_KEYS}
