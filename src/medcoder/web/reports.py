"""The agreement report of one bundle: what the audit stream and the reviewers' decisions say.

Why here, shared by the ``/reports`` page and ``scripts/review.py action=report``: both must show
the same numbers, and the workflow layer may import the web layer but not the other way round. It
reads the store only through its public methods (``audit_state``, ``audit_stream``,
``routed_outcomes``, ``double_review_pairs``), computes with the pure functions of
:mod:`medcoder.evaluation.agreement` and :mod:`medcoder.review.monitor`, and draws the plot with
matplotlib's Agg backend (server-side PNG, no display, no JavaScript).

Nothing here holds note text: codes, counts, reasons, usernames and times only.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcoder.evaluation.agreement import (
    FREQUENCY_BINS,
    AcceptanceRate,
    KappaResult,
    acceptance_rates,
    frequency_bin,
    kappa_with_ci,
)

__all__ = ["MAX_PLOT_POINTS", "BundleReport", "ChangedCode", "ReportSettings", "build_report", "metric_key",
           "precision_plot"]

#: The confidence sequence is drawn at most at this many audited counts (each point is a bisection
#: over confseq's boundary): enough for a smooth band, cheap for a stream of thousands.
MAX_PLOT_POINTS = 200


@dataclass(frozen=True)
class ReportSettings:
    """How the report is computed (``report`` and ``audit`` groups of ``configs/review.yaml``)."""

    n_opt: int = 200
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95
    top_codes: int = 10


@dataclass(frozen=True)
class ChangedCode:
    """A routed code reviewers rejected or replaced; ``replaced_by``: the replacements, most
    frequent first, with counts."""

    code: str
    n: int
    n_rejected: int
    n_replaced: int
    replaced_by: list[tuple[str, int]]


@dataclass
class BundleReport:
    """Everything the report page shows for one bundle, and the metrics logged to MLflow."""

    bundle_id: str
    state: Any  # medcoder.review.AuditState
    outcomes: list[bool]
    first_at: Any
    last_at: Any
    by_reason: dict[str, AcceptanceRate]
    by_frequency: dict[str, AcceptanceRate]
    changed: list[ChangedCode]
    kappa: KappaResult | None
    n_double: int
    n_routed_decided: int
    #: ``(code, wrong, audited)`` of the auto-accepted codes auditors scored wrong, most wrong first.
    audit_wrong: list[tuple[str, int, int]] = field(default_factory=list)
    plot_png: bytes | None = None

    def metrics(self) -> dict[str, float]:
        """MLflow metrics (finite numbers only; a rate with nothing decided is left out)."""
        r = self.state.report
        out: dict[str, float] = {
            "audit_n": float(r.n_audited),
            "audit_correct": float(r.n_correct),
            "audit_cs_low": float(r.cs_low),
            "audit_cs_high": float(r.cs_high),
            "audit_cp_low": float(r.cp_low),
            "audit_cp_high": float(r.cp_high),
            "audit_target": float(r.target),
            "audit_delta": float(r.delta),
            "audit_suspended": float(bool(self.state.suspended)),
            "audit_n_accepted_since": float(self.state.n_accepted_since),
            "review_n_decided": float(self.n_routed_decided),
        }
        if r.precision is not None:
            out["audit_precision"] = float(r.precision)
        if r.alarm_at is not None:
            out["audit_alarm_at"] = float(r.alarm_at)
        for name, rate in self.by_reason.items():
            if rate.rate is not None:
                out[metric_key("review_accept_rate", name)] = float(rate.rate)
        for name, rate in self.by_frequency.items():
            if rate.rate is not None:
                out[metric_key("review_accept_rate_freq", name)] = float(rate.rate)
        if self.kappa is not None:
            out["review_double_n"] = float(self.kappa.n_items)
            if np.isfinite(self.kappa.kappa):
                out["review_kappa"] = float(self.kappa.kappa)
            if self.kappa.low is not None and self.kappa.high is not None:
                out["review_kappa_low"] = float(self.kappa.low)
                out["review_kappa_high"] = float(self.kappa.high)
        return out


def metric_key(prefix: str, group: str) -> str:
    """``prefix_group`` with the group made a safe metric name (``1-9`` -> ``1_9``, ``50+`` ->
    ``50plus``)."""
    name = group.replace("+", "plus")
    name = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "none"
    return f"{prefix}_{name}"


def _changed(outcomes: Sequence[Any], top: int) -> list[ChangedCode]:
    per: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        if o.action not in ("reject", "replace"):
            continue
        row = per.setdefault(o.code, {"reject": 0, "replace": 0, "by": Counter()})
        row[o.action] += 1
        if o.action == "replace" and o.replaced_by:
            row["by"][o.replaced_by] += 1
    rows = [ChangedCode(code, r["reject"] + r["replace"], r["reject"], r["replace"],
                        sorted(r["by"].items(), key=lambda kv: (-kv[1], kv[0])))
            for code, r in per.items()]
    rows.sort(key=lambda c: (-c.n, c.code))
    return rows[:top]


def _pair_label(action: str, replaced_by: str | None) -> str:
    """A reviewer's final decision as one label: two replacements agree only on the same code."""
    return f"replace:{replaced_by}" if action == "replace" else action


