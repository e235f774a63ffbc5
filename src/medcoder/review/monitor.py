"""Audited precision of auto-accepted codes, watched continuously: the point estimate, a
Clopper–Pearson interval, an anytime-valid confidence sequence, and the alarm rule.

Why a confidence sequence and not a fixed-sample test: the audit stream is looked at after every
decision, and an ops team acts on the first look that says "below target". Re-testing a fixed-n
interval at every look inflates false alarms without bound; a confidence sequence holds at every
``t`` at once (Ville's inequality), so "ever suspended while precision meets the target" has
probability at most δ (Howard, Ramdas, McAuliffe & Sekhon 2021, *Time-uniform, nonparametric,
nonasymptotic confidence sequences*, Ann. Statist.; Waudby-Smith & Ramdas 2020).

Why ``confseq``: it is the reference implementation of Howard et al.'s mixture boundaries by
their first author (MIT licence). We use its compiled ``confseq.boundaries.beta_binomial_log_mixture``
(the one-sided beta-binomial mixture supermartingale, their Proposition 7), which is exact for
Bernoulli observations; only ``confseq.boundaries`` is imported (its pure-Python modules still use
``np.float_`` and fail under NumPy 2). ``tests/unit/review/test_monitor.py`` checks it against an
independent computation (numerical integration of the mixture, and the exact crossing probability
of the boundary by dynamic programming).

The test. Each audited auto-accepted code is ``Y_i = 1`` (correct) or ``0`` (wrong). Under the
null "precision ≥ target", ``Z_i = target - Y_i`` has mean ≤ 0 and lies in
``[-(1 - target), target]``, so ``S_t = Σ Z_i = t·target - correct_t`` is sub-Bernoulli with range
``g = 1 - target``, ``h = target`` and variance process ``V_t = g·h·t``. The alarm fires at the first
``t`` where the one-sided mixture ``M_t(S_t, V_t) ≥ 1/δ``; the same test run for every candidate
precision ``p`` gives the sequence's upper bound ``u_t`` (the smallest ``p`` it rejects), so the
alarm is exactly "``u_t`` < target". The lower bound is the mirror image (``Y_i - p``).

What the guarantee assumes. The test is per audited *code*, and its validity (false alarms ≤ δ)
assumes each audited code's correctness is conditionally independent given the past (its mean,
given every verdict before it, is the pool's precision). Codes of one note are audited together
and are clustered: a hard note tends to have several wrong codes, so that assumption does not
hold exactly, and the δ bound is then not guaranteed. What it cost, measured: the seeded
clustered simulation of ``tests/unit/review/test_monitor.py`` (notes of 1–4 codes with a quality
of their own, pool precision exactly the target) alarmed in 0.08 of its streams at δ = 0.1,
against an exact 0.058 for independent codes; on the real CodiEsp bundle, note-resampled audit
streams with the pool's precision equal to the target alarmed in 0.058 of streams
(``benchmarks/review_loop.py false-alarms``). Both under δ, neither a proof.

Sticky reporting. A report's ``cs_high`` is the running minimum of the sequence's upper end since
the stream (re)started (the last lift): the intersection of a confidence sequence's past bounds
is still a confidence sequence (they all hold at once, with probability ≥ 1 - δ), and it makes
``cs_high < target`` exactly the alarm, which stays fired. ``cs_high_now`` is the upper end at the
last audited code alone, which can drift back above the target after a run of correct codes.

Pinned settings. ``n_opt`` shapes the boundary, and a different one could have drawn the same
stream without an alarm; the review store therefore pins it with the bundle's target and δ the
first time the guarantee is set (:meth:`medcoder.review.ReviewStore.set_bundle_guarantee`), and
:meth:`~medcoder.review.ReviewStore.audit_state` always uses the pinned value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from scipy.stats import beta as beta_dist

__all__ = [
    "DEFAULT_N_OPT",
    "EvidenceRule",
    "MonitorReport",
    "alarm_step",
    "clopper_pearson",
    "confidence_sequence",
    "evidence_warnings",
    "log_mixture",
    "monitor",
]

#: The number of audited codes at which the boundary is tightest (Howard et al.'s ``v_opt``, in
#: codes). 200 is what about a quarter of audits at 5 % of the main job's test notes give; the
#: bound is valid for every choice, only its shape moves.
DEFAULT_N_OPT = 200


def _boundaries():  # noqa: ANN202 - the compiled module has no stubs
    """``confseq.boundaries``, or one clear line on how to install it."""
    try:
        from confseq import boundaries
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the audit monitor needs confseq (pip install confseq==0.0.11; it compiles against Boost: "
            "apt-get install libboost-dev; scripts/setup.sh does both)") from exc
    return boundaries


def log_mixture(successes: np.ndarray | float, trials: np.ndarray | float, p: float, *, delta: float,
                n_opt: int = DEFAULT_N_OPT, upper: bool = True) -> np.ndarray:
    """Log of the one-sided beta-binomial mixture supermartingale testing "mean = ``p``".

    ``upper=True`` tests for a mean *below* ``p`` (it grows when successes fall short of ``t·p``):
    the alarm's direction. ``upper=False`` tests for a mean above ``p``.
    """
    s_ok = np.asarray(successes, dtype=float)
    t = np.asarray(trials, dtype=float)
    if upper:
        s, g, h = t * p - s_ok, 1.0 - p, p
    else:
        s, g, h = s_ok - t * p, p, 1.0 - p
    v = g * h * t
    v_opt = g * h * n_opt
    b = _boundaries()
    s_arr, v_arr = np.atleast_1d(s), np.atleast_1d(v)
    out = np.asarray(b.beta_binomial_log_mixture(s_arr, v_arr, v_opt, g, h, delta, True), dtype=float)
    out = np.where(v_arr > 0, out, 0.0)  # nothing observed: the supermartingale starts at 1
    return out.reshape(np.shape(s))


def _bound(successes: int, trials: int, *, delta: float, n_opt: int, upper: bool, tol: float = 1e-6) -> float:
    """One end of the confidence sequence at one time: the smallest ``p`` the upper test rejects
    (``upper``), or the largest ``p`` the lower test rejects, by bisection (the statistic is
    monotone in ``p`` for fixed counts)."""
    if trials == 0:
        return 1.0 if upper else 0.0
    threshold = math.log(1.0 / delta)

    def rejects(p: float) -> bool:
        return float(log_mixture(successes, trials, p, delta=delta, n_opt=n_opt, upper=upper)) >= threshold

    lo, hi = (successes / trials, 1.0) if upper else (0.0, successes / trials)
    if upper and not rejects(1.0 - 1e-12):
        return 1.0
    if not upper and not rejects(1e-12):
        return 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if rejects(mid) == upper:
            hi = mid
        else:
            lo = mid
    return hi if upper else lo


def _running_upper(outcomes: np.ndarray, *, delta: float, n_opt: int, tol: float = 1e-6) -> float:
    """``min`` over ``t`` of the sequence's upper end ``u_t``, in one bisection over ``p``.

    Each ``u_t`` is the smallest ``p`` the upper test at ``t`` rejects, and every test's
    rejection set is ``[u_t, 1]`` (monotone in ``p``), so ``min_t u_t`` is the smallest ``p`` that
    *some* ``t`` rejects: each step of the bisection evaluates the whole stream in one vectorised
    call, as :func:`alarm_step` does, instead of one bisection per ``t``.

    Only the ``t`` just after a wrong code are evaluated: a correct code lowers ``S_t`` (by
    ``1 - p``) and raises ``V_t``, and the mixture is increasing in ``S`` and decreasing in ``V``
    (an integral of ``exp(λS - ψ(λ)V)`` over ``λ ≥ 0`` with ``ψ ≥ 0``), so it falls; the maximum
    over ``t`` is at a wrong code (or nowhere: before any wrong code ``S_t < 0`` and ``M_t < 1``)."""
    wrong = np.flatnonzero(~outcomes.astype(bool))
    if wrong.size == 0:
        return 1.0
    threshold = math.log(1.0 / delta)
    t = wrong + 1
    ok = np.cumsum(outcomes)[wrong]

    def rejects(p: float) -> bool:
        return bool(np.any(log_mixture(ok, t, p, delta=delta, n_opt=n_opt, upper=True) >= threshold))

    if not rejects(1.0 - 1e-12):
        return 1.0
    # at p = the smallest running estimate, every S_t = t p - ok_t <= 0: no test rejects
    lo, hi = float(np.min(ok / t)), 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if rejects(mid):
            hi = mid
        else:
            lo = mid
    return hi


def confidence_sequence(outcomes: Sequence[bool] | np.ndarray, *, delta: float,
                        n_opt: int = DEFAULT_N_OPT) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` after each audited code: each end a one-sided level-δ sequence, so the
    upper end alone is what the alarm reads (together they cover at level 1 - 2δ)."""
    y = np.asarray(outcomes, dtype=bool)
    ok = np.cumsum(y)
    lower = np.array([_bound(int(ok[i]), i + 1, delta=delta, n_opt=n_opt, upper=False) for i in range(len(y))])
    upper = np.array([_bound(int(ok[i]), i + 1, delta=delta, n_opt=n_opt, upper=True) for i in range(len(y))])
    return lower, upper


