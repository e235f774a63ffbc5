"""Decision thresholds: whether a code is predicted at all.

This is a different question from auto-acceptance. The decision threshold trades precision for
recall of the *suggestions* a coder sees (tuned for F1, as the medical-coding literature does —
e.g. Edin et al. 2023 tune one global threshold on dev); the auto-accept threshold
(:mod:`medcoder.calibration.risk_control`) is a much stricter bar with a statistical guarantee.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from medcoder.calibration.stored import (
    HINT,
    stored_bools,
    stored_mapping,
    stored_number,
    stored_numbers,
    stored_params,
)
from medcoder.constraints import Constraint, int_at_least, one_of, validate
from medcoder.errors import BundleError
from medcoder.evaluation.metrics import f1_optimal_threshold

__all__ = ["DecisionThreshold", "f1_optimal_threshold"]

_DEFAULT_THRESHOLD = 0.5


class DecisionThreshold:
    """F1-optimal decision threshold(s) on calibrated probabilities.

    ``mode="global"``: one threshold over all (note, code) pairs (micro-F1 optimal).
    ``mode="per_code"``: each code's own F1-optimal threshold, but codes with fewer than
    ``min_positives`` dev positives fall back to the global threshold — a per-code optimum over 2
    positives is noise and tends to an extreme value.

    Fitted state: ``global_threshold_``, ``thresholds_`` (one per code; all equal in global
    mode), ``per_code_`` (which codes use their own threshold).
    """

    #: Valid ranges (read by the config checks too: one source per rule).
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "mode": Constraint(one_of("global", "per_code"), "global or per_code"),
        "min_positives": Constraint(int_at_least(1), "an integer >= 1"),
    }

    def __init__(self, mode: str = "global", min_positives: int = 5) -> None:
        validate("calibration.decision_threshold", {"mode": mode, "min_positives": min_positives},
                 self.parameter_constraints)
        self.mode = mode
        self.min_positives = min_positives

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "thresholds_")

    def get_params(self) -> dict[str, Any]:
        return {"mode": self.mode, "min_positives": int(self.min_positives)}

    def fit(self, probs: np.ndarray, y_true: np.ndarray) -> DecisionThreshold:
        p = np.asarray(probs, dtype=np.float64)
        y = np.asarray(y_true, dtype=np.float64)
        if p.ndim != 2 or p.shape != y.shape:
            raise ValueError(f"probs {p.shape} and y_true {y.shape} must be equal 2-D shapes")
        g, _ = f1_optimal_threshold(p, y)
        thresholds = np.full(p.shape[1], g)
        per_code = np.zeros(p.shape[1], dtype=bool)
        if self.mode == "per_code":
            pos = y.sum(axis=0)
            for j in np.flatnonzero(pos >= self.min_positives):
                thresholds[j], _ = f1_optimal_threshold(p[:, j], y[:, j])
                per_code[j] = True
        self.global_threshold_ = float(g)
        self.thresholds_ = thresholds
        self.per_code_ = per_code
        return self

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Boolean mask of predicted codes, ``probs >= threshold`` per column."""
        if not hasattr(self, "thresholds_"):
            raise RuntimeError("DecisionThreshold is not fitted; call fit() first")
        p = np.asarray(probs, dtype=np.float64)
        if p.shape[-1] != self.thresholds_.shape[0]:
            raise ValueError(
                f"DecisionThreshold was fitted on {self.thresholds_.shape[0]} codes, got {p.shape[-1]}"
            )
        return p >= self.thresholds_

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"params": self.get_params()}
        if hasattr(self, "thresholds_"):
            d["state"] = {
                "global_threshold": float(self.global_threshold_),
                "thresholds": [float(t) for t in self.thresholds_],
                "per_code": [bool(b) for b in self.per_code_],
            }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, field: str = "decision_threshold") -> DecisionThreshold:
        """Inverse of :meth:`to_dict`. Every stored value is checked (:mod:`.stored`): thresholds
        are probabilities, finite and in [0, 1], with one ``per_code`` flag each; anything else is
        a one-line ``BundleError`` naming ``field`` (e.g. ``policy.decision_threshold.state.thresholds[3]``)."""
        d = stored_mapping(field, d)
        obj = stored_params(f"{field}.params", cls, d.get("params", {}))
        state = d.get("state")
        if state:
            state = stored_mapping(f"{field}.state", state)
            where = f"{field}.state"
            for key in ("global_threshold", "thresholds", "per_code"):
                if key not in state:
                    raise BundleError(f"{where}.{key} is missing", hint=HINT)
            obj.global_threshold_ = stored_number(f"{where}.global_threshold", state["global_threshold"], low=0.0,
                                                  high=1.0)
            obj.thresholds_ = stored_numbers(f"{where}.thresholds", state["thresholds"], low=0.0, high=1.0)
            obj.per_code_ = stored_bools(f"{where}.per_code", state["per_code"], length=obj.thresholds_.shape[0])
        return obj

    def for_codes(self, n_labels: int) -> DecisionThreshold:
        """The fitted global threshold, over a label space of ``n_labels`` codes (in place): a
        refitted model's codes (``certification.refit``) are not the tuning model's it was fitted
        on. Only a global threshold carries over; a per-code one belongs to its own codes."""
        if not self.is_fitted:
            raise RuntimeError("DecisionThreshold is not fitted; call fit() first")
        if self.mode != "global":
            raise ValueError(f"a {self.mode} decision threshold cannot move to other codes; use mode=global")
        self.thresholds_ = np.full(int(n_labels), self.global_threshold_)
        self.per_code_ = np.zeros(int(n_labels), dtype=bool)
        return self

    @classmethod
    def fixed(
        cls, thresholds: float | np.ndarray, n_labels: int | None = None
    ) -> DecisionThreshold:
        """A pre-set threshold (no fitting) — for tests and for hand-set policies."""
        obj = cls(mode="global")
        t = np.asarray(thresholds, dtype=np.float64)
        if t.ndim == 0:
            if n_labels is None:
                raise ValueError("n_labels is required with a scalar threshold")
            t = np.full(n_labels, float(t))
        obj.global_threshold_ = float(np.median(t)) if t.size else _DEFAULT_THRESHOLD
        obj.thresholds_ = t
        obj.per_code_ = np.zeros(t.shape[0], dtype=bool)
        return obj

    def __repr__(self) -> str:
        return f"DecisionThreshold(mode={self.mode!r}, min_positives={self.min_positives!r})"
