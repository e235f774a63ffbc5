"""Compare systems on the same notes with uncertainty: bootstrap CIs and paired permutation tests.

Why: a leaderboard of point estimates on 250 test notes invites reading noise as progress. Every
metric here comes with a document-level bootstrap 95 % CI (resample test notes, the unit that was
sampled), and each system is tested against a baseline with a paired permutation test (swap the
two systems' outputs note by note), which uses the pairing that an unpaired comparison of two CIs
throws away.

Every metric is written as a **ratio of sums over notes**, ``sum_i num_i / sum_i den_i``:

==================  ===========================  ==========================
metric              num_i                        den_i
==================  ===========================  ==========================
``map``             AP of note i                 1 if the note has gold
``micro_f1``        2·tp_i                       2·tp_i + fp_i + fn_i
``micro_precision`` tp_i                         tp_i + fp_i
``micro_recall``    tp_i                         tp_i + fn_i
``p_at_k``          hits in top k / k            1
``r_at_k``          hits in top k / gold codes   1 if the note has gold
==================  ===========================  ==========================

so the same two functions serve all of them, and the values equal
:func:`medcoder.evaluation.metrics.compute_all` exactly (MAP over notes with gold, all gold codes
counted; micro counts over the label space; tested). The bootstrap resamples ``(num, den)`` pairs
together (``paired=True``), which is what a ratio metric such as micro-F1 needs; the permutation
test passes note *indices* as the two samples, and its statistic looks up either system's terms
per note, so the same trick covers ratio and mean metrics. Both are ``scipy.stats`` functions,
vectorised; nothing loops over resamples in Python.

Reproducibility: a fixed ``random_state`` seeds a fresh generator for every CI and every test, so
each system's CI uses the same resampled note sets (common random numbers: CIs of different runs
are comparable) and results do not depend on the order runs are listed in.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from medcoder.errors import ConfigError  # noqa: E402
from medcoder.evaluation.note_predictions import NotePredictions  # noqa: E402

__all__ = [
    "DEFAULT_METRICS",
    "Comparison",
    "Estimate",
    "MetricResult",
    "Terms",
    "align_systems",
    "check_metric",
    "bootstrap_ci",
    "compare_systems",
    "leaderboard_csv",
    "leaderboard_markdown",
    "leaderboard_rows",
    "metric_terms",
    "paired_permutation_pvalue",
    "plot_comparison",
]

DEFAULT_METRICS: tuple[str, ...] = ("map", "micro_f1", "p_at_8")
_AT_K = re.compile(r"^(p|r)_at_(\d+)$")
_MICRO = ("micro_f1", "micro_precision", "micro_recall")


# --------------------------------------------------------------------------------------------
# per-note terms
# --------------------------------------------------------------------------------------------


def check_metric(metric: str) -> None:
    m = _AT_K.match(metric)
    if metric in ("map", *_MICRO) or (m and int(m[2]) >= 1):
        return
    raise ConfigError(f"metrics: unknown metric {metric!r}",
                      hint="use map, micro_f1, micro_precision, micro_recall, p_at_<k> or r_at_<k>")


def _zero_division(metric: str) -> float:
    """0/0 as in :mod:`medcoder.evaluation.metrics`: 0 for micro counts, NaN for note averages."""
    return 0.0 if metric in _MICRO else float("nan")


class Terms(NamedTuple):
    """Per-note terms of one metric for one system: ``metric = num.sum() / den.sum()``, and the
    value of 0/0 (``zero``: 0 for micro counts, NaN for note averages, as in the metrics module)."""

    num: np.ndarray
    den: np.ndarray
    zero: float

    def value(self) -> float:
        return float(_ratio(self.num.sum(), self.den.sum(), self.zero))


def metric_terms(preds: NotePredictions, metric: str) -> Terms:
    """Per-note terms of ``metric`` (see the module table).

    One Python pass over the gold codes (O(total gold codes)); the rest is array arithmetic.
    """
    num, den = _num_den(preds, metric)
    return Terms(num, den, _zero_division(metric))


def _num_den(preds: NotePredictions, metric: str) -> tuple[np.ndarray, np.ndarray]:
    check_metric(metric)
    n = len(preds.notes)
    n_gold = np.array([len(note.gold) for note in preds.notes], dtype=np.float64)
    has_gold = (n_gold > 0).astype(np.float64)
    # in-space gold ranks, padded with +inf so every comparison below is vectorised
    width = max((len(note.gold_rank) for note in preds.notes), default=0)
    ranks = np.full((n, max(width, 1)), np.inf)
    for i, note in enumerate(preds.notes):
        r = sorted(v for v in note.gold_rank if v is not None)
        ranks[i, : len(r)] = r
    if metric == "map":
        # AP = sum over gold codes at rank r <= depth of precision@r, / all gold codes of the note
        hits_before = np.arange(1, ranks.shape[1] + 1)  # ranks are sorted: j-th gold code is hit j
        prec = np.where(ranks <= preds.map_depth, hits_before / ranks, 0.0)
        ap = np.divide(prec.sum(axis=1), n_gold, out=np.zeros(n), where=n_gold > 0)
        return ap, has_gold
    m = _AT_K.match(metric)
    if m:
        k = int(m[2])
        hits = (ranks <= k).sum(axis=1).astype(np.float64)
        if m[1] == "p":
            return hits / k, np.ones(n)
        return np.divide(hits, n_gold, out=np.zeros(n), where=n_gold > 0), has_gold
    n_pred = np.array([note.n_predicted for note in preds.notes], dtype=np.float64)
    in_space = np.isfinite(ranks).sum(axis=1).astype(np.float64)
    tp = (ranks <= n_pred[:, None]).sum(axis=1).astype(np.float64)
    fp, fn = n_pred - tp, in_space - tp
    if metric == "micro_f1":
        return 2 * tp, 2 * tp + fp + fn
    if metric == "micro_precision":
        return tp, tp + fp
    return tp, tp + fn


def _ratio(num: np.ndarray, den: np.ndarray, zero: float) -> np.ndarray:
    """Element-wise num/den with 0/0 -> ``zero`` (vectorised over resamples)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, zero), where=den != 0)


