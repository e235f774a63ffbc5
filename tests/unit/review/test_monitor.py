"""The statistics of the audit monitor (:mod:`medcoder.review.monitor`), checked independently:

(a) confseq's compiled beta-binomial mixture against numerical quadrature of its definition;
(b) the exact probability (dynamic programming over the Bernoulli walk, no Monte Carlo) that the
    alarm ever fires within 1,000 audited codes when precision meets the target, and its power;
(c) a seeded simulation of the shipped procedure on clustered audits (notes of 1-4 codes);
(d) the confidence sequence's coverage shape against Clopper-Pearson.
"""

from __future__ import annotations

import math

import confseq.boundaries  # noqa: F401 - a declared dependency of the review extra: missing must FAIL
import numpy as np
import pytest
from scipy import integrate

from medcoder.review.monitor import (
    alarm_step,
    clopper_pearson,
    confidence_sequence,
    log_mixture,
    monitor,
)


# -- (a) the mixture against quadrature ----------------------------------------------------------
def _psi_b(lam: np.ndarray, g: float, h: float) -> np.ndarray:
    """Howard et al.'s sub-Bernoulli CGF with range (g, h): log((g e^{h l} + h e^{-g l})/(g+h)) / (g h)."""
    return (np.logaddexp(math.log(g) + h * lam, math.log(h) - g * lam) - math.log(g + h)) / (g * h)


def _mixing_log_density(lam: np.ndarray, g: float, h: float, r: float) -> np.ndarray:
    """Unnormalised log density over lambda >= 0 of the one-sided beta-binomial mixing distribution
    (Howard et al. 2021, Prop. 7; confseq's BetaBinomialMixture): p = 1/(1 + (g/h) e^{(g+h) l}) is
    Beta(r/(g(g+h)), r/(h(g+h))) restricted to p <= h/(g+h) (i.e. lambda >= 0), and
    |dp/dl| = (g+h) p (1-p), so the density in lambda is proportional to p^a (1-p)^b."""
    a, b = r / (g * (g + h)), r / (h * (g + h))
    z = (g + h) * lam + math.log(g / h)
    log_p = -np.logaddexp(0.0, z)         # log sigmoid(-z)
    log_1mp = -np.logaddexp(0.0, -z)      # log sigmoid(z)
    return a * log_p + b * log_1mp


def _r(v_opt: float, alpha: float, g: float, h: float) -> float:
    """confseq's mixing parameter: the one-sided normal mixture's best rho (at alpha * 2 for the
    two-sided formula) less g*h, floored at 1e-3 g h (uniform_boundaries.h, optimal_r)."""
    la = math.log(1 / (2 * alpha))
    rho = v_opt / (2 * la + math.log(1 + 2 * la))
    return max(rho - g * h, 1e-3 * g * h)


def _log_integral(log_f, upper: float) -> float:  # noqa: ANN001
    """log of the integral of exp(log_f) over [0, upper], stably: shifted by the maximum on a grid,
    and cut where the integrand has fallen below e^-60 of it (quad misses a narrow bump on a long
    interval)."""
    grid = np.linspace(0.0, upper, 200001)
    values = log_f(grid)
    top = float(values.max())
    peak = float(grid[int(values.argmax())])
    end = float(grid[min(int(np.flatnonzero(values > top - 60.0)[-1]) + 1, grid.size - 1)])
    integral, err = integrate.quad(lambda x: math.exp(float(log_f(np.array([x]))[0]) - top), 0.0, end,
                                   points=[peak] if 0.0 < peak < end else None, limit=500, epsabs=0.0,
                                   epsrel=1e-10)
    assert err < 1e-7 * integral
    return top + math.log(integral)


def independent_log_mixture(s: float, v: float, g: float, h: float, *, v_opt: float, alpha: float) -> float:
    """log of the mixture: the integral over the mixing distribution of exp(l s - psi_B(l) v)."""
    r = _r(v_opt, alpha, g, h)
    upper = 400.0 / (g + h) / max(min(g, h), 1e-3)  # the density and integrand are negligible far out
    upper = min(upper, 60.0 / (g * h))
    norm = _log_integral(lambda lam: _mixing_log_density(lam, g, h, r), upper)
    num = _log_integral(lambda lam: _mixing_log_density(lam, g, h, r) + lam * s - _psi_b(lam, g, h) * v, upper)
    return num - norm


