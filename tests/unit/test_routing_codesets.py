"""Routing against the bundle's fiscal year: ``invalid_code`` per year and ``new_code``."""

from __future__ import annotations

import json

import numpy as np

from medcoder.calibration import DecisionThreshold
from medcoder.routing import INVALID_CODE, RARE_CODE, RoutingInputs, RoutingPolicy
from medcoder.routing.reasons import ALL_REASONS, NEW_CODE

CODES = ["G35.A", "G35", "I10", "E11.A"]
#         new 2026  billable 2025, header 2026   old    new 2026, frequent
FREQ = {"G35.A": 2, "G35": 40, "I10": 100, "E11.A": 50}


def _policy(fy):
    return RoutingPolicy(0.5, DecisionThreshold.fixed(0.5, n_labels=len(CODES)), min_train_count=10, codeset_fy=fy)


def _reasons(policy):
    probs = np.full((1, len(CODES)), 0.9)
    return {d.code: d.reasons for d in policy.route(RoutingInputs(probs, CODES, FREQ))[0]}


def test_new_code_reason_is_appended_not_renamed():
    # reasons are appended, never renamed or reordered (they are metric keys and audit-log values)
    assert ALL_REASONS == ("low_confidence", "rare_code", "excludes1_conflict", "invalid_code", "truncated_note",
                           "empty_note", NEW_CODE, "negated_mention", "sibling_conflict", "no_evidence",
                           "audit_alarm", "audit_status_unreadable")


def test_new_and_invalid_codes_in_fy2026():
    r = _reasons(_policy(2026))
    assert r["G35.A"] == [RARE_CODE, NEW_CODE]  # new in FY2026 and barely trained
    assert r["I10"] == [] and r["G35"] == []  # G35 is a valid (header) code in FY2026


def test_a_frequent_new_code_is_routed_by_new_code_alone():
    """E11.A is new in FY2026 yet learned from 50 notes: no other rule fires, so new_code alone
    changes its decision. (When new_code fired as ``new & rare`` it always came with rare_code and
    E11.A, well above τ, was auto-accepted.)"""
    policy = _policy(2026)
    row = {d.code: d for d in policy.route(RoutingInputs(np.full((1, len(CODES)), 0.9), CODES, FREQ))[0]}
    assert row["E11.A"].reasons == [NEW_CODE] and row["E11.A"].decision == "human_review"
    assert row["I10"].decision == "auto_accept"  # same probability, not new: accepted
    # and it is not certified: the codes Learn-then-Test counts exclude it
    probs = np.full((4, len(CODES)), 0.9)
    assert not policy.eligible_mask(RoutingInputs(probs, CODES, FREQ))[:, CODES.index("E11.A")].any()


def test_validity_follows_the_policy_year():
    r = _reasons(_policy(2025))
    assert INVALID_CODE in r["G35.A"] and INVALID_CODE in r["E11.A"]  # do not exist in FY2025
    assert NEW_CODE not in r["G35.A"]  # FY2024 is not available: "new" cannot be known
    assert r["G35"] == [] and r["I10"] == []


def test_counts_and_serialisation():
    policy = _policy(2026)
    _, accept, counts = policy.route_arrays(RoutingInputs(np.full((2, len(CODES)), 0.9), CODES, FREQ))
    # G35.A (rare and new) and E11.A (frequent and new) in both notes; G35 and I10 accepted
    assert counts[NEW_CODE] == 4 and counts[RARE_CODE] == 2 and accept.sum() == 4
    restored = RoutingPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert restored.codeset_fy == 2026
    old = policy.to_dict()
    del old["codeset_fy"]  # a calibration.json written before this field existed
    assert RoutingPolicy.from_dict(old).codeset_fy is None
    assert _reasons(RoutingPolicy.from_dict(old))["G35.A"] == [RARE_CODE]
