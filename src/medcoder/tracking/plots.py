"""Figures logged with a run (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def per_code_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of each code (column); codes with no gold and no prediction get nan."""
    tp = (y_true * y_pred).sum(0)
    denom = y_true.sum(0) + y_pred.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def plot_f1_vs_frequency(f1: np.ndarray, frequency: np.ndarray, *, title: str) -> Figure:
    """Per-code F1 against training frequency (log x): shows how the long tail is served."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = ~np.isnan(f1)
    ax.scatter(frequency[ok], f1[ok], s=8, alpha=0.4)
    bins = np.unique(np.geomspace(1, max(2, frequency.max() + 1), 10).astype(int))
    idx = np.digitize(frequency, bins)
    xs, ys = [], []
    for b in np.unique(idx[ok]):
        sel = ok & (idx == b)
        xs.append(np.median(frequency[sel]))
        ys.append(np.mean(f1[sel]))
    ax.plot(xs, ys, color="C3", marker="o", label="mean F1 per frequency bin")
    ax.set_xscale("log")
    ax.set_xlabel("training notes with the code")
    ax.set_ylabel("F1 (test)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