@pytest.mark.parametrize(("successes", "trials", "p", "delta", "n_opt", "upper"), [
    (18, 20, 0.9, 0.1, 200, True),
    (80, 100, 0.9, 0.1, 200, True),
    (430, 500, 0.9, 0.1, 200, True),
    (45, 50, 0.95, 0.05, 100, True),
    (200, 200, 0.9, 0.1, 200, True),      # all correct: strongly negative
    (3, 10, 0.5, 0.1, 200, False),
    (97, 100, 0.9, 0.1, 50, False),
    (700, 1000, 0.75, 0.2, 400, True),
])
def test_log_mixture_matches_quadrature(successes: int, trials: int, p: float, delta: float, n_opt: int,
                                        upper: bool) -> None:
    ours = float(log_mixture(successes, trials, p, delta=delta, n_opt=n_opt, upper=upper))
    if upper:
        s, g, h = trials * p - successes, 1 - p, p
    else:
        s, g, h = successes - trials * p, p, 1 - p
    ref = independent_log_mixture(s, g * h * trials, g, h, v_opt=g * h * n_opt, alpha=delta)
    assert ours == pytest.approx(ref, abs=1e-6, rel=1e-7)


def test_nothing_observed_is_log_one() -> None:
    assert float(log_mixture(0, 0, 0.9, delta=0.1)) == 0.0


# -- (b) exact crossing probabilities ------------------------------------------------------------
def alarm_limits(T: int, *, target: float, delta: float, n_opt: int = 200) -> np.ndarray:
    """``c[t]`` = the largest number of correct codes out of ``t`` at which the alarm fires (-1:
    none). The mixture is increasing in ``s`` (an integral of exp(l s ...) over l >= 0), so it is
    decreasing in the successes: the alarm region at each ``t`` is ``{k <= c[t]}``; found by
    bisection and checked at the edge."""
    threshold = math.log(1 / delta)

    def fires(k: int, t: int) -> bool:
        return float(log_mixture(k, t, target, delta=delta, n_opt=n_opt)) >= threshold

    c = np.full(T + 1, -1)
    for t in range(1, T + 1):
        if not fires(0, t):
            continue
        lo, hi = 0, t  # fires(lo); find the largest k that fires
        if fires(t, t):
            c[t] = t
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fires(mid, t) else (lo, mid)
        c[t] = lo
    return c


def crossing_probability(p: float, limits: np.ndarray) -> float:
    """P(the alarm fires at some t <= T) for i.i.d. Bernoulli(p) codes, exactly: propagate the law
    of the number correct among walks not yet absorbed."""
    alive = np.array([1.0])
    fired = 0.0
    for t in range(1, len(limits)):
        nxt = np.zeros(t + 1)
        nxt[:-1] += alive * (1 - p)
        nxt[1:] += alive * p
        if limits[t] >= 0:
            fired += float(nxt[: limits[t] + 1].sum())
            nxt[: limits[t] + 1] = 0.0
        alive = nxt
    return fired


@pytest.mark.parametrize(("target", "delta"), [(0.9, 0.1), (0.95, 0.1), (0.9, 0.05)])
def test_exact_false_alarm_probability_is_at_most_delta(target: float, delta: float) -> None:
    limits = alarm_limits(1000, target=target, delta=delta)
    fa = crossing_probability(target, limits)
    assert 0.0 < fa <= delta
    # the limits are the alarm rule: alarm_step fires exactly where a walk first meets them
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(1000) < target - 0.05
        ok = np.cumsum(y)
        hit = np.flatnonzero(ok <= limits[1:])
        assert alarm_step(y, target=target, delta=delta) == (int(hit[0]) + 1 if hit.size else None)


def test_the_alarm_has_power() -> None:
    limits = alarm_limits(200, target=0.9, delta=0.1)
    assert crossing_probability(0.75, limits) > 0.9
    assert crossing_probability(0.9, limits) < 0.1
    # monotone in the true precision
    assert crossing_probability(0.8, limits) > crossing_probability(0.85, limits) > crossing_probability(0.9, limits)