def build_report(store: Any, bundle_id: str, settings: ReportSettings, *, evidence_rule: Any,
                 plot: bool = True) -> BundleReport:
    """The report of ``bundle_id`` from the store's events (recomputed on every call)."""
    state = store.audit_state(bundle_id, n_opt=settings.n_opt, evidence_rule=evidence_rule)
    stream = list(store.audit_stream(bundle_id, since_lift=True))
    outcomes = [bool(p.correct) for p in stream]
    routed = list(store.routed_outcomes(bundle_id))
    decided = [o for o in routed if o.action != "undecided"]
    by_reason = acceptance_rates(decided, lambda o: list(o.reasons) or ["(no reason)"])
    by_freq_raw = acceptance_rates(decided, lambda o: frequency_bin(o.frequency))
    order = [label for label, _, _ in FREQUENCY_BINS] + ["unknown"]
    by_frequency = {k: by_freq_raw[k] for k in order if k in by_freq_raw}
    pairs = [p for p in store.double_review_pairs(bundle_id)
             if p.first_action != "undecided" and p.second_action != "undecided"]
    kappa = None
    if pairs:
        kappa = kappa_with_ci([_pair_label(p.first_action, p.first_replaced_by) for p in pairs],
                              [_pair_label(p.second_action, p.second_replaced_by) for p in pairs],
                              groups=[p.note_id for p in pairs], n_boot=settings.n_boot, seed=settings.seed,
                              level=settings.level)
    audited: Counter[str] = Counter(p.code for p in stream)
    wrong: Counter[str] = Counter(p.code for p in stream if not p.correct)
    audit_wrong = sorted(((c, n, audited[c]) for c, n in wrong.items()), key=lambda r: (-r[1], r[0]))
    report = BundleReport(
        bundle_id=bundle_id, state=state, outcomes=outcomes, audit_wrong=audit_wrong[:settings.top_codes],
        first_at=stream[0].at if stream else None, last_at=stream[-1].at if stream else None,
        by_reason=by_reason, by_frequency=by_frequency, changed=_changed(decided, settings.top_codes),
        kappa=kappa, n_double=len(pairs), n_routed_decided=len(decided),
    )
    if plot:
        report.plot_png = precision_plot(outcomes, target=state.report.target, delta=state.report.delta,
                                         n_opt=state.report.n_opt, alarm_at=state.report.alarm_at, title=bundle_id)
    return report


def _sequence_at(outcomes: Sequence[bool], *, target: float, delta: float,
                 n_opt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The confidence sequence at up to :data:`MAX_PLOT_POINTS` audited counts (1-based).

    Each point is a bisection over confseq's boundary (about a millisecond), so a long stream is
    drawn at evenly spaced counts; the ends at count ``t`` depend on the first ``t`` codes only,
    which :func:`~medcoder.review.monitor.monitor` of that prefix gives."""
    from medcoder.review.monitor import confidence_sequence, monitor

    n = len(outcomes)
    if n <= MAX_PLOT_POINTS:
        low, high = confidence_sequence(outcomes, delta=delta, n_opt=n_opt)
        # the upper end as the monitor reports it: its running minimum (sticky once below target)
        return np.arange(1, n + 1), low, np.minimum.accumulate(high)
    steps = np.unique(np.linspace(1, n, MAX_PLOT_POINTS).round().astype(int))
    ends = [monitor(outcomes[:t], target=target, delta=delta, n_opt=n_opt) for t in steps]
    return steps, np.array([e.cs_low for e in ends]), np.array([e.cs_high for e in ends])


def precision_plot(outcomes: Sequence[bool], *, target: float, delta: float, n_opt: int,
                   alarm_at: int | None = None, title: str = "") -> bytes:
    """The audited precision as a PNG: running precision after each audited code, the confidence
    sequence's band, the certified target and (if it fired) the alarm."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    y = np.asarray(outcomes, dtype=float)
    if y.size:
        t = np.arange(1, y.size + 1)
        ax.step(t, np.cumsum(y) / t, where="post", color="#1f4e79", label="audited precision")
        steps, low, high = _sequence_at([bool(v) for v in outcomes], target=target, delta=delta, n_opt=n_opt)
        ax.fill_between(steps, low, high, step="post", color="#1f4e79", alpha=0.15,
                        label=f"confidence sequence (δ={delta:g} each side)")
        if alarm_at is not None:
            ax.axvline(alarm_at, color="#b00020", linestyle=":", label=f"alarm at audited code {alarm_at}")
        ax.set_xlim(1, max(2, y.size))
    else:
        ax.text(0.5, 0.5, "no audited codes yet", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(target, color="#b00020", linestyle="--", label=f"certified target {target:g}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("audited auto-accepted codes (since the last lift)")
    ax.set_ylabel("precision")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
