"""medcoder.evaluation.metrics against scikit-learn and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medcoder.evaluation import (
    METRIC_KEYS,
    codiesp_map,
    compute_all,
    ece,
    macro_auc,
    macro_f1,
    mean_average_precision,
    micro_auc,
    micro_f1,
    micro_precision,
    micro_recall,
    precision_at_k,
    recall_at_k,
    reliability_curve,
    tune_global_threshold,
)


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    """40 notes x 25 codes, sparse gold, continuous (tie-free) scores correlated with gold."""
    rng = np.random.default_rng(7)
    y = (rng.random((40, 25)) < 0.12).astype(int)
    y[:, 3] = 0  # a label with no gold in this split
    y[0, 3] = 0
    probs = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    return probs, y


# ------------------------------------------------------------------ thresholded metrics


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_micro_metrics_match_sklearn(sample, threshold):
    probs, y = sample
    pred = (probs >= threshold).astype(int)
    assert micro_f1(probs, y, threshold) == pytest.approx(f1_score(y, pred, average="micro"))
    assert micro_precision(probs, y, threshold) == pytest.approx(
        precision_score(y, pred, average="micro", zero_division=0)
    )
    assert micro_recall(probs, y, threshold) == pytest.approx(
        recall_score(y, pred, average="micro", zero_division=0)
    )


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_macro_f1_is_sklearn_macro_over_labels_with_gold(sample, threshold):
    probs, y = sample
    pred = (probs >= threshold).astype(int)
    with_gold = np.flatnonzero(y.sum(0) > 0)
    assert len(with_gold) < y.shape[1]  # the fixture has a label without gold
    expected = f1_score(y, pred, average="macro", labels=with_gold, zero_division=0)
    assert macro_f1(probs, y, threshold) == pytest.approx(expected)


def test_macro_f1_ignores_labels_without_gold():
    # label 0: gold twice, both predicted -> F1 1; label 1: no gold but predicted -> not averaged.
    probs = np.array([[0.9, 0.9], [0.8, 0.1]])
    y = np.array([[1, 0], [1, 0]])
    assert macro_f1(probs, y, 0.5) == 1.0
    # ... whereas the false positive on label 1 still costs micro-precision: 2 / 3
    assert micro_precision(probs, y, 0.5) == pytest.approx(2 / 3)
    assert math.isnan(macro_f1(probs, np.zeros_like(y), 0.5))


def test_nothing_predicted_gives_zero_not_nan(sample):
    probs, y = sample
    assert micro_precision(probs, y, 1.1) == 0.0
    assert micro_f1(probs, y, 1.1) == 0.0
    assert macro_f1(probs, y, 1.1) == 0.0


# ------------------------------------------------------------------ threshold tuning


def test_tuned_threshold_reaches_brute_force_maximum(sample):
    probs, y = sample
    threshold = tune_global_threshold(probs, y)
    tuned_f1 = micro_f1(probs, y, threshold)
    grid = np.linspace(0, 1, 1001)
    grid_best = max(micro_f1(probs, y, t) for t in grid)
    exact_best = max(micro_f1(probs, y, t) for t in np.unique(probs))
    assert tuned_f1 >= grid_best - 1e-12
    assert tuned_f1 == pytest.approx(exact_best)
    assert threshold in set(probs.ravel())  # the rule returns a score value, not a midpoint


def test_tuned_threshold_hand_example_and_tie_rule():
    # sorted scores 0.9(1) 0.8(0) 0.7(1) 0.2(0); 2 positives.
    #   t=0.9: tp1 pred1 -> F1 = 2/(1+2) = 0.667
    #   t=0.8: tp1 pred2 -> 2/(2+2) = 0.5
    #   t=0.7: tp2 pred3 -> 4/(3+2) = 0.8   <- best
    #   t=0.2: tp2 pred4 -> 4/(4+2) = 0.667
    probs = np.array([[0.9, 0.8], [0.7, 0.2]])
    y = np.array([[1, 0], [1, 0]])
    assert tune_global_threshold(probs, y) == 0.7
    # tied maxima: pos@0.8, neg@0.6, neg@0.5, pos@0.4 (2 positives)
    #   t=0.8: 2*1/(1+2) = 2/3 ; t=0.6: 2/(2+2) = 1/2 ; t=0.5: 2/(3+2) = 2/5 ; t=0.4: 4/(4+2) = 2/3
    #   -> the higher threshold wins
    ties = np.array([[0.8, 0.6, 0.5, 0.4]])
    assert tune_global_threshold(ties, np.array([[1, 0, 0, 1]])) == 0.8


def test_tuned_threshold_without_gold_is_neutral():
    assert tune_global_threshold(np.array([[0.2, 0.9]]), np.array([[0, 0]])) == 0.5


# ------------------------------------------------------------------ ranking metrics


def test_precision_and_recall_at_k_two_notes():
    # note 0 ranking: cols 0,1,2,3,4,5 ; gold {0,2,5} -> top2 has 1 hit, top3 has 2 hits
    # note 1 ranking: cols 5,4,3,2,1,0 ; gold {5}     -> top2 has 1 hit, top3 has 1 hit
    probs = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    y = np.array([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1]])
    assert precision_at_k(probs, y, 2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert precision_at_k(probs, y, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert recall_at_k(probs, y, 2) == pytest.approx((1 / 3 + 1 / 1) / 2)
    assert recall_at_k(probs, y, 3) == pytest.approx((2 / 3 + 1 / 1) / 2)
    # with one out-of-space gold code per note: (1/4 + 1/2) / 2
    assert recall_at_k(probs, y, 2, n_gold=np.array([4, 2])) == pytest.approx(3 / 8)
    # k larger than the label space keeps denominator k (trec_eval P@k)
    assert precision_at_k(probs, y, 10) == pytest.approx((3 / 10 + 1 / 10) / 2)


def test_notes_without_gold_count_for_p_at_k_but_not_r_at_k():
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    y = np.array([[1, 0], [0, 0]])
    assert precision_at_k(probs, y, 1) == 0.5  # (1 + 0) / 2
    assert recall_at_k(probs, y, 1) == 1.0  # the empty note is excluded
    assert math.isnan(recall_at_k(probs, np.zeros_like(y), 1))
    with pytest.raises(ValueError, match="n_gold"):
        recall_at_k(probs, y, 1, n_gold=[0, 0])


def test_in_space_map_equals_sklearn_average_precision(sample):
    probs, y = sample
    per_note = [average_precision_score(y[i], probs[i]) for i in range(len(y)) if y[i].any()]
    assert mean_average_precision(probs, y) == pytest.approx(np.mean(per_note))
    codes = [f"C{j:02d}" for j in range(y.shape[1])]
    gold = [[codes[j] for j in np.flatnonzero(row)] for row in y]
    assert codiesp_map(probs, codes, gold) == pytest.approx(np.mean(per_note))


def test_codiesp_map_counts_gold_outside_label_space():
    codes = ["A", "B", "C", "D"]
    probs = np.array(
        [
            [0.9, 0.8, 0.7, 0.1],  # ranking A B C D
            [0.5, 0.2, 0.3, 0.6],  # ranking D A C B
            [0.1, 0.2, 0.3, 0.4],  # no gold: excluded
        ]
    )
    gold = [["A", "C", "X99", "A"], ["D"], []]  # X99 is outside the label space; A duplicated
    # note 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 3 distinct gold codes = 5/9
    #         (sklearn, which only sees in-space gold: (1 + 2/3) / 2 = 5/6)
    # note 1: hit at rank 1 -> 1/1 / 1 = 1
    # MAP = (5/9 + 1) / 2 = 7/9
    assert codiesp_map(probs, codes, gold) == pytest.approx(7 / 9)
    sk_note0 = average_precision_score([1, 0, 1, 0], probs[0])
    assert sk_note0 == pytest.approx(5 / 6)
    note0 = codiesp_map(probs[:1], codes, gold[:1])
    assert note0 == pytest.approx(5 / 9)
    assert note0 < sk_note0
    # the matrix form gives the same number when told the full gold counts
    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert mean_average_precision(probs, y, n_gold=[3, 1, 0]) == pytest.approx(7 / 9)


def test_ties_rank_in_column_order():
    # equal scores: column 0 ranks first, so the gold code in column 1 sits at rank 2
    probs = np.array([[0.5, 0.5, 0.1]])
    assert codiesp_map(probs, ["A", "B", "C"], [["B"]]) == pytest.approx(1 / 2)
    assert precision_at_k(probs, np.array([[0, 1, 0]]), 1) == 0.0


def test_codiesp_map_is_cut_at_depth_1000():
    n_labels = 1200
    codes = [f"C{j}" for j in range(n_labels)]
    probs = np.linspace(1, 0, n_labels)[None, :]  # rank r+1 = column r
    gold = [["C0", "C1099"]]
    # default depth 1000: only rank 1 counts -> (1/1) / 2
    assert codiesp_map(probs, codes, gold) == pytest.approx(0.5)
    # uncut: (1/1 + 2/1100) / 2
    assert codiesp_map(probs, codes, gold, depth=None) == pytest.approx((1 + 2 / 1100) / 2)


def test_codiesp_map_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="label_codes"):
        codiesp_map(np.zeros((1, 2)), ["A"], [["A"]])
    with pytest.raises(ValueError, match="duplicates"):
        codiesp_map(np.zeros((1, 2)), ["A", "A"], [["A"]])
    with pytest.raises(ValueError, match="gold_codes"):
        codiesp_map(np.zeros((1, 2)), ["A", "B"], [["A"], ["B"]])


# ------------------------------------------------------------------ AUC


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal -> many ties
def test_auc_matches_sklearn(sample, decimals):
    probs, y = sample
    if decimals is not None:
        probs = np.round(probs, decimals)
    assert micro_auc(probs, y) == pytest.approx(roc_auc_score(y.ravel(), probs.ravel()))
    keep = (y.sum(0) > 0) & (y.sum(0) < len(y))
    assert not keep.all()
    expected = roc_auc_score(y[:, keep], probs[:, keep], average="macro")
    assert macro_auc(probs, y) == pytest.approx(expected)


def test_auc_is_nan_without_both_classes():
    probs = np.array([[0.2, 0.7], [0.4, 0.1]])
    assert math.isnan(micro_auc(probs, np.zeros((2, 2))))
    assert math.isnan(micro_auc(probs, np.ones((2, 2))))
    assert math.isnan(macro_auc(probs, np.array([[1, 0], [1, 0]])))


# ------------------------------------------------------------------ calibration


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_ece_near_zero_when_calibrated(strategy):
    rng = np.random.default_rng(0)
    probs = rng.random((400, 500))
    y = (rng.random(probs.shape) < probs).astype(int)
    assert ece(probs, y, strategy=strategy) < 0.01


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_ece_hand_value_when_miscalibrated(strategy):
    # 4 pairs at 0.2 with 1 positive (acc 0.25), 4 pairs at 0.6 with 3 positives (acc 0.75).
    # quantile, 2 bins of 4 sorted pairs / uniform, 0.2 and 0.6 in different bins:
    # ECE = 4/8 * |0.25 - 0.2| + 4/8 * |0.75 - 0.6| = 0.025 + 0.075 = 0.1
    probs = np.array([[0.2, 0.2, 0.2, 0.2], [0.6, 0.6, 0.6, 0.6]])
    y = np.array([[1, 0, 0, 0], [1, 1, 1, 0]])
    n_bins = 2 if strategy == "quantile" else 15
    assert ece(probs, y, n_bins=n_bins, strategy=strategy) == pytest.approx(0.1)
    curve = reliability_curve(probs, y, n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(curve.confidence, [0.2, 0.6])
    np.testing.assert_allclose(curve.accuracy, [0.25, 0.75])
    np.testing.assert_array_equal(curve.counts, [4, 4])


def test_ece_quantile_with_fewer_pairs_than_bins_is_mean_abs_error():
    # 8 pairs, 15 bins -> one pair per bin: mean |y - p| = (1*0.8 + 3*0.2 + 3*0.4 + 1*0.6) / 8
    probs = np.array([[0.2, 0.2, 0.2, 0.2], [0.6, 0.6, 0.6, 0.6]])
    y = np.array([[1, 0, 0, 0], [1, 1, 1, 0]])
    assert ece(probs, y) == pytest.approx((0.8 + 0.6 + 1.2 + 0.6) / 8)


def test_ece_quantile_bins_are_equal_mass_even_with_ties():
    rng = np.random.default_rng(1)
    probs = np.where(rng.random((30, 10)) < 0.7, 0.0, rng.random((30, 10)))  # 70% tied at 0
    curve = reliability_curve(probs, np.zeros_like(probs), n_bins=15)
    assert len(curve.counts) == 15 and set(curve.counts) == {20}
    # uniform bins: probability 1.0 falls in the last bin, not off the end
    edge = reliability_curve(np.array([[1.0, 0.0]]), np.array([[1, 0]]), strategy="uniform")
    assert edge.counts.sum() == 2
    with pytest.raises(ValueError, match="strategy"):
        ece(probs, np.zeros_like(probs), strategy="kmeans")  # type: ignore[arg-type]


def test_ece_uniform_agrees_with_sklearn_calibration_curve(sample):
    # An independent implementation: scikit-learn's uniform-bin reliability curve, weighted by
    # the bin counts numpy's histogram gives (continuous random scores: no pair on a bin edge).
    from sklearn.calibration import calibration_curve

    probs, y = sample
    p, t = np.asarray(probs).ravel(), np.asarray(y).ravel()
    frac_pos, mean_pred = calibration_curve(t, p, n_bins=10, strategy="uniform")
    counts, _ = np.histogram(p, bins=np.linspace(0, 1, 11))
    expected = float(np.sum(counts[counts > 0] / p.size * np.abs(frac_pos - mean_pred)))
    assert ece(probs, y, n_bins=10, strategy="uniform") == pytest.approx(expected, abs=1e-12)


def test_ece_quantile_matches_equal_mass_reference(sample):
    # Reference written from the definition: sort pairs, split into equal-count groups.
    probs, y = sample
    p, t = np.asarray(probs).ravel(), np.asarray(y).ravel().astype(float)
    order = np.argsort(p, kind="stable")
    groups = np.split(order, 8)  # 1,000 pairs: 8 bins of exactly 125
    expected = sum(len(g) / p.size * abs(t[g].mean() - p[g].mean()) for g in groups)
    assert ece(probs, y, n_bins=8) == pytest.approx(expected, abs=1e-12)


def test_calibration_report_uses_the_same_bins_as_ece(sample):
    from medcoder.calibration.report import calibration_report

    probs, y = sample
    rep = calibration_report(probs, y)
    curve = reliability_curve(probs, y)
    assert rep["ece"] == pytest.approx(ece(probs, y), abs=1e-12)
    np.testing.assert_allclose(rep["reliability"]["mean_predicted"], curve.confidence)
    assert rep["reliability"]["count"] == curve.counts.tolist()


# ------------------------------------------------------------------ compute_all


def test_compute_all_keys_and_consistency(sample):
    probs, y = sample
    result = compute_all(probs, y, threshold=0.5)
    assert tuple(result) == METRIC_KEYS
    assert all(isinstance(v, float) for v in result.values())
    assert result["map"] == pytest.approx(mean_average_precision(probs, y))
    assert result["micro_f1"] == pytest.approx(micro_f1(probs, y, 0.5))
    assert result["macro_f1"] == pytest.approx(macro_f1(probs, y, 0.5))
    assert result["p_at_8"] == pytest.approx(precision_at_k(probs, y, 8))
    assert result["r_at_15"] == pytest.approx(recall_at_k(probs, y, 15))
    assert result["macro_auc"] == pytest.approx(macro_auc(probs, y))
    assert result["ece"] == pytest.approx(ece(probs, y))


def test_compute_all_with_gold_codes_counts_out_of_space_gold(sample):
    probs, y = sample
    codes = [f"C{j:02d}" for j in range(y.shape[1])]
    gold = [[codes[j] for j in np.flatnonzero(row)] + ["OUT"] * (i % 2) for i, row in enumerate(y)]
    n_gold = np.array([len(set(g)) for g in gold])
    result = compute_all(probs, y, threshold=0.5, gold_codes=gold, label_codes=codes)
    assert result["map"] == pytest.approx(codiesp_map(probs, codes, gold))
    assert result["map"] < compute_all(probs, y, threshold=0.5)["map"]
    assert result["r_at_10"] == pytest.approx(recall_at_k(probs, y, 10, n_gold=n_gold))
    # explicit n_gold wins for R@k
    explicit = compute_all(
        probs, y, threshold=0.5, gold_codes=gold, label_codes=codes, n_gold=y.sum(1)
    )
    assert explicit["r_at_10"] == pytest.approx(recall_at_k(probs, y, 10))


def test_compute_all_rejects_bad_inputs(sample):
    probs, y = sample
    with pytest.raises(ValueError, match="together"):
        compute_all(probs, y, threshold=0.5, gold_codes=[[]] * len(y))
    with pytest.raises(ValueError, match="shape"):
        compute_all(probs, y[:, :-1], threshold=0.5)
