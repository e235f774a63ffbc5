"""The routing policy: decision threshold + auto-accept threshold + rules -> decisions and reasons.

Every *predicted* code (probability ≥ its decision threshold) gets ``decision`` ``auto_accept``
or ``human_review`` and the list of ``reasons`` that sent it to review. A code is auto-accepted
only when its calibrated probability is ≥ ``tau_accept`` *and* no rule fires. Rules exist because
the statistical guarantee on τ covers the typical case, not known failure modes: rare codes
(confidence not learnable), invalid codes, Excludes1 conflicts (one of the two is wrong), notes the
model did not fully read, empty notes.

Two entry points share one implementation (:meth:`RoutingPolicy._masks`):

* :meth:`RoutingPolicy.route` — per-note :class:`CodeDecision` lists for the inference path;
* :meth:`RoutingPolicy.route_arrays` — boolean masks and reason counts for evaluation over
  thousands of notes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import simple_icd_10_cm as cm

from medcoder.calibration.risk_control import AcceptThresholdResult, select_accept_threshold
from medcoder.calibration.thresholds import DecisionThreshold
from medcoder.routing.excludes1 import conflict_matrix
from medcoder.routing.reasons import (
    ALL_REASONS,
    AUTO_ACCEPT,
    EMPTY_NOTE,
    EXCLUDES1_CONFLICT,
    HUMAN_REVIEW,
    INVALID_CODE,
    LOW_CONFIDENCE,
    NEW_CODE,
    RARE_CODE,
    TRUNCATED_NOTE,
)

__all__ = ["CodeDecision", "RoutingPolicy", "default_is_valid", "document_decision"]

ValidityFn = Callable[[str], bool]

# Code-level rules in the order reasons are listed (EMPTY_NOTE is document-level).
_CODE_RULES: tuple[str, ...] = tuple(r for r in ALL_REASONS if r != EMPTY_NOTE)


def default_is_valid(code: str) -> bool:
    """Validity in the ICD-10-CM release shipped with ``simple-icd-10-cm``.

    That package ships one release (April 2026 update, fiscal year 2026). For another fiscal year
    set ``RoutingPolicy(codeset_fy=...)`` (or pass a ``validity_fn`` to :meth:`RoutingPolicy.route`).
    """
    try:
        return bool(cm.is_valid_item(code.strip()))
    except Exception:  # noqa: BLE001 - malformed input is simply not valid
        return False


@dataclass
class CodeDecision:
    """Routing outcome for one predicted code of one note."""

    code: str
    probability: float
    decision: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_decision(code_decisions: Sequence[CodeDecision], empty: bool) -> tuple[str, list[str]]:
    """Document-level decision: ``auto_accept`` only if the note has ≥ 1 predicted code and
    every one is auto-accepted.

    * empty note -> ``("human_review", ["empty_note"])``;
    * no predicted code on a non-empty note -> ``("human_review", ["low_confidence"])``: nothing
      reached the decision threshold, and "no codes" is not a result to file unreviewed;
    * otherwise the union of the codes' reasons, in :data:`ALL_REASONS` order.
    """
    if empty:
        return HUMAN_REVIEW, [EMPTY_NOTE]
    if not code_decisions:
        return HUMAN_REVIEW, [LOW_CONFIDENCE]
    if all(d.decision == AUTO_ACCEPT for d in code_decisions):
        return AUTO_ACCEPT, []
    seen = {r for d in code_decisions for r in d.reasons}
    return HUMAN_REVIEW, [r for r in ALL_REASONS if r in seen]


class RoutingPolicy:
    """Decision threshold + auto-accept threshold + rules (see module docstring).

    Parameters
    ----------
    tau_accept:
        Calibrated-probability bar for auto-acceptance, normally set by
        :meth:`fit_accept_threshold`. ``None`` means no threshold could be certified: nothing is
        auto-accepted and every predicted code carries ``low_confidence``.
    decision_threshold:
        A fitted :class:`DecisionThreshold` deciding which codes are predicted at all.
    min_train_count:
        Codes with fewer training examples than this get ``rare_code``.
    check_excludes1, check_validity:
        Switch the Excludes1 and validity rules off (e.g. for non-ICD-10-CM label spaces).
    policy_version:
        Recorded in every prediction's audit fields.
    codeset_fy:
        ICD-10-CM fiscal year of the label space (the bundle's ``labels.json``). When set,
        ``invalid_code`` checks validity in that year (:func:`medcoder.codesets.load_codeset`)
        and ``new_code`` fires for codes added that year (absent in ``codeset_fy - 1``, when both
        years are available) with fewer than ``min_train_count`` training examples. ``None``:
        validity in ``simple-icd-10-cm``'s FY2026 (:func:`default_is_valid`), no ``new_code``.

    Fitted state (after :meth:`fit_accept_threshold`): ``accept_result_``.
    """

    def __init__(
        self,
        tau_accept: float | None,
        decision_threshold: DecisionThreshold,
        min_train_count: int = 10,
        check_excludes1: bool = True,
        check_validity: bool = True,
        policy_version: str = "1",
        codeset_fy: int | None = None,
    ) -> None:
        self.tau_accept = tau_accept
        self.decision_threshold = decision_threshold
        self.min_train_count = min_train_count
        self.check_excludes1 = check_excludes1
        self.check_validity = check_validity
        self.policy_version = policy_version
        self.codeset_fy = None if codeset_fy is None else int(codeset_fy)

    # --- core ----------------------------------------------------------------------------------
    def _masks(
        self,
        probs: np.ndarray,
        label_codes: Sequence[str],
        train_frequency: Mapping[str, int],
        truncated: np.ndarray | None,
        empty: np.ndarray | None,
        validity_fn: ValidityFn | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Predicted mask, one mask per code-level reason (subset of predicted), empty rows."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(label_codes):
            raise ValueError(
                f"probs must be (n_docs, {len(label_codes)}) to match label_codes, got {p.shape}"
            )
        n_docs = p.shape[0]
        empty_rows = (
            np.zeros(n_docs, dtype=bool) if empty is None else np.asarray(empty, dtype=bool)
        )
        trunc_rows = (
            np.zeros(n_docs, dtype=bool) if truncated is None else np.asarray(truncated, dtype=bool)
        )
        if empty_rows.shape != (n_docs,) or trunc_rows.shape != (n_docs,):
            raise ValueError("truncated/empty must be 1-D boolean arrays with one entry per note")

        predicted = self.decision_threshold.predict(p) & ~empty_rows[:, None]
        reasons: dict[str, np.ndarray] = {}
        if self.tau_accept is None:
            reasons[LOW_CONFIDENCE] = predicted.copy()
        else:
            reasons[LOW_CONFIDENCE] = predicted & (p < float(self.tau_accept))
        rare_cols = np.array(
            [int(train_frequency.get(c, 0)) < self.min_train_count for c in label_codes],
            dtype=bool,
        )
        reasons[RARE_CODE] = predicted & rare_cols[None, :]
        excl = np.zeros_like(predicted)
        if self.check_excludes1 and predicted.any():
            conflicts = conflict_matrix(tuple(label_codes))
            if conflicts.nnz:
                # a predicted code conflicts when any other predicted code is its Excludes1 partner
                hits = np.asarray(conflicts @ predicted.T.astype(np.int32)).T
                excl = predicted & (hits > 0)
        reasons[EXCLUDES1_CONFLICT] = excl
        if self.check_validity:
            is_valid = validity_fn or self._codeset_validity() or default_is_valid
            invalid_cols = np.array([not is_valid(c) for c in label_codes], dtype=bool)
        else:
            invalid_cols = np.zeros(len(label_codes), dtype=bool)
        reasons[INVALID_CODE] = predicted & invalid_cols[None, :]
        reasons[TRUNCATED_NOTE] = predicted & trunc_rows[:, None]
        new_cols = self._new_code_columns(label_codes) & rare_cols
        reasons[NEW_CODE] = predicted & new_cols[None, :]
        return predicted, {r: reasons[r] for r in _CODE_RULES}, empty_rows

    def _codeset_validity(self) -> ValidityFn | None:
        """``is_valid`` of the policy's fiscal year, or None to keep the FY2026 default."""
        if self.codeset_fy is None:
            return None
        from medcoder.codesets import load_codeset  # lazy: building a year costs ~1 s

        return load_codeset(self.codeset_fy).is_valid

    def _new_code_columns(self, label_codes: Sequence[str]) -> np.ndarray:
        """Label columns whose code is new in ``codeset_fy`` (False everywhere when the year or the
        year before is unavailable: "new" cannot be known, and other rules still apply)."""
        none = np.zeros(len(label_codes), dtype=bool)
        if self.codeset_fy is None:
            return none
        from medcoder.codesets import is_available, load_codeset

        if not (is_available(self.codeset_fy) and is_available(self.codeset_fy - 1)):
            return none
        current, previous = load_codeset(self.codeset_fy), load_codeset(self.codeset_fy - 1)
        return np.array([current.is_valid(c) and not previous.is_valid(c) for c in label_codes], dtype=bool)

    def route_arrays(
        self,
        probs: np.ndarray,
        label_codes: Sequence[str],
        train_frequency: Mapping[str, int],
        truncated: np.ndarray | None = None,
        empty: np.ndarray | None = None,
        validity_fn: ValidityFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Vectorised routing for evaluation: ``(predicted_mask, accept_mask, reason_counts)``.

        ``reason_counts[name]`` is the number of predicted codes carrying that reason, except
        ``empty_note``, which counts notes (an empty note has no predicted codes).
        """
        predicted, reasons, empty_rows = self._masks(
            probs, label_codes, train_frequency, truncated, empty, validity_fn
        )
        blocked = np.zeros_like(predicted)
        for m in reasons.values():
            blocked |= m
        accept = predicted & ~blocked
        counts = {r: int(m.sum()) for r, m in reasons.items()}
        counts[EMPTY_NOTE] = int(empty_rows.sum())
        return predicted, accept, {r: counts[r] for r in ALL_REASONS}

    def eligible_mask(
        self,
        probs: np.ndarray,
        label_codes: Sequence[str],
        train_frequency: Mapping[str, int],
        truncated: np.ndarray | None = None,
        empty: np.ndarray | None = None,
        validity_fn: ValidityFn | None = None,
    ) -> np.ndarray:
        """Predicted codes that no rule other than ``low_confidence`` blocks.

        These are the codes τ_accept decides about, so τ is calibrated on exactly this set and
        the precision guarantee is about what the policy will actually accept.
        """
        predicted, reasons, _ = self._masks(
            probs, label_codes, train_frequency, truncated, empty, validity_fn
        )
        blocked = np.zeros_like(predicted)
        for r, m in reasons.items():
            if r != LOW_CONFIDENCE:
                blocked |= m
        return predicted & ~blocked

    def fit_accept_threshold(
        self,
        probs: np.ndarray,
        y_true: np.ndarray,
        label_codes: Sequence[str],
        train_frequency: Mapping[str, int],
        truncated: np.ndarray | None = None,
        empty: np.ndarray | None = None,
        *,
        target_precision: float = 0.95,
        delta: float = 0.1,
        validity_fn: ValidityFn | None = None,
    ) -> AcceptThresholdResult:
        """Choose ``tau_accept`` on the calibration split (LTT; see
        :func:`medcoder.calibration.risk_control.select_accept_threshold`) and store it.

        Sets ``tau_accept`` (None when infeasible) and ``accept_result_``; returns the result,
        whose ``message`` the calling script should log as is.
        """
        elig = self.eligible_mask(
            probs, label_codes, train_frequency, truncated, empty, validity_fn
        )
        result = select_accept_threshold(
            probs, y_true, elig, target_precision=target_precision, delta=delta
        )
        self.tau_accept = result.tau
        self.accept_result_ = result
        return result

    def route(
        self,
        probs: np.ndarray,
        label_codes: Sequence[str],
        train_frequency: Mapping[str, int],
        truncated: np.ndarray | None = None,
        empty: np.ndarray | None = None,
        validity_fn: ValidityFn | None = None,
    ) -> list[list[CodeDecision]]:
        """Per note, the predicted codes (highest probability first) with decision and reasons.

        Empty notes get an empty list; use :func:`document_decision` for the note's decision.
        """
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim == 1:
            p = p[None, :]
        predicted, reasons, _ = self._masks(
            p, label_codes, train_frequency, truncated, empty, validity_fn
        )
        out: list[list[CodeDecision]] = []
        for i in range(p.shape[0]):
            cols = np.flatnonzero(predicted[i])
            cols = cols[np.argsort(-p[i, cols], kind="mergesort")]
            row: list[CodeDecision] = []
            for j in cols:
                rs = [r for r in _CODE_RULES if reasons[r][i, j]]
                row.append(
                    CodeDecision(
                        code=label_codes[j],
                        probability=float(p[i, j]),
                        decision=HUMAN_REVIEW if rs else AUTO_ACCEPT,
                        reasons=rs,
                    )
                )
            out.append(row)
        return out

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for ``calibration.json`` (includes the LTT result once fitted)."""
        d: dict[str, Any] = {
            "policy_version": str(self.policy_version),
            "tau_accept": None if self.tau_accept is None else float(self.tau_accept),
            "min_train_count": int(self.min_train_count),
            "check_excludes1": bool(self.check_excludes1),
            "check_validity": bool(self.check_validity),
            "decision_threshold": self.decision_threshold.to_dict(),
            "codeset_fy": self.codeset_fy,
        }
        if hasattr(self, "accept_result_"):
            d["accept_result"] = self.accept_result_.to_dict(include_grid=False)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoutingPolicy:
        obj = cls(
            tau_accept=d["tau_accept"],
            decision_threshold=DecisionThreshold.from_dict(d["decision_threshold"]),
            min_train_count=d.get("min_train_count", 10),
            check_excludes1=d.get("check_excludes1", True),
            check_validity=d.get("check_validity", True),
            policy_version=d.get("policy_version", "1"),
            codeset_fy=d.get("codeset_fy"),
        )
        if "accept_result" in d:
            ar = dict(d["accept_result"])
            obj.accept_result_ = AcceptThresholdResult.from_dict(ar)
        return obj

    def __repr__(self) -> str:
        return (
            f"RoutingPolicy(tau_accept={self.tau_accept!r}, decision_threshold="
            f"{self.decision_threshold!r}, min_train_count={self.min_train_count!r}, "
            f"check_excludes1={self.check_excludes1!r}, check_validity={self.check_validity!r}, "
            f"policy_version={self.policy_version!r}, codeset_fy={self.codeset_fy!r})"
        )