def alarm_step(outcomes: Sequence[bool] | np.ndarray, *, target: float, delta: float,
               n_opt: int = DEFAULT_N_OPT) -> int | None:
    """The number of audited codes at which the alarm first fires (1-based), or None.

    Vectorised over the stream (one call into confseq), so a simulation of 1,000 streams is cheap.
    """
    y = np.asarray(outcomes, dtype=bool)
    if y.size == 0:
        return None
    t = np.arange(1, y.size + 1)
    stat = log_mixture(np.cumsum(y), t, target, delta=delta, n_opt=n_opt, upper=True)
    hit = np.flatnonzero(stat >= math.log(1.0 / delta))
    return int(hit[0]) + 1 if hit.size else None


def clopper_pearson(successes: int, trials: int, *, level: float) -> tuple[float, float]:
    """The exact two-sided Clopper–Pearson interval at ``level`` (valid at one fixed look only)."""
    if trials == 0:
        return 0.0, 1.0
    a = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta_dist.ppf(a / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta_dist.ppf(1 - a / 2, successes + 1, trials - successes))
    return lo, hi


@dataclass(frozen=True)
class EvidenceRule:
    """When too little has been audited to trust the sequence: a warning, never a suspension.

    ``max_days_without_audit``: no audit decision for this many days while codes were
    auto-accepted. ``min_audited`` per ``per_accepted``: fewer audited codes than this for every
    ``per_accepted`` codes auto-accepted since the monitor (re)started.
    """

    max_days_without_audit: float = 14.0
    min_audited: int = 1
    per_accepted: int = 100


