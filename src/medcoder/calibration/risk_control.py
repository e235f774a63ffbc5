"""The precision guarantee: choose the auto-accept threshold τ with Learn-then-Test.

Goal: among predicted codes whose calibrated probability is ≥ τ, precision ≥ ``target_precision``
with probability ≥ ``1 − delta`` over the draw of the calibration split. Calibrated probabilities
alone do not give this (calibration is only approximate, and the split is finite), so τ is chosen
by a multiple-testing procedure on held-out labels:

    Angelopoulos, Bates, Candès, Jordan, Lei (2021). "Learn then Test: Calibrating Predictive
    Algorithms to Achieve Risk Control." arXiv:2110.01052 (Ann. Appl. Stat. 2025).

* Loss per accepted code: 1 if it is a false positive. Risk at τ = 1 − precision(τ); we need
  risk ≤ α = 1 − target_precision.
* For each candidate τ, the null hypothesis H0(τ): precision(τ) < target (risk > α). Conditional
  on the number ``n`` of codes accepted at τ, the number of false accepts ``k`` is
  Binomial(n, risk(τ)), so the exact binomial-tail p-value is ``P(Binom(n, α) ≤ k)``
  (``scipy.stats.binom.cdf``; LTT §3, the binomial p-value for binary losses).
* Fixed-sequence testing (LTT §4; Bauer 1991): test candidates from the highest τ down, each at
  level δ, stop at the first p-value > δ. Every τ tested before the stop is certified; the chosen
  τ is the lowest certified one (largest coverage). Family-wise error ≤ δ because the order is
  fixed before the labels are looked at.

One deliberate, label-free refinement: where the sequence starts. At the very top of the score
range only a handful of codes are accepted; with ``n`` accepts and ``k`` false ones the p-value is
at least ``P(Binom(n, α) ≤ 0) = (1 − α)^n``, so for ``n < 45`` (α = 0.05, δ = 0.1) no outcome can
reject, and just above that a single false accept stops the whole sequence. A sequence started
there usually stops at once and the method is close to vacuous. The sequence therefore starts at
the highest τ accepting at least ``min_accepted`` codes; by default the smallest ``n`` at which one
false accept can still be certified (:func:`min_accepts_to_certify` with ``n_errors=1``: 77 for
α = 0.05, δ = 0.1). This uses only the *count of scores* above each τ, never the labels, so the
order is still fixed before the labels are looked at. In a simulation like the one in
``tests/unit/test_risk_control.py`` (Beta(2, 1) scores, 200 seeds) this start raised the share of repetitions with a certified τ
from 0.78 to 0.81 (2000 codes) and 0.92 to 0.98 (5000 codes), with the target met in ≥ 93% of
repetitions at δ = 0.1.

Fixed before the labels, for every corpus. The guarantee holds for a procedure that does not
depend on the labels it certifies with. So the start rule (the one-error minimum, at least
:data:`MIN_START_ACCEPTED`, and ``routing.min_coverage`` = :data:`DEFAULT_MIN_COVERAGE`), δ = 0.1
(the product's "90 % confidence") and the targets (``routing.target_precision`` = 0.90, near
human coders' agreement, and the frontier grid ``medcoder.routing.evaluation.FRONTIER_TARGETS``)
are config defaults. They are the same for every corpus and run, and are never re-chosen after a
sequence fails on some calibration split. The start trades power, not validity: any label-free
start is valid. Restarting further down until something certifies is a different procedure, and
its error is not δ. ``tests/unit/test_ltt_fwer.py`` checks the shipped defaults by seeded
simulation (5,000 calibration splits per scenario, bound δ + 3·SE). It measures FWER 0.044 with
errors at the very top of the ranking, 0.095 for a model 0.001 below the target everywhere (the
exact size of the first test), 0.054 for a calibrated model, and ≤ δ at every frontier target.
It also shows three broken variants exceeding δ: no stop at the first failure (0.32), a start
chosen after the labels (0.16) and normal-approximation p-values (0.13). Two caveats remain.
0.10 and 0.90 were settled after seeing English dev (see :data:`DEFAULT_MIN_COVERAGE`). And the
count of eligible codes behind the 10 % start depends on the decision threshold, which is fitted
on the calibration labels unless certification uses labels nothing was tuned on.

Assumption to keep in mind: pairs are treated as exchangeable between calibration and deployment.
Codes of the same note are correlated, so the effective sample size is somewhat smaller than the
number of accepted codes; the test-split Clopper–Pearson bound reported by
:func:`precision_lower_bound` is the independent check. Measured on English CodiEsp dev
(``benchmarks/cluster_ltt.py``): the design effect at the certified τ is 1.15 (effective sample
size 135 of 156), and a note-level (Korn–Graubard) test certifies 153 codes instead of 156.

Library choice: MAPIE (``mapie.risk_control``) implements LTT, but it is not a project dependency
and its binary controller uses Hoeffding–Bentkus p-values (looser than the exact binomial tail for
0/1 losses); this module uses scipy only. When MAPIE is installed, the test suite cross-checks our
fixed-sequence step against ``mapie.risk_control.fwer_control.control_fwer``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from medcoder.constraints import Constraint, in_open_unit, in_unit_interval_right_open, validate

__all__ = [
    "AcceptThresholdResult",
    "RiskTargets",
    "binomial_p_values",
    "coverage_grid",
    "fixed_sequence_test",
    "min_accepts_to_certify",
    "precision_lower_bound",
    "select_accept_threshold",
]


@dataclass
class AcceptThresholdResult:
    """Outcome of :func:`select_accept_threshold` (plain-JSON via :meth:`to_dict`).

    ``tau`` is None when no candidate is certified: then nothing may be auto-accepted, and
    ``message`` says so in one plain sentence. ``calibration_precision`` and
    ``precision_lower_bound`` describe the accepted set on the calibration split at ``tau``
    (the latter a one-sided Clopper–Pearson bound at level δ, for information; the guarantee
    itself comes from the LTT procedure).
    """

    tau: float | None
    feasible: bool
    target_precision: float
    delta: float
    n_calibration_eligible: int
    n_calibration_accepted: int
    calibration_precision: float | None
    precision_lower_bound: float | None
    message: str
    min_accepted: int
    candidates: list[float] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)
    n_accepted: list[int] = field(default_factory=list)

    def to_dict(self, include_grid: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not include_grid:
            for k in ("candidates", "p_values", "n_accepted"):
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AcceptThresholdResult:
        return cls(**d)


@dataclass(frozen=True)
class RiskTargets:
    """What Learn-then-Test is asked to certify: precision >= ``target_precision`` of the
    auto-accepted codes with confidence ``1 - delta``, the fixed sequence starting at
    ``min_coverage`` of the eligible calibration codes (label-free; :data:`DEFAULT_MIN_COVERAGE`).

    The one source of these values' valid ranges (:data:`parameter_constraints`, read by the config
    checks too); built once from the ``routing`` group and recorded as ``targets`` in
    ``calibration.json``, from which :meth:`from_dict` rebuilds it.
    """

    target_precision: float = 0.9
    delta: float = 0.1
    min_coverage: float = 0.0

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "target_precision": Constraint(in_open_unit, "a number in (0, 1), e.g. 0.9; 1.0 can never be certified"),
        "delta": Constraint(in_open_unit, "a number in (0, 1), e.g. 0.1 (confidence 1 - delta)"),
        "min_coverage": Constraint(in_unit_interval_right_open,
                                   "a number in [0, 1), e.g. 0.1 (where the Learn-then-Test sequence starts)"),
    }

    def __post_init__(self) -> None:
        validate("routing", asdict(self), self.parameter_constraints)

    def with_target(self, target_precision: float) -> RiskTargets:
        """The same procedure at another target (the frontier of what lower targets would give)."""
        return replace(self, target_precision=target_precision)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RiskTargets:
        """From ``calibration.json``'s ``targets``; files written before ``min_coverage`` was
        recorded used none (0.0, the value before it existed)."""
        return cls(float(d["target_precision"]), float(d["delta"]), float(d.get("min_coverage", 0.0)))


def min_accepts_to_certify(target_precision: float, delta: float, n_errors: int = 0) -> int:
    """Smallest ``n`` such that ``n`` accepts with ``n_errors`` false ones reject H0.

    That is, the smallest ``n`` with ``P(Binom(n, α) ≤ n_errors) ≤ δ`` (``α = 1 − target``).
    With ``n_errors=0`` it is the closed form ``ceil(log δ / log(1 − α))``.
    """
    alpha = 1.0 - float(target_precision)
    n = max(int(math.ceil(math.log(delta) / math.log1p(-alpha) - 1e-12)), n_errors + 1)
    while binom.cdf(n_errors, n, alpha) > delta:
        n += 1
    return n


def binomial_p_values(n_accepted: np.ndarray, n_false: np.ndarray, alpha: float) -> np.ndarray:
    """``P(Binom(n, α) ≤ k)`` for H0: error rate > α; 1.0 where nothing is accepted."""
    n = np.asarray(n_accepted, dtype=np.int64)
    k = np.asarray(n_false, dtype=np.int64)
    p = binom.cdf(k, np.maximum(n, 1), alpha)
    return np.where(n > 0, p, 1.0)


def fixed_sequence_test(p_values: np.ndarray, delta: float) -> int:
    """Number of leading hypotheses rejected by fixed-sequence testing at level ``delta``.

    Hypotheses are tested in the given order, each at full level δ; testing stops at the first
    p-value > δ. Returns the count of rejections (0 = none), i.e. the index of the first stop.
    """
    p = np.asarray(p_values, dtype=np.float64)
    above = np.flatnonzero(p > delta)
    return int(above[0]) if above.size else int(p.size)


def precision_lower_bound(n_correct: int, n_total: int, delta: float) -> float:
    """One-sided Clopper–Pearson lower confidence bound on a precision at level ``1 − delta``.

    ``P(precision ≥ bound) ≥ 1 − delta``. Returns nan when ``n_total == 0`` (no accepted codes:
    precision undefined) and 0.0 when ``n_correct == 0``.
    """
    n, k = int(n_total), int(n_correct)
    if n <= 0:
        return float("nan")
    if k <= 0:
        return 0.0
    return float(beta_dist.ppf(delta, k, n - k + 1))


# Label-free floor for where the sequence starts. For lax targets the one-error minimum is tiny
# (7 codes at 0.5): the sequence then tests a handful of top codes, one or two of which are wrong
# by chance, and stops at once. Measured on the quickstart model's dev split: target 0.5 was not
# certified from a 7-code start although the top 300 eligible codes had precision 0.82.
MIN_START_ACCEPTED = 50

# The default start as a share of the eligible calibration codes (``routing.min_coverage``).
# Why: a fixed sequence stops at its first non-rejection, so noise among the few highest-scoring
# codes can end it before the test reaches the range an ops team cares about. An auto-accept set
# under ~10 % of predicted codes saves a coder little, so the sequence starts there; the start uses
# only the count of eligible codes (never labels), so the family-wise guarantee is unchanged
# (``tests/unit/test_risk_control.py`` re-checks it by simulation with this start). Disclosure: it
# was chosen after the English hybrid's dev sequence, started at 50 codes, stopped at once on 3
# errors among its top 50 (top 100: 4 errors); docs/auto-accept.md reports both starts.
DEFAULT_MIN_COVERAGE = 0.10


def coverage_grid(eligible_scores: np.ndarray, step: float) -> np.ndarray:
    """τ candidates at every ``step`` of the eligible calibration codes' coverage (label-free).

    The k-th candidate is the score of the ``ceil(k * step * n)``-th highest of the ``n`` eligible
    scores, so the fixed sequence tests the top ``step``, ``2 step``, ... of them and nothing in
    between. Why a coarser grid than every distinct score: the sequence stops at its first
    non-rejection, and each extra test is one more place where a short run of errors ends it,
    even where the next step down would be certified with room to spare. The grid reads only the
    scores' order, never the labels, so any step keeps the family-wise guarantee
    (``benchmarks/ltt_grid_probe.py`` measures what it does to power).
    """
    if not 0.0 < float(step) <= 1.0:
        raise ValueError(f"coverage step must be in (0, 1], got {step!r}")
    s_desc = np.sort(np.asarray(eligible_scores, dtype=np.float64).reshape(-1))[::-1]
    n = int(s_desc.size)
    if n == 0:
        return s_desc
    shares = np.arange(1, int(math.floor(1.0 / float(step) + 1e-9)) + 1) * float(step)
    counts = np.clip(np.ceil(shares * n - 1e-9).astype(np.int64), 1, n)
    return np.unique(s_desc[np.unique(np.append(counts, n)) - 1])[::-1]


def select_accept_threshold(
    probs: np.ndarray,
    y_true: np.ndarray,
    predicted_mask: np.ndarray,
    *,
    target_precision: float = 0.95,
    delta: float = 0.1,
    candidates: np.ndarray | list[float] | None = None,
    min_accepted: int | None = None,
    min_coverage: float = 0.0,
    targets: RiskTargets | None = None,
) -> AcceptThresholdResult:
    """Choose τ_accept on the calibration split by LTT fixed-sequence testing (see module doc).

    Parameters
    ----------
    probs, y_true, predicted_mask:
        Arrays of equal shape (any, typically ``(n_docs, n_labels)``). Only pairs with
        ``predicted_mask`` true can be auto-accepted, so only they enter the test. Pass the mask
        of codes that are predicted *and* not blocked by a routing rule (see
        :meth:`medcoder.routing.RoutingPolicy.eligible_mask`) so the guarantee is about exactly
        the set that the policy will accept.
    target_precision, delta:
        Precision target and error level: ``P(precision(τ) ≥ target) ≥ 1 − delta``.
    candidates:
        Optional grid of τ values; default every distinct eligible probability (the shipped
        grid; :func:`coverage_grid` gives a coarser one). Tested from high to low, after dropping
        those accepting fewer than ``min_accepted`` codes.
    min_accepted:
        Where the fixed sequence starts (label-free, see module doc). Default: the larger of
        ``min_accepts_to_certify(target_precision, delta, n_errors=1)`` and
        ``MIN_START_ACCEPTED``; never below the zero-error minimum, under which no test can reject.
    min_coverage:
        A second label-free floor for the start, as a share of the eligible codes: the sequence
        starts at ``ceil(min_coverage * n_eligible)`` accepts when that is larger. See
        :data:`DEFAULT_MIN_COVERAGE` for why ``routing.min_coverage`` defaults to 0.10.
    targets:
        The three levels above as one validated :class:`RiskTargets` (wins over the keywords).

    If no candidate is certified the result has ``tau=None`` and ``feasible=False``: the target is
    never silently relaxed.
    """
    if targets is None:
        targets = RiskTargets(target_precision, delta, min_coverage)
    target_precision, delta, min_coverage = targets.target_precision, targets.delta, targets.min_coverage
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    m = np.asarray(predicted_mask, dtype=bool)
    if not (p.shape == y.shape == m.shape):
        raise ValueError(f"shapes differ: probs {p.shape}, y_true {y.shape}, mask {m.shape}")
    alpha = 1.0 - float(target_precision)
    s = p[m]
    correct = y[m].astype(bool)
    n_elig = int(s.size)
    n_min = min_accepts_to_certify(target_precision, delta)
    if min_accepted is None:
        n_min = max(min_accepts_to_certify(target_precision, delta, n_errors=1), MIN_START_ACCEPTED)
    else:
        n_min = max(n_min, int(min_accepted))
    n_min = max(n_min, int(math.ceil(float(min_coverage) * n_elig - 1e-9)))

    order = np.argsort(-s, kind="mergesort")
    s_desc = s[order]
    cum_false = np.concatenate([[0], np.cumsum(~correct[order])])
    if candidates is None:
        grid = np.unique(s_desc)[::-1]
    else:
        grid = np.unique(np.asarray(candidates, dtype=np.float64))[::-1]
    # number accepted at each τ = count of scores >= τ (s_desc is descending)
    n_acc = np.searchsorted(-s_desc, -grid, side="right")
    testable = n_acc >= n_min
    grid, n_acc = grid[testable], n_acc[testable]
    k_false = cum_false[n_acc]
    pvals = binomial_p_values(n_acc, k_false, alpha)
    n_rejected = fixed_sequence_test(pvals, delta)

    base = {
        "target_precision": float(target_precision),
        "delta": float(delta),
        "n_calibration_eligible": n_elig,
        "min_accepted": int(n_min),
        "candidates": [float(v) for v in grid],
        "p_values": [float(v) for v in pvals],
        "n_accepted": [int(v) for v in n_acc],
    }
    conf = f"{100 * (1 - delta):.0f}%"
    if n_rejected == 0:
        if grid.size == 0:
            why = (
                f"only {n_elig} predicted codes are eligible on the calibration split and at "
                f"least {n_min} are needed to certify any threshold"
            )
        else:
            why = "the highest-scoring predicted codes are not precise enough on the calibration split"
        msg = (
            f"No auto-accept threshold reaches precision >= {target_precision:.3g} with "
            f"{conf} confidence ({why}); nothing will be auto-accepted and the target was not "
            f"relaxed."
        )
        return AcceptThresholdResult(
            tau=None,
            feasible=False,
            n_calibration_accepted=0,
            calibration_precision=None,
            precision_lower_bound=None,
            message=msg,
            **base,
        )
    i = n_rejected - 1
    tau = float(grid[i])
    n = int(n_acc[i])
    k_ok = n - int(k_false[i])
    prec = k_ok / n
    msg = (
        f"Auto-accept threshold tau={tau:.4f} certifies precision >= {target_precision:.3g} with "
        f"{conf} confidence (Learn-then-Test, fixed sequence); on the calibration split it accepts "
        f"{n} of {n_elig} eligible predicted codes at precision {prec:.3f}."
    )
    return AcceptThresholdResult(
        tau=tau,
        feasible=True,
        n_calibration_accepted=n,
        calibration_precision=float(prec),
        precision_lower_bound=precision_lower_bound(k_ok, n, delta),
        message=msg,
        **base,
    )
