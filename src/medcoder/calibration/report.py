"""Calibration quality on a split: equal-mass ECE, Brier score and reliability-diagram data.

All numbers are over every (note, code) pair, flattened. In multi-label coding most pairs are
confident negatives, so these pooled metrics are dominated by the low-probability region; the
reliability diagram (equal-mass bins) shows where the remaining error lives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss

from medcoder.evaluation import metrics

__all__ = ["brier_score", "calibration_report", "reliability_curve"]


def _flat(probs: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probs and y_true differ in size: {p.size} vs {y.size}")
    return p, y


def reliability_curve(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15,
                      strategy: str = "quantile") -> dict[str, Any]:
    """JSON-ready reliability-diagram data for ``calibration.json``: the equal-mass bins of
    :func:`medcoder.evaluation.metrics.reliability_curve` (the one binning of the project, so the
    diagram and the logged ECE describe the same bins) as plain lists: ``mean_predicted``,
    ``fraction_positive``, ``count`` per bin and ``n_bins`` actually used (fewer when there are
    fewer pairs than bins).
    """
    p, y = _flat(probs, y_true)
    curve = metrics.reliability_curve(p[None, :], y[None, :], n_bins=n_bins, strategy=strategy)  # type: ignore[arg-type]
    return {
        "mean_predicted": [float(v) for v in curve.confidence],
        "fraction_positive": [float(v) for v in curve.accuracy],
        "count": [int(c) for c in curve.counts],
        "n_bins": len(curve.counts),
    }


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean squared error of probabilities over all pairs (:func:`sklearn.metrics.brier_score_loss`)."""
    p, y = _flat(probs, y_true)
    if p.size == 0:
        return float("nan")
    return float(brier_score_loss(y.astype(int), p, labels=[0, 1]))


def calibration_report(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15, *, strategy: str = "quantile",
                       mask: np.ndarray | None = None) -> dict[str, Any]:
    """``{"ece", "brier", "reliability", "n_pairs", "strategy"}`` for one split and one calibrator
    (JSON-ready). ``mask`` restricts it to some (note, code) pairs — e.g. the candidate codes where
    decisions are made: over all pairs, ~99% sit near 0 and the diagram says nothing about the
    0.2-1.0 range where codes are predicted and accepted."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(y_true, dtype=np.float64)
    if mask is not None:
        p, y = p[np.asarray(mask, dtype=bool)], y[np.asarray(mask, dtype=bool)]
    p, y = _flat(p, y)
    return {
        "ece": metrics.ece(p[None, :], y[None, :], n_bins=n_bins, strategy=strategy),  # type: ignore[arg-type]
        "brier": brier_score(p, y),
        "reliability": reliability_curve(p, y, n_bins, strategy),
        "n_pairs": int(p.size),
        "strategy": strategy,
    }
