"""Precision–coverage curve with the chosen τ_accept marked (matplotlib, headless Agg)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_precision_coverage"]


def plot_precision_coverage(
    curve: dict[str, Any],
    tau: float | None,
    target: float,
    *,
    title: str = "Auto-accept precision vs coverage (test split)",
) -> Figure:
    """Plot a :func:`medcoder.routing.evaluation.precision_coverage_curve` result.

    The target precision is a dashed line; the operating point at ``tau`` (the lowest curve point
    with τ' ≥ tau) is marked. With ``tau=None`` the plot says that nothing is auto-accepted
    instead of marking a point — the infeasible case must be visible, not hidden.
    """
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    cov = np.asarray(curve["coverage"], dtype=float)
    prec = np.asarray(curve["precision"], dtype=float)
    taus = np.asarray(curve["tau"], dtype=float)
    ax.plot(cov, prec, label="precision of auto-accepted codes")
    ax.axhline(target, linestyle="--", color="grey", label=f"target {target:.2f}")
    if tau is not None and taus.size:
        idx = np.flatnonzero(taus >= tau)
        if idx.size:
            i = idx[-1]
            ax.plot([cov[i]], [prec[i]], "o", color="C3", label=f"τ = {tau:.3f}")
            ax.annotate(
                f"coverage {cov[i]:.2f}",
                (cov[i], prec[i]),
                textcoords="offset points",
                xytext=(8, -14),
                fontsize="small",
            )
    elif tau is None:
        ax.text(
            0.5,
            0.55,
            "no τ certified: nothing auto-accepted",
            transform=ax.transAxes,
            ha="center",
            color="C3",
            bbox={"facecolor": "white", "edgecolor": "C3", "alpha": 0.9},
        )
    ax.set_xlabel("coverage (share of predicted codes auto-accepted)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    # Legend below the axes: inside, it covered the "nothing auto-accepted" label.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
