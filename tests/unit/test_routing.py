"""Routing policy: every reason name, Excludes1 from the real tables, metrics, plots, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import simple_icd_10_cm as cm

from medcoder.calibration import DecisionThreshold, RiskTargets
from medcoder.codesets import CodeSet, load_codeset
from medcoder.codesets.excludes1 import conflicting_pairs, excluded_by, parse_note
from medcoder.routing import (
    ALL_REASONS,
    AUTO_ACCEPT,
    EMPTY_NOTE,
    EXCLUDES1_CONFLICT,
    HUMAN_REVIEW,
    INVALID_CODE,
    LOW_CONFIDENCE,
    RARE_CODE,
    RULES,
    TRUNCATED_NOTE,
    CodeDecision,
    RoutingInputs,
    RoutingPolicy,
    document_decision,
    precision_coverage_curve,
    routing_metrics,
)
from medcoder.routing.reasons import NEGATED_MENTION, NO_EVIDENCE, SIBLING_CONFLICT

from ..helpers.plots import assert_png

CODES = ["E11.9", "E10.9", "N44.8", "I10", "E11.99", "R69"]
#          0        1        2       3      4 (invalid) 5 (rare)
FREQ = {"E11.9": 50, "E10.9": 40, "N44.8": 30, "I10": 100, "E11.99": 20, "R69": 3}


def _policy(tau=0.9, **kw):
    return RoutingPolicy(tau, DecisionThreshold.fixed(0.5, n_labels=len(CODES)), **kw)


def _by_code(row):
    return {d.code: d for d in row}


def test_excludes1_pair_from_real_tables_fires_on_both_codes():
    # The ICD-10-CM tabular list: E11 (type 2 diabetes) Excludes1 "type 1 diabetes mellitus (E10.-)"
    assert any("(E10.-)" in note for note in cm.get_excludes1("E11"))
    assert excluded_by("E11.9", "E10.9") and excluded_by("E10.9", "E11.9")
    probs = np.array([[0.99, 0.99, 0.99, 0.1, 0.1, 0.1]])
    row = _policy().route(RoutingInputs(probs, CODES, FREQ))[0]
    d = _by_code(row)
    assert d["E11.9"].reasons == [EXCLUDES1_CONFLICT] and d["E11.9"].decision == HUMAN_REVIEW
    assert d["E10.9"].reasons == [EXCLUDES1_CONFLICT]
    assert d["N44.8"].decision == AUTO_ACCEPT and d["N44.8"].reasons == []
    assert _policy(check_excludes1=False).route(RoutingInputs(probs, CODES, FREQ))[0][0].reasons == []


def test_excludes1_parser_forms():
    assert parse_note("type 1 diabetes mellitus (E10.-)") == [("E10", "E10")]
    assert parse_note("x (O10-O11, O13-O16)") == [("O10", "O11"), ("O13", "O16")]
    assert parse_note("y (O24.4-)") == [("O244", "O244")]
    assert parse_note("z (G6PD) no code here") == []
    # range logic: I10 excludes hypertension in pregnancy O10-O11, O13-O16
    assert conflicting_pairs(["I10", "O16.1"]) == [(0, 1)]
    assert conflicting_pairs(["I10", "O12.0"]) == []
    assert conflicting_pairs(["E11.9", "E119"]) == []  # same code, two spellings
    assert conflicting_pairs(["NOT A CODE", "E10.9"]) == []


def test_every_reason_is_produced_and_clean_codes_are_accepted():
    probs = np.array(
        [
            [0.95, 0.0, 0.70, 0.0, 0.0, 0.0],  # E11.9 accepted; N44.8 low_confidence
            [0.0, 0.0, 0.0, 0.0, 0.99, 0.99],  # invalid_code, rare_code
            [0.0, 0.0, 0.99, 0.0, 0.0, 0.0],  # truncated note
            [0.99, 0.0, 0.0, 0.0, 0.0, 0.0],  # empty note: nothing predicted
            [0.99, 0.99, 0.0, 0.0, 0.0, 0.0],  # excludes1 conflict
            [0.0, 0.0, 0.99, 0.97, 0.0, 0.0],  # I10: no evidence span (flag); N44.8 has one
        ]
    )
    truncated = np.array([False, False, True, False, False, False])
    empty = np.array([False, False, False, True, False, False])
    # The no_evidence flag as the views' evidence gives it: on I10 of note 5, and on a code no
    # note predicts (E10.9 of note 0), where it must not fire.
    no_evidence = np.zeros(probs.shape, bool)
    no_evidence[5, 3] = no_evidence[0, 1] = True
    flags = {NO_EVIDENCE: no_evidence}
    pol = _policy()
    rows = pol.route(RoutingInputs(probs, CODES, FREQ, truncated=truncated, empty=empty, flags=flags))
    assert [(d.code, d.decision, d.reasons) for d in rows[0]] == [
        ("E11.9", AUTO_ACCEPT, []),
        ("N44.8", HUMAN_REVIEW, [LOW_CONFIDENCE]),
    ]
    assert _by_code(rows[1])["E11.99"].reasons == [INVALID_CODE]
    assert _by_code(rows[1])["R69"].reasons == [RARE_CODE]
    assert rows[2][0].reasons == [TRUNCATED_NOTE]
    assert rows[3] == []
    assert {d.code for d in rows[4] if EXCLUDES1_CONFLICT in d.reasons} == {"E11.9", "E10.9"}
    assert [(d.code, d.decision, d.reasons) for d in rows[5]] == [
        ("N44.8", AUTO_ACCEPT, []),
        ("I10", HUMAN_REVIEW, [NO_EVIDENCE]),  # above τ, no other rule: no_evidence alone decides
    ]

    docs = [document_decision(r, bool(e)) for r, e in zip(rows, empty, strict=True)]
    assert docs[0] == (HUMAN_REVIEW, [LOW_CONFIDENCE])
    assert docs[1] == (HUMAN_REVIEW, [RARE_CODE, INVALID_CODE])
    assert docs[3] == (HUMAN_REVIEW, [EMPTY_NOTE])
    produced = {r for row in rows for d in row for r in d.reasons} | {
        r for _, rs in docs for r in rs
    }
    # new_code needs codeset_fy (test_routing_codesets.py); the switchable rules are tested below;
    # the bundle holds (audit_*) only with RoutingInputs.hold (tests/unit/test_audit_status.py)
    assert produced == set(ALL_REASONS) - {"new_code", "negated_mention", "sibling_conflict", "audit_alarm",
                                           "audit_status_unreadable"}

    inputs = RoutingInputs(probs, CODES, FREQ, truncated, empty, flags)
    predicted, accept, counts = pol.route_arrays(inputs)
    assert set(counts) == set(ALL_REASONS)
    assert counts == {
        LOW_CONFIDENCE: 1,
        RARE_CODE: 1,
        EXCLUDES1_CONFLICT: 2,
        INVALID_CODE: 1,
        TRUNCATED_NOTE: 1,
        EMPTY_NOTE: 1,
        "new_code": 0,
        "negated_mention": 0,
        "sibling_conflict": 0,
        "no_evidence": 1,
        "audit_alarm": 0,
        "audit_status_unreadable": 0,
    }
    # the code without evidence is not among the codes τ is certified on (one population)
    assert not pol.eligible_mask(inputs)[5, 3] and pol.eligible_mask(inputs)[5, 2]
    routed = {(i, CODES.index(d.code)) for i, r in enumerate(rows) for d in r}
    assert routed == set(zip(*np.nonzero(predicted), strict=True))
    accepted = {
        (i, CODES.index(d.code)) for i, r in enumerate(rows) for d in r if d.decision == AUTO_ACCEPT
    }
    assert accepted == set(zip(*np.nonzero(accept), strict=True))


def test_document_decision_fully_auto_and_no_predictions():
    ok = [CodeDecision("I10", 0.99, AUTO_ACCEPT, []), CodeDecision("N44.8", 0.97, AUTO_ACCEPT, [])]
    assert document_decision(ok, empty=False) == (AUTO_ACCEPT, [])
    assert document_decision([], empty=False) == (HUMAN_REVIEW, [LOW_CONFIDENCE])


def test_no_certified_tau_accepts_nothing():
    probs = np.full((3, len(CODES)), 0.999)
    freq = dict.fromkeys(CODES, 100)
    pol = _policy(tau=None, check_excludes1=False, check_validity=False)
    predicted, accept, counts = pol.route_arrays(RoutingInputs(probs, CODES, freq))
    assert predicted.all() and not accept.any()
    assert counts[LOW_CONFIDENCE] == predicted.sum()


def test_validity_comes_from_the_policys_codeset():
    # A user's code set (e.g. from a CMS order file) without I10: the policy asks it, nothing else.
    codeset = CodeSet(2030, {c: c for c in CODES if c != "I10"}, [], source="test")
    pol = _policy(codeset=codeset)
    assert pol.codeset_fy == 2030
    probs = np.array([[0.0, 0.0, 0.0, 0.99, 0.0, 0.0]])
    row = pol.route(RoutingInputs(probs, CODES, FREQ))[0]
    assert row[0].reasons == [INVALID_CODE]


def test_rules_table_follows_the_reason_order():
    assert tuple(RULES) == tuple(r for r in ALL_REASONS if r != EMPTY_NOTE)


def test_policy_json_round_trip_and_fit_accept_threshold():
    rng = np.random.default_rng(0)
    n_docs, codes = 600, ["I10", "N44.8", "R69", "J45.909"]
    probs = rng.beta(2.0, 1.0, size=(n_docs, len(codes)))
    y = (rng.random(probs.shape) < probs).astype(int)
    freq = dict.fromkeys(codes, 100)
    pol = RoutingPolicy(None, DecisionThreshold().fit(probs, y), targets=RiskTargets(0.9, 0.1))
    res = pol.fit_accept_threshold(RoutingInputs(probs, codes, freq), y)
    # fitted state goes to tau_accept_; the constructor parameter is left as given
    assert res.feasible and pol.tau_accept_ == res.tau and pol.tau_accept is None
    assert pol.threshold == res.tau and pol.to_dict()["tau_accept"] == res.tau
    again = RoutingPolicy.from_dict(json.loads(json.dumps(pol.to_dict())))
    assert again.threshold == pol.threshold and again.accept_result_.tau == res.tau
    a = pol.route_arrays(RoutingInputs(probs, codes, freq))
    b = again.route_arrays(RoutingInputs(probs, codes, freq))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    # rule-blocked codes are not part of the calibration set
    elig = pol.eligible_mask(RoutingInputs(probs, codes, {**freq, "R69": 1}))
    assert not elig[:, 2].any()


def test_routing_metrics_hand_example():
    pred = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], bool)
    acc = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], bool)
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], int)
    m = routing_metrics(
        acc,
        pred,
        y,
        n_gold_per_doc=np.array([1, 2, 1, 2]),
        delta=0.1,
        reason_counts={LOW_CONFIDENCE: 3},
    )
    assert m["auto_accept_precision"] == pytest.approx(2 / 3)
    assert m["auto_accept_coverage"] == pytest.approx(3 / 6)
    assert m["gold_auto_accepted"] == pytest.approx(2 / 6)
    assert m["docs_fully_auto"] == pytest.approx(1 / 4)  # only note 0; note 2 predicted nothing
    assert m["auto_accept_precision_lower"] < m["auto_accept_precision"]
    assert m["n_auto_accepted"] == 3 and m["reason_low_confidence"] == 3
    none = routing_metrics(np.zeros_like(acc), pred, y, None, 0.1)
    assert np.isnan(none["auto_accept_precision"]) and np.isnan(none["auto_accept_precision_lower"])
    assert none["auto_accept_coverage"] == 0.0
    with pytest.raises(ValueError):
        routing_metrics(pred, acc, y, None, 0.1)  # accept must be a subset of predicted


def test_precision_coverage_curve_and_plot(tmp_path):
    from medcoder.routing.plots import plot_precision_coverage

    rng = np.random.default_rng(1)
    probs = rng.random((200, 5))
    y = (rng.random(probs.shape) < probs).astype(int)
    pred = probs >= 0.3
    curve = precision_coverage_curve(probs, y, pred, max_points=50)
    assert len(curve["tau"]) <= 50 and curve["coverage"][-1] == pytest.approx(1.0)
    assert curve["precision"][-1] == pytest.approx(y[pred].mean())
    json.dumps(curve)
    for tau in (0.8, None):
        fig = plot_precision_coverage(curve, tau, 0.95)
        ax = fig.axes[0]
        # the curve itself, the dashed target line, and the operating point only where a τ exists
        line, target = ax.lines[0], ax.lines[1]
        np.testing.assert_allclose(line.get_xdata(), curve["coverage"])
        np.testing.assert_allclose(line.get_ydata(), curve["precision"])
        assert list(target.get_ydata()) == [0.95, 0.95] and target.get_linestyle() == "--"
        if tau is not None:
            assert len(ax.lines) == 3
            i = int(np.flatnonzero(np.asarray(curve["tau"]) >= tau)[-1])  # lowest curve point with τ' >= τ
            point = ax.lines[2]
            assert (list(point.get_xdata()), list(point.get_ydata())) == ([curve["coverage"][i]], [curve["precision"][i]])
        else:
            assert len(ax.lines) == 2 and any("nothing auto-accepted" in t.get_text() for t in ax.texts)
        out = tmp_path / f"pc_{tau}.png"
        fig.savefig(out)
        assert_png(out, tuple(fig.get_size_inches()), fig.dpi)


def test_conflict_matrix_agrees_with_pairwise_check():
    from medcoder.codesets.excludes1 import conflict_matrix

    codes = ["E11.9", "E10.9", "E119", "I10", "O16.1", "O12.0", "N44.8", "K50.90", "K51.90", "X"]
    m = conflict_matrix(tuple(codes)).toarray()
    dense = {(i, j) for i in range(len(codes)) for j in range(i + 1, len(codes)) if m[i, j]}
    assert dense == set(conflicting_pairs(codes))
    assert (m == m.T).all() and not m.diagonal().any()


def test_codeset_conflict_matrix_equals_the_tabular_list_parser():
    """One code-set truth: the FY2026 CodeSet gives the same conflicts as the parser it wraps;
    a year without Excludes1 notes (FY2025's table) gives none."""
    from medcoder.codesets.excludes1 import conflict_matrix

    codes = ("E11.9", "E10.9", "E119", "I10", "O16.1", "O12.0", "N44.8", "K50.90", "K51.90", "X")
    assert (load_codeset(2026).conflict_matrix(codes) != conflict_matrix(codes)).nnz == 0
    assert load_codeset(2025).conflict_matrix(codes).nnz == 0


def test_sibling_conflict_rule_is_off_by_default_and_fires_on_one_category() -> None:
    codes = ["R31.9", "R31.0", "I10"]
    probs = np.array([[0.99, 0.9, 0.99]])
    freq = dict.fromkeys(codes, 100)
    dt = DecisionThreshold.fixed(0.5, n_labels=3)
    off = RoutingPolicy(0.5, dt, check_validity=False, check_excludes1=False).route(RoutingInputs(probs, codes, freq))[0]
    assert all(d.decision == AUTO_ACCEPT for d in off)
    on = RoutingPolicy(0.5, dt, check_validity=False, check_excludes1=False, check_sibling_conflict=True)
    by = _by_code(on.route(RoutingInputs(probs, codes, freq))[0])
    assert by["R31.9"].reasons == [SIBLING_CONFLICT] and by["R31.0"].reasons == [SIBLING_CONFLICT]
    assert by["I10"].decision == AUTO_ACCEPT
    assert RoutingPolicy.from_dict(json.loads(json.dumps(on.to_dict()))).check_sibling_conflict


def test_a_negated_mention_goes_to_review_when_the_rule_is_on() -> None:
    """A note saying "no fever, tuberculosis was ruled out": the dictionary view flags both
    mentions as negated. With the rule on (for corpora that do not code negated findings) the
    codes go to review as negated_mention; off (CodiEsp codes negated findings, measured), they
    are routed on their probability like any other code."""
    from medcoder.modeling.dictionary import DictionaryScorer
    from medcoder.modeling.hybrid import routing_flags

    codes = ["R50.9", "A15.9", "I10"]
    train = ["patient with fever today", "active tuberculosis treated", "hypertension on amlodipine"]
    dictionary = DictionaryScorer(cross_fit=1).fit(
        train, np.eye(3, dtype=int), codes, descriptions={"R50.9": ["fever"], "A15.9": ["tuberculosis"],
                                                           "I10": ["hypertension"]}, language="en")
    note = "No fever. Tuberculosis was ruled out. Known hypertension."
    view = dictionary.score([note], evidence=True)
    flags = routing_flags({"dictionary": view})
    assert flags["negated_mention"][0].tolist() == [True, True, False]
    probs = np.array([[0.99, 0.99, 0.99]])
    freq = dict.fromkeys(codes, 100)
    dt = DecisionThreshold.fixed(0.5, n_labels=3)
    on = RoutingPolicy(0.5, dt, check_validity=False, check_excludes1=False, check_negated_mention=True)
    by = _by_code(on.route(RoutingInputs(probs, codes, freq, flags=flags))[0])
    assert by["R50.9"].reasons == [NEGATED_MENTION] and by["A15.9"].reasons == [NEGATED_MENTION]
    assert by["I10"].decision == AUTO_ACCEPT
    off = RoutingPolicy(0.5, dt, check_validity=False, check_excludes1=False)
    assert all(d.decision == AUTO_ACCEPT for d in off.route(RoutingInputs(probs, codes, freq, flags=flags))[0])