# --------------------------------------------------------------------------------------------
# the two statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float


def _interval(res: Any, confidence_level: float) -> tuple[float, float]:
    """The CI of a ``BootstrapResult``; where BCa is undefined (a degenerate distribution, e.g. a
    metric that is 0 on every resample), the percentile interval of the same resamples."""
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    dist = dist[np.isfinite(dist)]
    if not dist.size:
        return float("nan"), float("nan")
    alpha = (1 - confidence_level) / 2
    return float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha))


def bootstrap_ci(
    terms: Sequence[Terms],
    combine: Callable[..., np.ndarray],
    *,
    n_resamples: int,
    confidence_level: float,
    method: str,
    random_state: int,
    batch: int | None = None,
) -> Estimate:
    """Document-level bootstrap CI of ``combine(*ratios)`` where each ratio is ``sum num / sum den``.

    ``terms`` are per-note ``(num, den)`` arrays of one or more systems on the same notes; all
    are resampled with the same note indices (``paired=True``), so one system's CI keeps num and
    den of a note together, and a difference of two systems keeps the pairing by note.
    """
    flat = [a for t in terms for a in (t.num, t.den)]
    zeros = [t.zero for t in terms]

    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        ratios = [_ratio(arrays[2 * j].sum(axis=axis), arrays[2 * j + 1].sum(axis=axis), zeros[j])
                  for j in range(len(terms))]
        return combine(*ratios)

    point = float(statistic(*flat))
    with warnings.catch_warnings():
        # degenerate distributions are handled by _interval; scipy's warning would only be noise
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = stats.bootstrap(tuple(flat), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence_level, method=method, batch=batch,
                              random_state=np.random.default_rng(random_state))
    low, high = _interval(res, confidence_level)
    return Estimate(point, low, high)


def paired_permutation_pvalue(
    a: Terms,
    b: Terms,
    *,
    n_resamples: int,
    random_state: int,
    batch: int | None = None,
) -> float:
    """Two-sided p-value of "systems a and b are exchangeable on every note" for a ratio metric.

    ``scipy.stats.permutation_test`` with ``permutation_type="samples"`` swaps the two samples'
    values note by note. The samples passed are note *indices* (``i`` for system a, ``n + i`` for
    b) and the statistic looks the per-note terms up in the stacked table, so a swap exchanges a
    note's whole (num, den) between the systems: the right null for micro-F1, whose value is not
    a mean of per-note values. With ``2**n <= n_resamples`` the test is exact.
    """
    n = len(a.num)
    num = np.concatenate([a.num, b.num]).astype(np.float64)
    den = np.concatenate([a.den, b.den]).astype(np.float64)
    zero = a.zero

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return (_ratio(num[x].sum(axis=axis), den[x].sum(axis=axis), zero)
                - _ratio(num[y].sum(axis=axis), den[y].sum(axis=axis), zero))

    res = stats.permutation_test((np.arange(n), np.arange(n, 2 * n)), statistic, permutation_type="samples",
                                 vectorized=True, n_resamples=n_resamples, alternative="two-sided", batch=batch,
                                 random_state=np.random.default_rng(random_state))
    return float(res.pvalue)


# --------------------------------------------------------------------------------------------
# comparing runs
# --------------------------------------------------------------------------------------------


def align_systems(systems: Mapping[str, NotePredictions], baseline: str) -> dict[str, NotePredictions]:
    """All systems in the baseline's note order; refuses systems that are not on the same notes.

    A paired comparison is only meaningful on identical notes with identical gold codes: a
    different note set (another split, ``max_samples_per_split``) or different gold (another
    corpus version) would turn differences of data into differences of systems.
    """
    if baseline not in systems:
        raise ConfigError(f"baseline {baseline!r} is not among the compared runs {sorted(systems)}",
                          hint="select it too (e.g. add it to run_ids)")
    base = systems[baseline]
    ids = base.ids
    gold = {n.id: n.gold for n in base.notes}
    aligned = {}
    for name, preds in systems.items():
        if preds.split != base.split:
            raise ConfigError(f"runs {baseline} and {name} hold predictions of different splits "
                              f"({base.split!r} vs {preds.split!r})", hint="compare runs on one split")
        if set(preds.ids) != set(ids):
            only_base = sorted(set(ids) - set(preds.ids))
            only_run = sorted(set(preds.ids) - set(ids))
            example = (only_base or only_run)[0]
            raise ConfigError(
                f"runs {baseline} and {name} do not cover the same {base.split} notes ({len(ids)} vs "
                f"{len(preds.ids)} notes; {len(only_base)} only in the baseline, {len(only_run)} only in {name}, "
                f"e.g. {example!r})", hint="compare runs evaluated on the same corpus and split")
        bad = [n.id for n in preds.notes if n.gold != gold[n.id]]
        if bad:
            raise ConfigError(f"runs {baseline} and {name} have different gold codes for {len(bad)} "
                              f"{base.split} notes (e.g. {bad[0]!r})",
                              hint="compare runs evaluated on the same corpus version and code normalisation")
        aligned[name] = preds.reordered(ids)
    return aligned


@dataclass(frozen=True)
class MetricResult:
    """One metric of one system: its CI and, against the baseline, the paired difference and p."""

    estimate: Estimate
    delta: Estimate | None = None  # system - baseline, paired bootstrap CI (None for the baseline)
    p_value: float | None = None   # paired permutation test vs the baseline (None for the baseline)


@dataclass
class Comparison:
    """Everything a leaderboard, a plot or a JSON report needs."""

    systems: list[str]
    baseline: str
    metrics: list[str]
    n_notes: int
    split: str
    results: dict[str, dict[str, MetricResult]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def est(e: Estimate | None) -> dict[str, float] | None:
            return None if e is None else {"value": e.value, "low": e.low, "high": e.high}

        return {
            "baseline": self.baseline, "systems": self.systems, "metrics": self.metrics, "split": self.split,
            "n_notes": self.n_notes, "settings": self.settings,
            "results": {s: {m: {"estimate": est(r.estimate), "delta": est(r.delta), "p_value": r.p_value}
                            for m, r in per.items()} for s, per in self.results.items()},
        }


def compare_systems(
    systems: Mapping[str, NotePredictions],
    baseline: str,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    n_resamples: int = 9999,
    permutation_resamples: int = 9999,
    confidence_level: float = 0.95,
    method: str = "BCa",
    random_state: int = 0,
    batch: int | None = None,
) -> Comparison:
    """Bootstrap CIs of every metric of every system, and paired tests against ``baseline``.

    ``systems`` maps a name (a run id) to its predictions; they must cover the same notes
    (:func:`align_systems`). ``batch`` bounds memory (resamples per vectorised call).
    """
    for m in metrics:
        check_metric(m)
    if not metrics:
        raise ConfigError("metrics: empty list", hint="e.g. metrics=[map,micro_f1,p_at_8]")
    if n_resamples < 1 or permutation_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples}, permutation_resamples={permutation_resamples}: must be >= 1",
                          hint="e.g. 9999")
    if not 0 < confidence_level < 1:
        raise ConfigError(f"confidence_level={confidence_level} must be in (0, 1)", hint="e.g. 0.95")
    aligned = align_systems(systems, baseline)
    boot = {"n_resamples": n_resamples, "confidence_level": confidence_level, "method": method,
            "random_state": random_state, "batch": batch}
    results: dict[str, dict[str, MetricResult]] = {name: {} for name in aligned}
    for metric in metrics:
        terms = {name: metric_terms(preds, metric) for name, preds in aligned.items()}
        for name in aligned:
            estimate = bootstrap_ci([terms[name]], lambda r: r, **boot)
            if name == baseline:
                results[name][metric] = MetricResult(estimate)
                continue
            delta = bootstrap_ci([terms[name], terms[baseline]], lambda r, s: r - s, **boot)
            p = paired_permutation_pvalue(terms[name], terms[baseline], n_resamples=permutation_resamples,
                                          random_state=random_state, batch=batch)
            results[name][metric] = MetricResult(estimate, delta, p)
    n = len(aligned[baseline].notes)
    return Comparison(list(aligned), baseline, list(metrics), n, aligned[baseline].split, results, {
        "n_resamples": n_resamples, "permutation_resamples": permutation_resamples,
        "confidence_level": confidence_level, "method": method, "random_state": random_state,
        "permutation_exact": 2 ** n <= permutation_resamples,
    })


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------


