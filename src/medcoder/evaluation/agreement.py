"""Agreement statistics of the review loop: how often reviewers accept routed codes, and how much
two reviewers of the same note agree (Cohen's κ with a bootstrap interval).

Pure functions over plain values (no store, no MLflow), so the workbench's report page and the
``report`` action of ``scripts/review.py`` compute the same numbers, and a test can check them by
hand.

Why the bootstrap resamples *notes*, not codes: the codes of one note are decided together, by the
same reviewer reading the same text, so they are not independent; resampling codes would pretend
there is more evidence than there is and give too narrow an interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

__all__ = [
    "FREQUENCY_BINS",
    "AcceptanceRate",
    "KappaResult",
    "acceptance_rates",
    "frequency_bin",
    "kappa_with_ci",
]

#: Training-frequency bins of the report, as ``(label, low, high)`` with ``high`` inclusive
#: (None: unbounded). 0 is a code the model never saw in training.
FREQUENCY_BINS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1-9", 1, 9),
    ("10-49", 10, 49),
    ("50+", 50, None),
)
#: Final actions that count as a decision (``undecided`` rows are left out of every rate).
DECIDED = ("accept", "reject", "replace", "query")


def frequency_bin(frequency: int | None) -> str:
    """The bin label of a training frequency (``unknown`` when the bundle did not record it)."""
    if frequency is None:
        return "unknown"
    n = int(frequency)
    if n < 0:
        raise ValueError(f"frequency={n} must be >= 0 (a count of training notes)")
    for label, low, high in FREQUENCY_BINS:
        if n >= low and (high is None or n <= high):
            return label
    raise AssertionError("unreachable: the bins cover every count >= 0")  # pragma: no cover


@dataclass(frozen=True)
class AcceptanceRate:
    """How reviewers decided the routed codes of one group (a reason, a frequency bin).

    ``n``: decided codes (undecided ones are not counted); ``rate`` = ``n_accepted / n`` (None when
    nothing was decided); ``actions``: the count of each final action.
    """

    group: str
    n: int
    n_accepted: int
    rate: float | None
    actions: dict[str, int] = field(default_factory=dict)


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def acceptance_rates(rows: Iterable[Any], key: str | Callable[[Any], Any], *,
                     action: str = "action") -> dict[str, AcceptanceRate]:
    """The acceptance rate of routed codes per group.

    ``rows``: mappings or objects with a final ``action`` field (``accept``, ``reject``,
    ``replace``, ``query`` or ``undecided``). ``key``: a field name or a function giving the row's
    group; when it gives a list or tuple (a code's ``reasons``), the row counts once in each
    group named. Rows whose action is not a decision are skipped. Groups come back sorted.
    """
    get_key: Callable[[Any], Any] = (lambda r: _get(r, key)) if isinstance(key, str) else key
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        act = _get(row, action)
        if act not in DECIDED:
            continue
        groups = get_key(row)
        if isinstance(groups, (list, tuple, set, frozenset)):
            names = [str(g) for g in groups] or ["(none)"]
        else:
            names = [str(groups)]
        for name in dict.fromkeys(names):
            per = counts.setdefault(name, {})
            per[act] = per.get(act, 0) + 1
    out: dict[str, AcceptanceRate] = {}
    for name in sorted(counts):
        per = counts[name]
        n = sum(per.values())
        ok = per.get("accept", 0)
        out[name] = AcceptanceRate(name, n, ok, ok / n if n else None, dict(sorted(per.items())))
    return out


@dataclass(frozen=True)
class KappaResult:
    """Cohen's κ of two reviewers over the same items, with a percentile bootstrap interval over
    groups (notes). ``kappa`` is NaN when undefined (both gave one and the same label throughout);
    ``low``/``high`` are None when no bootstrap sample gave a finite κ."""

    kappa: float
    low: float | None
    high: float | None
    level: float
    n_items: int
    n_groups: int
    n_boot: int


def _kappa(a: np.ndarray, b: np.ndarray, labels: list[Any]) -> float:
    """κ, or NaN where it is undefined (both reviewers gave one and the same label throughout:
    chance agreement is 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's UndefinedMetricWarning / RuntimeWarning: we return NaN
        value = float(cohen_kappa_score(a, b, labels=labels))
    return value


def kappa_with_ci(a: Sequence[Hashable], b: Sequence[Hashable], *, groups: Sequence[Hashable] | None = None,
                  n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> KappaResult:
    """Cohen's κ between reviewer ``a`` and reviewer ``b`` (one label per item, same order), with a
    seeded percentile bootstrap interval that resamples whole ``groups`` (the note of each item;
    None: every item is its own group).

    Raises ``ValueError`` (one line) on mismatched lengths, no items, or a bad ``n_boot``/``level``.
    """
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} labels and b has {len(b)}: give one pair per item")
    if len(a) == 0:
        raise ValueError("no items: kappa needs at least one item decided by both reviewers")
    if groups is not None and len(groups) != len(a):
        raise ValueError(f"groups has {len(groups)} entries for {len(a)} items: give each item's note")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot={n_boot!r} must be an integer >= 0")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie strictly between 0 and 1")
    ya = np.asarray([str(x) for x in a], dtype=object)
    yb = np.asarray([str(x) for x in b], dtype=object)
    labels = sorted(set(ya.tolist()) | set(yb.tolist()))
    kappa = _kappa(ya, yb, labels)
    keys = list(range(len(a))) if groups is None else list(groups)
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(keys):
        members.setdefault(g, []).append(i)
    blocks = [np.asarray(ix) for ix in members.values()]
    rng = np.random.default_rng(seed)
    samples: list[float] = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(blocks), size=len(blocks))
        idx = np.concatenate([blocks[j] for j in pick])
        value = _kappa(ya[idx], yb[idx], labels)
        if math.isfinite(value):
            samples.append(value)
    low = high = None
    if samples:
        tail = (1.0 - level) / 2
        low, high = (float(v) for v in np.quantile(np.asarray(samples), [tail, 1.0 - tail]))
    return KappaResult(kappa=kappa, low=low, high=high, level=level, n_items=len(a), n_groups=len(blocks),
                       n_boot=n_boot)