# -- (c) the shipped procedure on clustered audits -------------------------------------------------
def test_simulated_false_alarms_on_clustered_notes() -> None:
    """Notes of 1-4 auto-accepted codes whose correctness is correlated within the note (each note
    has its own quality), from a fixed pool whose code precision is exactly the target; each stream
    audits notes drawn at random, 1,000 codes at most.

    Measured: 16 of 200 streams (0.08) alarm, against an exact 0.058 for independent codes (test
    above): clustering within notes costs false alarms, and still stays under delta here."""
    target, delta = 0.9, 0.1
    rng = np.random.default_rng(20261203)
    sizes = rng.integers(1, 5, size=3000)
    quality = rng.beta(9.0, 1.0, size=sizes.size)
    codes = [rng.random(n) < q for n, q in zip(sizes, quality, strict=True)]
    flat = np.concatenate(codes)
    # make the pool's precision exactly the target: flip the needed number of codes at random
    need = int(round(target * flat.size)) - int(flat.sum())
    pool = np.flatnonzero(~flat) if need > 0 else np.flatnonzero(flat)
    flat[rng.choice(pool, size=abs(need), replace=False)] ^= True
    codes = np.split(flat, np.cumsum(sizes)[:-1])
    assert abs(flat.mean() - target) < 1e-3
    n_streams, alarms = 200, 0
    for _ in range(n_streams):
        order = rng.permutation(len(codes))
        stream = np.concatenate([codes[i] for i in order[:500]])[:1000]
        alarms += alarm_step(stream, target=target, delta=delta) is not None
    assert alarms / n_streams <= delta
    # and a pool at 0.75 is caught in nearly every stream
    bad = rng.random(1000) < 0.75
    assert alarm_step(bad, target=target, delta=delta) is not None


# -- (d) the confidence sequence -------------------------------------------------------------------
@pytest.mark.parametrize(("k", "t"), [(18, 20), (90, 100), (450, 500), (50, 50), (3, 10), (0, 5)])
def test_sequence_brackets_the_estimate_and_is_wider_than_clopper_pearson(k: int, t: int) -> None:
    delta = 0.1
    y = np.array([True] * k + [False] * (t - k))
    lower, upper = confidence_sequence(y, delta=delta)
    assert np.all(lower <= np.cumsum(y) / np.arange(1, t + 1) + 1e-9)
    assert np.all(np.cumsum(y) / np.arange(1, t + 1) <= upper + 1e-9)
    # each end is one-sided at delta: compare with the fixed-n Clopper-Pearson bound at delta per side
    cp_low, cp_high = clopper_pearson(k, t, level=1 - 2 * delta)
    assert lower[-1] <= cp_low + 1e-6 and upper[-1] >= cp_high - 1e-6
    assert (upper[-1] - lower[-1]) > (cp_high - cp_low)


def test_the_upper_end_is_the_alarm() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(300) < 0.8
    _, upper = confidence_sequence(y, delta=0.1)
    first = np.flatnonzero(upper < 0.9)
    assert alarm_step(y, target=0.9, delta=0.1) == int(first[0]) + 1
    report = monitor(y, target=0.9, delta=0.1)
    assert report.alarm and report.alarm_at == int(first[0]) + 1
    assert report.cs_high_now == pytest.approx(upper[-1], abs=1e-6)
    assert report.cs_high == pytest.approx(upper.min(), abs=1e-6)  # the running minimum: sticky
    assert report.n_audited == 300 and report.precision == pytest.approx(y.mean())


def test_the_reported_upper_bound_is_sticky_after_an_alarm() -> None:
    """Five wrong codes, then a long run of correct ones: the upper end at the newest code climbs
    back over the target, but the alarm fired, and the reported bound (the running minimum, still a
    confidence sequence) stays below the target with it."""
    y = np.array([False] * 5 + [True] * 200)
    _, upper = confidence_sequence(y, delta=0.1)
    report = monitor(y, target=0.9, delta=0.1)
    assert report.alarm and report.alarm_at == 5
    assert report.cs_high_now > 0.9 and report.cs_high_now == pytest.approx(upper[-1], abs=1e-6)
    assert report.cs_high < 0.9 and report.cs_high == pytest.approx(upper.min(), abs=1e-6)
    # and before any wrong code nothing is rejected: the bound is 1
    assert monitor([True] * 50, target=0.9, delta=0.1).cs_high == 1.0
    assert monitor([], target=0.9, delta=0.1).cs_high == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_the_running_minimum_matches_the_sequence(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(250) < rng.uniform(0.75, 0.97)
    _, upper = confidence_sequence(y, delta=0.1, n_opt=100)
    report = monitor(y, target=0.9, delta=0.1, n_opt=100)
    assert report.cs_high == pytest.approx(upper.min(), abs=2e-6)
    if abs(upper.min() - 0.9) > 1e-5:  # away from the bisection's tolerance: the bound says the alarm
        assert report.alarm == (upper.min() < 0.9)
    assert report.n_opt == 100