def leaderboard_rows(comp: Comparison, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One flat row per system, best first by the first metric (the baseline keeps its place)."""
    labels = labels or {}
    first = comp.metrics[0]

    def key(name: str) -> float:
        v = comp.results[name][first].estimate.value
        return -v if math.isfinite(v) else math.inf

    rows = []
    for name in sorted(comp.systems, key=key):
        row: dict[str, Any] = {"run_id": name, "label": labels.get(name, name), "baseline": name == comp.baseline}
        for m in comp.metrics:
            r = comp.results[name][m]
            row.update({m: r.estimate.value, f"{m}_ci_low": r.estimate.low, f"{m}_ci_high": r.estimate.high,
                        f"{m}_delta": None if r.delta is None else r.delta.value,
                        f"{m}_delta_ci_low": None if r.delta is None else r.delta.low,
                        f"{m}_delta_ci_high": None if r.delta is None else r.delta.high,
                        f"{m}_p_value": r.p_value})
        rows.append(row)
    return rows


def leaderboard_csv(comp: Comparison, labels: Mapping[str, str] | None = None) -> str:
    """The rows of :func:`leaderboard_rows` as CSV (full precision; empty cells for the baseline)."""
    rows = leaderboard_rows(comp, labels)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def leaderboard_markdown(comp: Comparison, labels: Mapping[str, str] | None = None) -> str:
    """A Markdown leaderboard: value [CI], and per non-baseline run Δ vs baseline [CI] and p."""
    rows = leaderboard_rows(comp, labels)
    level = round(100 * comp.settings["confidence_level"])
    head = ["run"]
    for m in comp.metrics:
        head += [f"{m} [{level}% CI]", f"Δ{m} [{level}% CI]", "p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['label']}" + (" **(baseline)**" if row["baseline"] else "")]
        for m in comp.metrics:
            cells.append(f"{row[m]:.4f} [{row[f'{m}_ci_low']:.4f}, {row[f'{m}_ci_high']:.4f}]")
            if row["baseline"]:
                cells += ["—", "—"]
            else:
                cells.append(f"{row[f'{m}_delta']:+.4f} [{row[f'{m}_delta_ci_low']:+.4f}, "
                             f"{row[f'{m}_delta_ci_high']:+.4f}]")
                cells.append(_p(row[f"{m}_p_value"]))
        lines.append("| " + " | ".join(cells) + " |")
    s = comp.settings
    test = "exact" if s.get("permutation_exact") else f"{s['permutation_resamples']} random permutations"
    lines += [
        "",
        f"{comp.n_notes} {comp.split} notes. CIs: document-level bootstrap ({s['method']}, {s['n_resamples']} "
        f"resamples of notes, random_state={s['random_state']}); Δ = run − baseline on the same resamples. "
        f"p: two-sided paired permutation test against the baseline (systems swapped per note; {test}). "
        "p-values are not adjusted for multiple comparisons.",
        "",
    ]
    return "\n".join(lines)


def plot_comparison(comp: Comparison, labels: Mapping[str, str] | None = None) -> Figure:
    """One panel per metric: each run's value with its CI as a horizontal error bar.

    The baseline is drawn in another colour and its CI shaded across the panel, so a run whose
    bar sits inside the band is visibly not separated from it (the p-value says it properly).
    """
    rows = leaderboard_rows(comp, labels)[::-1]  # best at the top
    n_m = len(comp.metrics)
    fig = Figure(figsize=(4.0 * n_m, 0.45 * len(rows) + 1.6))
    axes = [fig.add_subplot(1, n_m, j + 1) for j in range(n_m)]
    ypos = np.arange(len(rows))
    for j, (ax, m) in enumerate(zip(axes, comp.metrics, strict=True)):
        values = np.array([r[m] for r in rows], dtype=float)
        low = np.array([r[f"{m}_ci_low"] for r in rows], dtype=float)
        high = np.array([r[f"{m}_ci_high"] for r in rows], dtype=float)
        err = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
        colors = ["C3" if r["baseline"] else "C0" for r in rows]
        for y, v, e0, e1, c in zip(ypos, values, err[0], err[1], colors, strict=True):
            ax.errorbar([v], [y], xerr=[[e0], [e1]], fmt="o", color=c, capsize=3)
        base = next(r for r in rows if r["baseline"])
        ax.axvspan(base[f"{m}_ci_low"], base[f"{m}_ci_high"], color="C3", alpha=0.12)
        ax.set_title(m)
        ax.set_yticks(ypos)
        ax.set_yticklabels([r["label"] for r in rows] if j == 0 else [""] * len(rows), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    level = round(100 * comp.settings["confidence_level"])
    fig.suptitle(f"{comp.split} ({comp.n_notes} notes): {level}% bootstrap CIs; red = baseline", fontsize=10)
    fig.tight_layout()
    return fig
