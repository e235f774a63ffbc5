"""Reliability diagram, before vs after calibration (matplotlib, headless Agg backend)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_reliability"]


def plot_reliability(
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    labels: tuple[str, str] = ("before (sigmoid of logits)", "after calibration"),
    title: str = "Reliability (equal-mass bins, test split)",
    show_counts: bool = False,
) -> Figure:
    """Plot two :func:`medcoder.calibration.report.reliability_curve` results on one diagram.

    Accepts either the curve dict itself or a :func:`calibration_report` dict (its
    ``reliability`` entry is used, and its ECE is shown in the legend). ``show_counts`` writes
    each bin's number of pairs beside its point (uniform bins hold very different counts). Uses a bare
    :class:`~matplotlib.figure.Figure` (no pyplot global state), so it is safe in scripts and
    tests; save with ``fig.savefig(path)``.
    """
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    for rep, label, marker in ((before, labels[0], "o"), (after, labels[1], "s")):
        curve = rep.get("reliability", rep)
        if "ece" in rep:
            label = f"{label} (ECE {rep['ece']:.4f})"
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], marker=marker, label=label)
        if show_counts:
            for x, yv, n in zip(curve["mean_predicted"], curve["fraction_positive"], curve["count"], strict=True):
                ax.annotate(str(n), (x, yv), textcoords="offset points", xytext=(4, -10), fontsize="x-small",
                            color=ax.lines[-1].get_color())
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of gold codes")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig
