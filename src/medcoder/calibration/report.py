"""Calibration quality on a split: equal-mass ECE, Brier score and reliability-diagram data.

All numbers are over every (note, code) pair, flattened. In multi-label coding most pairs are
confident negatives, so these pooled metrics are dominated by the low-probability region; the
reliability diagram (equal-mass bins) shows where the remaining error lives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss

from medcoder.evaluation.metrics import ece

__all__ = ["brier_score", "calibration_report", "ece_equal_mass", "reliability_curve"]


def _flat(probs: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probs and y_true differ in size: {p.size} vs {y.size}")
    return p, y


def reliability_curve(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """Equal-mass bins: sort pairs by probability and cut into ``n_bins`` groups of equal size.

    Why equal mass rather than equal width: with pooled multi-label scores almost everything sits
    in the first equal-width bin, leaving the other bins with a handful of pairs each; equal-mass
    bins give every bin the same statistical weight. Returns plain lists (JSON-ready):
    ``mean_predicted``, ``fraction_positive``, ``count`` per bin, and ``n_bins`` actually used
    (fewer when there are fewer pairs than bins).
    """
    p, y = _flat(probs, y_true)
    if p.size == 0:
        return {"mean_predicted": [], "fraction_positive": [], "count": [], "n_bins": 0}
    order = np.argsort(p, kind="mergesort")
    p, y = p[order], y[order]
    k = int(min(n_bins, p.size))
    starts = (np.arange(k) * p.size) // k
    counts = np.diff(np.r_[starts, p.size])
    mean_p = np.add.reduceat(p, starts) / counts
    frac_y = np.add.reduceat(y, starts) / counts
    return {
        "mean_predicted": [float(v) for v in mean_p],
        "fraction_positive": [float(v) for v in frac_y],
        "count": [int(c) for c in counts],
        "n_bins": k,
    }


def ece_equal_mass(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with equal-mass bins (nan for empty input).

    The one ECE of the project is :func:`medcoder.evaluation.metrics.ece`; this name is kept for
    calibration reports, which always use equal-mass bins.
    """
    p, y = _flat(probs, y_true)  # pairs are pooled: any shape, as one row
    return ece(p[None, :], y[None, :], n_bins=n_bins, strategy="quantile")


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean squared error of probabilities over all pairs (:func:`sklearn.metrics.brier_score_loss`)."""
    p, y = _flat(probs, y_true)
    if p.size == 0:
        return float("nan")
    return float(brier_score_loss(y.astype(int), p, labels=[0, 1]))


def calibration_report(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """``{"ece", "brier", "reliability"}`` for one split and one calibrator (JSON-ready)."""
    return {
        "ece": ece_equal_mass(probs, y_true, n_bins),
        "brier": brier_score(probs, y_true),
        "reliability": reliability_curve(probs, y_true, n_bins),
    }