def evidence_warnings(rule: EvidenceRule, *, audited: int, accepted: int, last_audit: datetime | None,
                      first_accepted: datetime | None, now: datetime) -> list[str]:
    """The too-little-evidence warnings (plain sentences, no note text)."""
    out: list[str] = []
    since = last_audit or first_accepted
    if accepted > 0 and since is not None and now - since > timedelta(days=rule.max_days_without_audit):
        days = (now - since).total_seconds() / 86400
        out.append(f"no audit for {days:.0f} days (limit {rule.max_days_without_audit:g}) while codes were "
                   "auto-accepted")
    needed = rule.min_audited * (accepted // rule.per_accepted) if rule.per_accepted > 0 else 0
    if audited < needed:
        out.append(f"{audited} audited codes for {accepted} auto-accepted (at least {rule.min_audited} per "
                   f"{rule.per_accepted} wanted: {needed})")
    return out


@dataclass(frozen=True)
class MonitorReport:
    """What the audit stream says now, for one bundle (since its last lift).

    ``cs_high``: the running minimum of the sequence's upper end since the stream (re)started
    (sticky: once below the target it stays there, as the alarm does); ``cs_high_now``: the upper
    end at the newest audited code alone; ``cs_low``: the lower end at the newest code;
    ``n_opt``: the boundary's setting the report was computed with."""

    target: float
    delta: float
    n_audited: int
    n_correct: int
    precision: float | None
    cp_low: float
    cp_high: float
    cs_low: float
    cs_high: float
    alarm: bool
    alarm_at: int | None
    warnings: list[str] = field(default_factory=list)
    cs_high_now: float = 1.0
    n_opt: int = DEFAULT_N_OPT

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def monitor(outcomes: Sequence[bool] | np.ndarray, *, target: float, delta: float,
            n_opt: int = DEFAULT_N_OPT, warnings: Sequence[str] = ()) -> MonitorReport:
    """The report for one ordered stream of audited auto-accepted codes (oldest first).

    Once the alarm has fired it stays fired (a later run of correct codes does not un-suspend a
    bundle: only an admin's lift, which restarts the stream, or a new bundle does), and so does
    what the report shows: ``cs_high`` is the running minimum of the upper end over the stream
    (a valid confidence sequence still), ``cs_high_now`` the end at the newest code.
    """
    for name, value in (("target", target), ("delta", delta)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name}={value!r} must lie strictly between 0 and 1")
    y = np.asarray(outcomes, dtype=bool)
    n, ok = int(y.size), int(y.sum())
    cp_low, cp_high = clopper_pearson(ok, n, level=1.0 - delta)
    cs_low = _bound(ok, n, delta=delta, n_opt=n_opt, upper=False)
    cs_now = _bound(ok, n, delta=delta, n_opt=n_opt, upper=True)
    cs_high = min(cs_now, _running_upper(y, delta=delta, n_opt=n_opt))
    at = alarm_step(y, target=target, delta=delta, n_opt=n_opt)
    return MonitorReport(target=target, delta=delta, n_audited=n, n_correct=ok, precision=ok / n if n else None,
                         cp_low=cp_low, cp_high=cp_high, cs_low=cs_low, cs_high=cs_high, alarm=at is not None,
                         alarm_at=at, warnings=list(warnings), cs_high_now=cs_now, n_opt=n_opt)
