"""The routing policy: decision threshold + auto-accept threshold + rules -> decisions and reasons.

Every *predicted* code (probability ≥ its decision threshold) gets ``decision`` ``auto_accept``
or ``human_review`` and the list of ``reasons`` that sent it to review. A code is auto-accepted
only when its calibrated probability is ≥ the accept threshold τ *and* no rule fires. Rules exist
because the statistical guarantee on τ covers the typical case, not known failure modes: rare
codes (confidence not learnable), invalid codes, Excludes1 conflicts (one of the two is wrong),
notes the model did not fully read, empty notes.

The rules are a table, :data:`RULES`: one ``reason -> predicate`` entry per code-level reason, in
the order reasons are listed. Adding a rule is adding a reason name (:mod:`.reasons`) and an entry.
Code-set facts (validity, Excludes1 partners, what is new this year) come from the policy's
:class:`~medcoder.codesets.CodeSet`: one source of code-set truth for routing, migration and diffs.

One population: every rule, ``no_evidence`` included, is a row of :data:`RULES`, and every caller
routes through :meth:`RoutingPolicy._masks`: Learn-then-Test certifies τ on :meth:`eligible_mask`,
calibration evaluates with :meth:`route_arrays`, ``Coder.predict`` decides with :meth:`route`. For
scored notes the inputs (flags included) come from one builder,
:func:`medcoder.inference.coder.routing_inputs`, so the codes certification counts are the codes the
bundle accepts (``tests/integration/test_one_population.py`` checks the equality).

Two entry points share one implementation (:meth:`RoutingPolicy._masks`):

* :meth:`RoutingPolicy.route` — per-note :class:`CodeDecision` lists for the inference path;
* :meth:`RoutingPolicy.route_arrays` — boolean masks and reason counts for evaluation over
  thousands of notes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from medcoder.calibration.risk_control import (
    AcceptThresholdResult,
    RiskTargets,
    select_accept_threshold,
)
from medcoder.calibration.stored import HINT as STORED_HINT
from medcoder.calibration.stored import stored_mapping, stored_number, stored_params
from medcoder.calibration.thresholds import DecisionThreshold
from medcoder.codesets import CodeSet, is_available, load_codeset
from medcoder.constraints import Constraint, int_at_least, is_bool, validate
from medcoder.errors import BundleError
from medcoder.registry import Registry
from medcoder.routing.reasons import (
    ALL_REASONS,
    AUDIT_ALARM,
    AUDIT_STATUS_UNREADABLE,
    AUTO_ACCEPT,
    EMPTY_NOTE,
    EXCLUDES1_CONFLICT,
    HOLDS,
    HUMAN_REVIEW,
    INVALID_CODE,
    LOW_CONFIDENCE,
    NEGATED_MENTION,
    NEW_CODE,
    NO_EVIDENCE,
    RARE_CODE,
    SIBLING_CONFLICT,
    TRUNCATED_NOTE,
)

__all__ = ["DEFAULT_CODESET_FY", "DEFAULT_EVIDENCE_TOP_K", "RULES", "CodeDecision", "RoutingContext", "RoutingInputs", "RoutingPolicy",
           "document_decision"]

DEFAULT_CODESET_FY = 2026
"""Year whose validity and Excludes1 notes apply when a policy names no year (labels.json of
bundles written before the code-set year was recorded)."""

DEFAULT_EVIDENCE_TOP_K = 3
"""Attended positions per code the neural view turns into evidence spans (``evidence_top_k``): what
the ``no_evidence`` rule looks at, so calibration certifies τ with it and ``Coder.predict`` uses it
by default (recorded in ``calibration.json``'s policy). 3 is the value ``Coder.predict`` always
used; policies written before it was recorded were certified (and predicted) with it."""


@dataclass(frozen=True)
class RoutingInputs:
    """What the policy routes: calibrated probabilities ``(n_docs, n_codes)`` over ``label_codes``,
    each code's training frequency, and per note whether it was ``truncated`` / ``empty``, plus the
    views' per-(note, code) ``flags`` named by reason. One type, so calibration (certifying τ),
    its evaluation and ``Coder.predict`` hand the policy the same facts in the same shape."""

    probs: np.ndarray
    label_codes: Sequence[str]
    train_frequency: Mapping[str, int]
    truncated: np.ndarray | None = None
    empty: np.ndarray | None = None
    flags: Mapping[str, np.ndarray] | None = None
    hold: str | None = None
    """A hold on the whole bundle (one of :data:`~medcoder.routing.reasons.HOLDS`): every predicted
    code goes to review with this reason. Set only by the inference path from the bundle's audit
    status (``Coder.predict``); calibration and certification never set it."""


@dataclass(frozen=True)
class RoutingContext:
    """What a rule may look at for one batch of notes (arrays are ``(n_docs, n_codes)`` unless
    noted); built once per call by :meth:`RoutingPolicy._masks`."""

    probs: np.ndarray
    predicted: np.ndarray
    label_codes: tuple[str, ...]
    rare_cols: np.ndarray  # (n_codes,) fewer than min_train_count training notes
    truncated_rows: np.ndarray  # (n_docs,)
    tau: float | None
    codeset: CodeSet
    new_cols: np.ndarray  # (n_codes,) valid this year, absent the year before (False if unknown)
    check_excludes1: bool
    check_validity: bool
    check_negated_mention: bool = False
    check_sibling_conflict: bool = False
    flags: Mapping[str, np.ndarray] = field(default_factory=dict)  # (n_docs, n_codes) from the views
    hold: str | None = None  # a hold on the whole bundle (RoutingInputs.hold)


def _low_confidence(ctx: RoutingContext) -> np.ndarray:
    if ctx.tau is None:  # no τ could be certified: nothing is accepted
        return ctx.predicted.copy()
    return ctx.predicted & (ctx.probs < float(ctx.tau))


def _rare_code(ctx: RoutingContext) -> np.ndarray:
    return ctx.predicted & ctx.rare_cols[None, :]


def _excludes1_conflict(ctx: RoutingContext) -> np.ndarray:
    if not ctx.check_excludes1 or not ctx.predicted.any():
        return np.zeros_like(ctx.predicted)
    conflicts = ctx.codeset.conflict_matrix(ctx.label_codes)
    if not conflicts.nnz:
        return np.zeros_like(ctx.predicted)
    # a predicted code conflicts when any other predicted code is its Excludes1 partner
    hits = np.asarray(conflicts @ ctx.predicted.T.astype(np.int32)).T
    return ctx.predicted & (hits > 0)


def _invalid_code(ctx: RoutingContext) -> np.ndarray:
    if not ctx.check_validity:
        return np.zeros_like(ctx.predicted)
    invalid_cols = np.array([not ctx.codeset.is_valid(c) for c in ctx.label_codes], dtype=bool)
    return ctx.predicted & invalid_cols[None, :]


def _truncated_note(ctx: RoutingContext) -> np.ndarray:
    return ctx.predicted & ctx.truncated_rows[:, None]


def _new_code(ctx: RoutingContext) -> np.ndarray:
    # Every predicted code new in the policy's year, rare or not: coders (and the labels the model
    # learned from) are only starting to use it. Before issue 19 it fired as ``new & rare``, so
    # ``rare_code`` always fired with it and it could never change a decision.
    return ctx.predicted & ctx.new_cols[None, :]


def _negated_mention(ctx: RoutingContext) -> np.ndarray:
    negated = ctx.flags.get(NEGATED_MENTION)
    if not ctx.check_negated_mention or negated is None:
        return np.zeros_like(ctx.predicted)
    return ctx.predicted & np.asarray(negated, dtype=bool)


def _sibling_conflict(ctx: RoutingContext) -> np.ndarray:
    if not ctx.check_sibling_conflict or not ctx.predicted.any():
        return np.zeros_like(ctx.predicted)
    category = np.array([c.replace(".", "")[:3] for c in ctx.label_codes])
    _, group = np.unique(category, return_inverse=True)
    onehot = np.zeros((len(category), group.max() + 1), dtype=np.int32)
    onehot[np.arange(len(category)), group] = 1
    per_category = ctx.predicted.astype(np.int32) @ onehot  # predicted codes per category, per note
    return ctx.predicted & (per_category[:, group] > 1)


def _no_evidence(ctx: RoutingContext) -> np.ndarray:
    # The flag marks the predicted codes for which no view gave a span of the note
    # (medcoder.modeling.hybrid.evidence_flags, computed for every predicted code by the one builder
    # of scored notes' inputs, medcoder.inference.coder.routing_inputs: Coder.predict, calibration's
    # certification and its test evaluation alike). Inputs built without it (unit tests, arrays of
    # bare probabilities) carry no evidence facts, and the rule has nothing to say about them.
    missing = ctx.flags.get(NO_EVIDENCE)
    return np.zeros_like(ctx.predicted) if missing is None else ctx.predicted & np.asarray(missing, dtype=bool)


def _hold(reason: str) -> Callable[[RoutingContext], np.ndarray]:
    """The rule of one bundle-wide hold: every predicted code while the inputs carry it. Why a row
    of the table and not a special case in ``Coder``: a suspended bundle then routes, counts and
    lists its reason exactly like every other rule, in every caller."""

    def rule(ctx: RoutingContext) -> np.ndarray:
        return ctx.predicted.copy() if ctx.hold == reason else np.zeros_like(ctx.predicted)

    rule.__name__ = f"_{reason}"
    return rule


Rule = Callable[[RoutingContext], np.ndarray]
RULES: Registry[Rule] = Registry("routing rule", {
    LOW_CONFIDENCE: _low_confidence,
    RARE_CODE: _rare_code,
    EXCLUDES1_CONFLICT: _excludes1_conflict,
    INVALID_CODE: _invalid_code,
    TRUNCATED_NOTE: _truncated_note,
    NEW_CODE: _new_code,
    NEGATED_MENTION: _negated_mention,
    SIBLING_CONFLICT: _sibling_conflict,
    NO_EVIDENCE: _no_evidence,
    AUDIT_ALARM: _hold(AUDIT_ALARM),
    AUDIT_STATUS_UNREADABLE: _hold(AUDIT_STATUS_UNREADABLE),
})
"""Code-level rules, reason -> predicate (medcoder.registry: one registration style), in the order
reasons are listed; each predicate returns the predicted codes the reason applies to.
``empty_note`` is document-level (an empty note predicts nothing)."""

_CODE_RULES: tuple[str, ...] = tuple(RULES)


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

    scikit-learn conventions: parameters are stored as given; :meth:`fit_accept_threshold` learns
    ``tau_accept_`` (and ``accept_result_``) without touching the ``tau_accept`` parameter.

    Parameters
    ----------
    decision_threshold:
        A fitted :class:`DecisionThreshold` deciding which codes are predicted at all.
    tau_accept:
        A τ set by hand (e.g. a policy loaded from ``calibration.json``). ``None`` with no fitted
        ``tau_accept_``: nothing is auto-accepted and every predicted code carries
        ``low_confidence``.
    min_train_count:
        Codes with fewer training examples than this get ``rare_code``.
    check_excludes1, check_validity:
        Switch the Excludes1 and validity rules off (e.g. for non-ICD-10-CM label spaces).
    policy_version:
        Recorded in every prediction's audit fields.
    codeset_fy:
        ICD-10-CM fiscal year of the label space (the bundle's ``labels.json``). ``invalid_code``
        and ``excludes1_conflict`` ask that year's :class:`CodeSet`, and ``new_code`` fires for
        codes added that year (absent in ``codeset_fy - 1``, when both years are available), rare
        or frequent. ``None``: FY2026's rules (:data:`DEFAULT_CODESET_FY`), no ``new_code``.
    codeset:
        The :class:`CodeSet` itself, when the caller has it (e.g. loaded from an order file);
        otherwise it is loaded on first use with :func:`medcoder.codesets.load_codeset`.
    targets:
        The :class:`~medcoder.calibration.risk_control.RiskTargets` that :meth:`fit` certifies τ
        at (recorded in ``calibration.json``).
    check_negated_mention, check_sibling_conflict:
        Switch on the ``negated_mention`` rule (needs the dictionary view's flag, passed as
        ``flags``) and the ``sibling_conflict`` rule. Off by default; README says what each was
        measured to do on CodiEsp.
    evidence_top_k:
        How many attended positions per code the neural view turns into evidence when notes are
        scored for routing (:data:`DEFAULT_EVIDENCE_TOP_K`): the evidence the ``no_evidence`` rule
        sees. Calibration scores its splits with it and records it; ``Coder.predict`` uses it
        unless told otherwise (another value routes another population than the certified one).
    """

    #: Valid ranges (read by the config checks too: one source per rule).
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "min_train_count": Constraint(int_at_least(0), "an integer >= 0"),
        "check_excludes1": Constraint(is_bool, "true or false"),
        "check_validity": Constraint(is_bool, "true or false"),
        "check_negated_mention": Constraint(is_bool, "true or false"),
        "check_sibling_conflict": Constraint(is_bool, "true or false"),
        "evidence_top_k": Constraint(int_at_least(0), "an integer >= 0 (0: no evidence, nothing auto-accepted)"),
    }

    def __init__(
        self,
        tau_accept: float | None = None,
        decision_threshold: DecisionThreshold | None = None,
        min_train_count: int = 10,
        check_excludes1: bool = True,
        check_validity: bool = True,
        policy_version: str = "1",
        codeset_fy: int | None = None,
        codeset: CodeSet | None = None,
        check_negated_mention: bool = False,
        check_sibling_conflict: bool = False,
        targets: RiskTargets | None = None,
        evidence_top_k: int = DEFAULT_EVIDENCE_TOP_K,
    ) -> None:
        if decision_threshold is None:
            raise ValueError("RoutingPolicy needs a fitted decision_threshold")
        self.tau_accept = tau_accept
        self.decision_threshold = decision_threshold
        self.min_train_count = min_train_count
        self.check_excludes1 = check_excludes1
        self.check_validity = check_validity
        self.policy_version = policy_version
        self.codeset_fy = codeset.fiscal_year if codeset_fy is None and codeset is not None else (
            None if codeset_fy is None else int(codeset_fy))
        self.codeset = codeset
        self.check_negated_mention = check_negated_mention
        self.check_sibling_conflict = check_sibling_conflict
        self.targets = targets
        self.evidence_top_k = evidence_top_k
        validate("routing", {"min_train_count": min_train_count, "check_excludes1": check_excludes1,
                             "check_validity": check_validity, "check_negated_mention": check_negated_mention,
                             "check_sibling_conflict": check_sibling_conflict, "evidence_top_k": evidence_top_k},
                 self.parameter_constraints)

    @property
    def threshold(self) -> float | None:
        """The τ in force: the fitted ``tau_accept_`` if any, else the ``tau_accept`` parameter."""
        return self.tau_accept_ if hasattr(self, "tau_accept_") else self.tau_accept

    def get_codeset(self) -> CodeSet:
        """The policy's code set (loaded and cached per process on first use)."""
        if self.codeset is None:
            self.codeset = load_codeset(DEFAULT_CODESET_FY if self.codeset_fy is None else self.codeset_fy)
        return self.codeset

    # --- core ----------------------------------------------------------------------------------
    def predicted_mask(self, probs: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
        """The codes the policy routes at all: at or above the decision threshold, on non-empty
        notes. Every auto-accepted code is among them, so a per-code fact computed for exactly these
        codes (the ``no_evidence`` flag) is complete for every decision the rules take."""
        p = np.asarray(probs, dtype=np.float64)
        predicted = self.decision_threshold.predict(p)
        return predicted if empty is None else predicted & ~np.asarray(empty, dtype=bool)[:, None]

    def _masks(self, inputs: RoutingInputs) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Predicted mask, one mask per code-level reason (subset of predicted), empty rows."""
        probs, label_codes, train_frequency = inputs.probs, inputs.label_codes, inputs.train_frequency
        truncated, empty, flags = inputs.truncated, inputs.empty, inputs.flags
        if inputs.hold is not None and inputs.hold not in HOLDS:
            raise ValueError(f"hold={inputs.hold!r} is not a bundle hold (expected None or one of {list(HOLDS)})")
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(label_codes):
            raise ValueError(
                f"probs must be (n_docs, {len(label_codes)}) to match label_codes, got {p.shape}"
            )
        n_docs = p.shape[0]
        empty_rows = np.zeros(n_docs, dtype=bool) if empty is None else np.asarray(empty, dtype=bool)
        trunc_rows = np.zeros(n_docs, dtype=bool) if truncated is None else np.asarray(truncated, dtype=bool)
        if empty_rows.shape != (n_docs,) or trunc_rows.shape != (n_docs,):
            raise ValueError("truncated/empty must be 1-D boolean arrays with one entry per note")
        needs_codeset = self.check_validity or self.check_excludes1 or self.codeset_fy is not None
        ctx = RoutingContext(
            probs=p,
            predicted=self.predicted_mask(p, empty_rows),
            label_codes=tuple(label_codes),
            rare_cols=np.array([int(train_frequency.get(c, 0)) < self.min_train_count for c in label_codes],
                               dtype=bool),
            truncated_rows=trunc_rows,
            tau=self.threshold,
            codeset=self.get_codeset() if needs_codeset else _EMPTY_CODESET,
            new_cols=self._new_code_columns(label_codes),
            check_excludes1=self.check_excludes1,
            check_validity=self.check_validity,
            check_negated_mention=self.check_negated_mention,
            check_sibling_conflict=self.check_sibling_conflict,
            flags=dict(flags or {}),
            hold=inputs.hold,
        )
        return ctx.predicted, {reason: rule(ctx) for reason, rule in RULES.items()}, empty_rows

    def _new_code_columns(self, label_codes: Sequence[str]) -> np.ndarray:
        """Label columns whose code is new in ``codeset_fy`` (False everywhere when the year or the
        year before is unavailable: "new" cannot be known, and other rules still apply)."""
        none = np.zeros(len(label_codes), dtype=bool)
        if self.codeset_fy is None or not is_available(self.codeset_fy - 1):
            return none
        current, previous = self.get_codeset(), load_codeset(self.codeset_fy - 1)
        return np.array([current.is_valid(c) and not previous.is_valid(c) for c in label_codes], dtype=bool)

    def route_arrays(self, inputs: RoutingInputs) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Vectorised routing for evaluation: ``(predicted_mask, accept_mask, reason_counts)``.

        ``reason_counts[name]`` is the number of predicted codes carrying that reason, except
        ``empty_note``, which counts notes (an empty note has no predicted codes).
        """
        predicted, reasons, empty_rows = self._masks(inputs)
        blocked = np.zeros_like(predicted)
        for m in reasons.values():
            blocked |= m
        accept = predicted & ~blocked
        counts = {r: int(m.sum()) for r, m in reasons.items()}
        counts[EMPTY_NOTE] = int(empty_rows.sum())
        return predicted, accept, {r: counts[r] for r in ALL_REASONS}

    def eligible_mask(self, inputs: RoutingInputs) -> np.ndarray:
        """Predicted codes that no rule other than ``low_confidence`` blocks.

        These are the codes τ decides about, so τ is calibrated on exactly this set and the
        precision guarantee is about what the policy will actually accept.
        """
        predicted, reasons, _ = self._masks(inputs)
        blocked = np.zeros_like(predicted)
        for r, m in reasons.items():
            if r != LOW_CONFIDENCE:
                blocked |= m
        return predicted & ~blocked

    def fit(self, inputs: RoutingInputs, y_true: np.ndarray) -> RoutingPolicy:
        """Fit on the calibration split: the decision threshold (when not fitted yet), then τ by
        Learn-then-Test at the policy's ``targets`` (:meth:`fit_accept_threshold`)."""
        if not self.decision_threshold.is_fitted:
            self.decision_threshold.fit(np.asarray(inputs.probs, dtype=np.float64), y_true)
        self.fit_accept_threshold(inputs, y_true)
        return self

    def certify(self, inputs: RoutingInputs, y_true: np.ndarray, targets: RiskTargets | None = None
                ) -> AcceptThresholdResult:
        """The LTT outcome for ``targets`` (default: the policy's own) on the codes this policy
        could accept (:meth:`eligible_mask`); changes nothing (the frontier asks other targets)."""
        if inputs.hold is not None:  # a hold is a serving-time fact about a deployed bundle
            raise ValueError(f"RoutingPolicy.certify: inputs carry hold={inputs.hold!r}; certification never "
                             "runs under a bundle hold (build the inputs without one)")
        targets = targets or self.targets
        if targets is None:
            raise ValueError("RoutingPolicy.certify needs targets (RiskTargets)")
        return select_accept_threshold(inputs.probs, y_true, self.eligible_mask(inputs), targets=targets)

    def fit_accept_threshold(self, inputs: RoutingInputs, y_true: np.ndarray) -> AcceptThresholdResult:
        """Learn ``tau_accept_`` on the calibration split (LTT; see
        :func:`medcoder.calibration.risk_control.select_accept_threshold`) at ``targets``.

        Sets ``tau_accept_`` (None when infeasible) and ``accept_result_``; returns the result,
        whose ``message`` the calling script should log as is.
        """
        result = self.certify(inputs, y_true)
        self.tau_accept_ = result.tau
        self.accept_result_ = result
        return result

    def unfitted(self) -> RoutingPolicy:
        """The same rules, targets and decision-threshold settings, nothing fitted: what refits a
        ``calibration.json``'s procedure on other scores (a quantised model's)."""
        return RoutingPolicy(
            tau_accept=None, decision_threshold=DecisionThreshold(**self.decision_threshold.get_params()),
            min_train_count=self.min_train_count, check_excludes1=self.check_excludes1,
            check_validity=self.check_validity, policy_version=self.policy_version, codeset_fy=self.codeset_fy,
            codeset=self.codeset, check_negated_mention=self.check_negated_mention,
            check_sibling_conflict=self.check_sibling_conflict, targets=self.targets,
            evidence_top_k=self.evidence_top_k)

    def route(self, inputs: RoutingInputs) -> list[list[CodeDecision]]:
        """Per note, the predicted codes (highest probability first) with decision and reasons.

        Empty notes get an empty list; use :func:`document_decision` for the note's decision.
        """
        p = np.asarray(inputs.probs, dtype=np.float64)
        if p.ndim == 1:
            p = p[None, :]
            inputs = replace(inputs, probs=p)
        label_codes = inputs.label_codes
        predicted, reasons, _ = self._masks(inputs)
        out: list[list[CodeDecision]] = []
        for i in range(p.shape[0]):
            cols = np.flatnonzero(predicted[i])
            cols = cols[np.argsort(-p[i, cols], kind="mergesort")]
            row: list[CodeDecision] = []
            for j in cols:
                rs = [r for r in _CODE_RULES if reasons[r][i, j]]
                row.append(CodeDecision(code=label_codes[j], probability=float(p[i, j]),
                                        decision=HUMAN_REVIEW if rs else AUTO_ACCEPT, reasons=rs))
            out.append(row)
        return out

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for ``calibration.json``: ``tau_accept`` is the τ in force (includes the LTT
        result once fitted)."""
        tau = self.threshold
        d: dict[str, Any] = {
            "policy_version": str(self.policy_version),
            "tau_accept": None if tau is None else float(tau),
            "min_train_count": int(self.min_train_count),
            "check_excludes1": bool(self.check_excludes1),
            "check_validity": bool(self.check_validity),
            "decision_threshold": self.decision_threshold.to_dict(),
            "codeset_fy": self.codeset_fy,
            "check_negated_mention": bool(self.check_negated_mention),
            "check_sibling_conflict": bool(self.check_sibling_conflict),
            "evidence_top_k": int(self.evidence_top_k),
        }
        if self.targets is not None:
            d["targets"] = self.targets.to_dict()
        if hasattr(self, "accept_result_"):
            d["accept_result"] = self.accept_result_.to_dict(include_grid=False)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoutingPolicy:
        """Inverse of :meth:`to_dict`; a fitted policy comes back with ``tau_accept_`` set.

        Every stored value is checked where it is read (:mod:`medcoder.calibration.stored`): τ is
        null or a finite probability (a NaN τ compared false with every probability, so codes
        below the certified τ were auto-accepted), the decision thresholds are finite
        probabilities with one flag each, switches are booleans, targets in range; anything else
        is a one-line ``BundleError`` naming ``policy.<field>``.
        """
        d = stored_mapping("policy", d)
        for key in ("tau_accept", "decision_threshold"):
            if key not in d:
                raise BundleError(f"policy.{key} is missing", hint=STORED_HINT)
        tau = stored_number("policy.tau_accept", d["tau_accept"], low=0.0, high=1.0, optional=True)
        codeset_fy = d.get("codeset_fy")
        if codeset_fy is not None and (isinstance(codeset_fy, bool) or not isinstance(codeset_fy, int)):
            raise BundleError(f"policy.codeset_fy={codeset_fy!r} is not valid (expected null or a year)",
                              hint=STORED_HINT)
        targets = d.get("targets")
        obj = stored_params("policy", cls, dict(
            tau_accept=tau,
            decision_threshold=DecisionThreshold.from_dict(d["decision_threshold"],
                                                           field="policy.decision_threshold"),
            min_train_count=d.get("min_train_count", 10),
            check_excludes1=d.get("check_excludes1", True),
            check_validity=d.get("check_validity", True),
            policy_version=d.get("policy_version", "1"),
            codeset_fy=codeset_fy,
            check_negated_mention=d.get("check_negated_mention", False),
            check_sibling_conflict=d.get("check_sibling_conflict", False),
            targets=stored_params("policy.targets", lambda **t: RiskTargets.from_dict(t), targets)
            if targets else None,
            evidence_top_k=d.get("evidence_top_k", DEFAULT_EVIDENCE_TOP_K),
        ))
        if "accept_result" in d:
            result = dict(stored_mapping("policy.accept_result", d["accept_result"]))
            obj.accept_result_ = stored_params("policy.accept_result", AcceptThresholdResult, result)
            obj.tau_accept_ = tau
        return obj

    def __repr__(self) -> str:
        return (
            f"RoutingPolicy(tau_accept={self.tau_accept!r}, decision_threshold="
            f"{self.decision_threshold!r}, min_train_count={self.min_train_count!r}, "
            f"check_excludes1={self.check_excludes1!r}, check_validity={self.check_validity!r}, "
            f"policy_version={self.policy_version!r}, codeset_fy={self.codeset_fy!r})"
        )


_EMPTY_CODESET = CodeSet(0, {}, (), source="none (ICD-10-CM rules off)")
