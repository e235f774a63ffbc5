"""Routing metrics on a labelled split (the ``test_auto_accept_*`` MLflow keys) and the
precision–coverage curve behind the τ plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medcoder.calibration.risk_control import precision_lower_bound

if TYPE_CHECKING:  # the policy module imports nothing from here; annotations only
    from medcoder.routing.policy import RoutingInputs, RoutingPolicy

__all__ = ["FRONTIER_TARGETS", "accept_frontier", "precision_coverage_curve", "routing_metrics"]

#: The lower targets :func:`accept_frontier` reports next to the configured one.
FRONTIER_TARGETS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)


def accept_frontier(policy: RoutingPolicy, calibration: RoutingInputs, y_calibration: np.ndarray,
                    evaluation: RoutingInputs, y_evaluation: np.ndarray, *, cal_name: str, eval_name: str,
                    targets: Sequence[float] = FRONTIER_TARGETS) -> list[dict[str, Any]]:
    """What other precision targets would certify (the policy's own LTT procedure on the same
    calibration split, :meth:`RoutingPolicy.certify`), and what each would accept on the
    evaluation split.

    A diagnostic for whoever sets ``routing.target_precision``; it never changes the policy. The
    evaluation columns are for reading only: choosing a target by looking at them would spend
    the test split.
    """
    if policy.targets is None:
        raise ValueError("accept_frontier needs a policy with targets")
    eligible_eval = policy.eligible_mask(evaluation)
    probs_eval = np.asarray(evaluation.probs, dtype=np.float64)
    rows = []
    for target in targets:
        res = policy.certify(calibration, y_calibration, policy.targets.with_target(target))
        accepted = eligible_eval & (probs_eval >= res.tau) if res.tau is not None else np.zeros_like(eligible_eval)
        n = int(accepted.sum())
        rows.append({
            "target_precision": target,
            "tau": None if res.tau is None else round(float(res.tau), 6),
            f"{cal_name}_n_auto_accepted": int(res.n_calibration_accepted),
            f"{eval_name}_n_auto_accepted": n,
            f"{eval_name}_auto_accept_precision":
                round(float((accepted & (np.asarray(y_evaluation) > 0)).sum() / n), 4) if n else None,
        })
    return rows


def routing_metrics(
    accept_mask: np.ndarray,
    predicted_mask: np.ndarray,
    y_true: np.ndarray,
    n_gold_per_doc: np.ndarray | None = None,
    delta: float = 0.1,
    reason_counts: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Auto-accept quality on one split; prefix keys with ``test_`` for MLflow.

    Keys:

    * ``auto_accept_precision`` — share of auto-accepted codes that are gold; **nan when nothing
      is accepted** (precision of an empty set is undefined, and 0 or 1 would both mislead);
    * ``auto_accept_precision_lower`` — one-sided Clopper–Pearson lower bound at ``1 − delta``
      (nan when nothing is accepted);
    * ``auto_accept_coverage`` — auto-accepted / predicted codes (nan with no predictions);
    * ``gold_auto_accepted`` — auto-accepted gold codes / all gold codes, counting gold codes
      outside the label space when ``n_gold_per_doc`` is given (else ``y_true.sum()``);
    * ``docs_fully_auto`` — share of *all* notes with ≥ 1 predicted code, every one accepted.
      Notes with no predicted code (including empty notes) count as not fully automatic: a coder
      must still look at them (see :func:`medcoder.routing.policy.document_decision`);
    * ``n_auto_accepted``, ``n_predicted``, ``n_docs`` and ``reason_<name>`` for each entry of
      ``reason_counts`` (from :meth:`RoutingPolicy.route_arrays`).
    """
    acc = np.asarray(accept_mask, dtype=bool)
    pred = np.asarray(predicted_mask, dtype=bool)
    y = np.asarray(y_true).astype(bool)
    if not (acc.shape == pred.shape == y.shape) or acc.ndim != 2:
        raise ValueError(f"2-D masks of equal shape expected: {acc.shape}, {pred.shape}, {y.shape}")
    if np.any(acc & ~pred):
        raise ValueError("accept_mask must be a subset of predicted_mask")
    n_acc = int(acc.sum())
    n_pred = int(pred.sum())
    tp_acc = int((acc & y).sum())
    n_gold = float(np.sum(n_gold_per_doc)) if n_gold_per_doc is not None else float(y.sum())
    n_docs = acc.shape[0]
    per_doc_pred = pred.sum(axis=1)
    fully = (per_doc_pred > 0) & (acc.sum(axis=1) == per_doc_pred)
    out: dict[str, float] = {
        "auto_accept_precision": tp_acc / n_acc if n_acc else float("nan"),
        "auto_accept_precision_lower": precision_lower_bound(tp_acc, n_acc, delta),
        "auto_accept_coverage": n_acc / n_pred if n_pred else float("nan"),
        "gold_auto_accepted": tp_acc / n_gold if n_gold > 0 else float("nan"),
        "docs_fully_auto": float(fully.sum()) / n_docs if n_docs else float("nan"),
        "n_auto_accepted": n_acc,
        "n_predicted": n_pred,
        "n_docs": n_docs,
    }
    for name, count in (reason_counts or {}).items():
        out[f"reason_{name}"] = int(count)
    return out


def precision_coverage_curve(
    probs: np.ndarray,
    y_true: np.ndarray,
    predicted_mask: np.ndarray,
    max_points: int = 1000,
) -> dict[str, Any]:
    """Precision and coverage of ``accept = predicted & probs >= τ`` for τ over the scores.

    ``coverage`` is the share of predicted codes accepted (as in ``auto_accept_coverage``).
    τ runs over the distinct predicted probabilities, high to low, thinned to ``max_points``
    evenly spaced by rank for plotting. Plain lists (JSON-ready).
    """
    p = np.asarray(probs, dtype=np.float64)
    m = np.asarray(predicted_mask, dtype=bool)
    s = p[m]
    correct = np.asarray(y_true).astype(bool)[m]
    if s.size == 0:
        return {"tau": [], "precision": [], "coverage": [], "n_accepted": [], "n_predicted": 0}
    order = np.argsort(-s, kind="mergesort")
    s_desc = s[order]
    tp = np.cumsum(correct[order])
    last = np.flatnonzero(np.r_[s_desc[1:] != s_desc[:-1], True])  # end of each tie group
    if last.size > max_points:
        last = last[np.unique(np.linspace(0, last.size - 1, max_points).round().astype(int))]
    n = last + 1
    return {
        "tau": [float(v) for v in s_desc[last]],
        "precision": [float(v) for v in tp[last] / n],
        "coverage": [float(v) for v in n / s.size],
        "n_accepted": [int(v) for v in n],
        "n_predicted": int(s.size),
    }
