"""The agreement statistics of the review loop (medcoder.evaluation.agreement), checked by hand."""

from __future__ import annotations

import math

import pytest

from medcoder.evaluation.agreement import acceptance_rates, frequency_bin, kappa_with_ci

# Ten codes decided by two reviewers (A = accept, R = reject):
#   a: A A A A A A R R R A
#   b: A A A A A R R R A A
# Observed agreement p_o = 8/10. Each reviewer says A 7 times and R 3 times, so chance agreement
# p_e = 0.7·0.7 + 0.3·0.3 = 0.58 and κ = (0.8 − 0.58) / (1 − 0.58) = 0.22 / 0.42 = 11/21.
A = list("AAAAAARRRA")
B = list("AAAAARRRAA")


def test_kappa_matches_the_hand_computation() -> None:
    result = kappa_with_ci(A, B, n_boot=0)
    assert result.kappa == pytest.approx(11 / 21, abs=1e-12)
    assert result.low is None and result.high is None
    assert result.n_items == 10 and result.n_groups == 10


def test_kappa_interval_is_seeded_and_brackets_the_estimate() -> None:
    first = kappa_with_ci(A, B, n_boot=500, seed=3)
    again = kappa_with_ci(A, B, n_boot=500, seed=3)
    other = kappa_with_ci(A, B, n_boot=500, seed=4)
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low is not None and first.high is not None
    assert -1.0 <= first.low <= first.kappa <= first.high <= 1.0


def test_perfect_agreement_has_kappa_one_and_a_degenerate_interval() -> None:
    labels = ["accept", "reject", "replace", "accept"] * 5
    result = kappa_with_ci(labels, labels, n_boot=200)
    assert result.kappa == pytest.approx(1.0)
    assert result.low == pytest.approx(1.0) and result.high == pytest.approx(1.0)


def test_bootstrap_resamples_notes_not_codes() -> None:
    # Five notes of four codes each: the reviewers agree on every code of notes 0-3 and disagree on
    # every code of note 4. Resampling notes keeps each note's codes together, so a resample is
    # one of few agreement patterns and the interval is wider than resampling the 20 codes as if
    # they were independent.
    a, b, notes = [], [], []
    for note in range(5):
        for j in range(4):
            x = "accept" if j % 2 == 0 else "reject"
            a.append(x)
            b.append(x if note < 4 else ("reject" if x == "accept" else "accept"))
            notes.append(f"n{note}")
    by_note = kappa_with_ci(a, b, groups=notes, n_boot=2000, seed=0)
    by_code = kappa_with_ci(a, b, n_boot=2000, seed=0)
    assert by_note.n_groups == 5 and by_code.n_groups == 20
    assert by_note.kappa == pytest.approx(by_code.kappa)
    assert by_note.low is not None and by_code.low is not None
    assert (by_note.high - by_note.low) > (by_code.high - by_code.low)
    # a note-level resample can only hold 0..5 copies of the bad note: κ takes few values, and a
    # sample without the bad note (probability (4/5)^5 ≈ 0.33) has κ = 1, so the upper end is 1.
    assert by_note.high == pytest.approx(1.0)


def test_kappa_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="a has 2 labels and b has 1"):
        kappa_with_ci(["A", "R"], ["A"])
    with pytest.raises(ValueError, match="no items"):
        kappa_with_ci([], [])
    with pytest.raises(ValueError, match="groups has 1 entries"):
        kappa_with_ci(["A", "R"], ["A", "R"], groups=["n1"])
    with pytest.raises(ValueError, match="level"):
        kappa_with_ci(["A", "R"], ["A", "R"], level=1.0)


def test_acceptance_rates_by_reason_count_each_reason_and_skip_undecided() -> None:
    rows = [
        {"code": "I10", "reasons": ["low_confidence"], "action": "accept"},
        {"code": "R10.9", "reasons": ["low_confidence", "rare_code"], "action": "reject"},
        {"code": "E11.9", "reasons": ["rare_code"], "action": "replace"},
        {"code": "R50.9", "reasons": ["rare_code"], "action": "accept"},
        {"code": "K35.80", "reasons": ["low_confidence"], "action": "undecided"},
    ]
    rates = acceptance_rates(rows, "reasons")
    assert list(rates) == ["low_confidence", "rare_code"]
    assert (rates["low_confidence"].n, rates["low_confidence"].n_accepted) == (2, 1)
    assert rates["low_confidence"].rate == pytest.approx(0.5)
    assert (rates["rare_code"].n, rates["rare_code"].n_accepted) == (3, 1)
    assert rates["rare_code"].rate == pytest.approx(1 / 3)
    assert rates["rare_code"].actions == {"accept": 1, "reject": 1, "replace": 1}


def test_acceptance_rates_by_frequency_bin() -> None:
    rows = [{"frequency": f, "action": act} for f, act in
            ((0, "reject"), (0, "accept"), (3, "accept"), (9, "accept"), (10, "reject"), (120, "accept"),
             (None, "accept"))]
    rates = acceptance_rates(rows, lambda r: frequency_bin(r["frequency"]))
    assert {k: (v.n, v.n_accepted) for k, v in rates.items()} == {
        "0": (2, 1), "1-9": (2, 2), "10-49": (1, 0), "50+": (1, 1), "unknown": (1, 1)}
    assert not any(math.isnan(v.rate) for v in rates.values() if v.rate is not None)


def test_frequency_bins_edges() -> None:
    assert [frequency_bin(n) for n in (0, 1, 9, 10, 49, 50, 10_000)] == ["0", "1-9", "1-9", "10-49", "10-49",
                                                                         "50+", "50+"]
    assert frequency_bin(None) == "unknown"
    with pytest.raises(ValueError, match="frequency=-1"):
        frequency_bin(-1)
