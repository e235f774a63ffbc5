"""Calibrators, decision thresholds and calibration reports (synthetic data, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit

from medcoder.calibration import (
    CALIBRATOR_NAMES,
    DecisionThreshold,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    brier_score,
    calibration_report,
    calibrator_from_dict,
    f1_optimal_threshold,
    make_calibrator,
    reliability_curve,
)
from medcoder.errors import ConfigError
from medcoder.evaluation import ece as _ece

from ..helpers.plots import assert_png


def ece(probs, y_true, n_bins: int = 15) -> float:
    """The project's ECE over pooled pairs (any shape), as the calibration report computes it."""
    return _ece(np.ravel(probs)[None, :], np.ravel(y_true)[None, :], n_bins=n_bins)


def _miscalibrated(seed: int, n_docs: int = 800, n_labels: int = 20):
    """True logit u; model logits z = 3u + 1 (over-confident and shifted)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(-1.0, 1.5, size=(n_docs, n_labels))
    y = (rng.random(u.shape) < expit(u)).astype(int)
    return 3.0 * u + 1.0, y


def test_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    t_true = 2.5
    z = rng.normal(0.0, 4.0, size=(2000, 50))
    y = (rng.random(z.shape) < expit(z / t_true)).astype(int)
    cal = TemperatureCalibrator().fit(z, y)
    assert abs(cal.temperature_ - t_true) / t_true < 0.05
    np.testing.assert_allclose(cal.transform(z), expit(z / cal.temperature_))


@pytest.mark.parametrize("name", ["platt", "isotonic", "temperature"])
def test_calibrators_reduce_ece_on_fresh_data(name):
    z_fit, y_fit = _miscalibrated(1)
    z_new, y_new = _miscalibrated(2)
    cal = make_calibrator(name).fit(z_fit, y_fit)
    before = ece(expit(z_new), y_new)
    after = ece(cal.transform(z_new), y_new)
    assert after < 0.5 * before
    assert brier_score(cal.transform(z_new), y_new) < brier_score(expit(z_new), y_new)


@pytest.mark.parametrize("name", CALIBRATOR_NAMES)
def test_json_round_trip_gives_identical_transform(name):
    z, y = _miscalibrated(3, n_docs=300, n_labels=8)
    kw = {"min_positives": 20} if name == "platt" else {}
    cal = make_calibrator(name, **kw).fit(z, y)
    text = json.dumps(cal.to_dict())
    again = calibrator_from_dict(json.loads(text))
    assert type(again) is type(cal)
    assert np.array_equal(again.transform(z), cal.transform(z))


def test_platt_falls_back_to_pooled_fit_for_rare_codes():
    z, y = _miscalibrated(4, n_docs=400, n_labels=5)
    y[:, 2] = 0
    y[:3, 2] = 1  # code 2: only 3 positives
    cal = PlattCalibrator(min_positives=10).fit(z, y)
    assert not cal.per_code_[2]
    assert cal.per_code_[[0, 1, 3, 4]].all()
    assert cal.coef_[2] == cal.pooled_coef_ and cal.intercept_[2] == cal.pooled_intercept_
    assert cal.coef_[0] != cal.pooled_coef_


def test_isotonic_is_monotone_and_clipped():
    z, y = _miscalibrated(5)
    cal = IsotonicCalibrator().fit(z, y)
    grid = np.linspace(-50, 50, 1001)[None, :]
    p = cal.transform(grid)[0]
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1


def test_unknown_calibrator_names_field_value_and_allowed():
    with pytest.raises(ConfigError) as exc:
        make_calibrator("betacal")
    msg = str(exc.value)
    assert "calibration.method" in msg and "betacal" in msg
    for name in ("temperature", "platt", "isotonic"):
        assert name in msg
    with pytest.raises(ConfigError):
        calibrator_from_dict({"method": "nope"})


def test_transform_before_fit_raises():
    with pytest.raises(RuntimeError):
        TemperatureCalibrator().transform(np.zeros((2, 2)))


# --- decision thresholds ------------------------------------------------------------------------


def _brute_force_f1(scores, y):
    best_t, best_f1 = 0.5, -1.0
    for t in sorted(set(scores.tolist()), reverse=True):
        pred = scores >= t
        tp = np.sum(pred & (y == 1))
        f1 = 2 * tp / (pred.sum() + y.sum())
        if f1 > best_f1 + 1e-15:
            best_t, best_f1 = t, f1
    return best_t, best_f1


def test_global_threshold_matches_brute_force():
    rng = np.random.default_rng(6)
    for _ in range(20):
        s = rng.integers(0, 30, size=200) / 30.0  # many ties on purpose
        y = (rng.random(200) < s).astype(int)
        t, f1 = f1_optimal_threshold(s, y)
        bt, bf1 = _brute_force_f1(s, y)
        assert t == pytest.approx(bt) and f1 == pytest.approx(bf1)


def test_per_code_threshold_falls_back_to_global():
    rng = np.random.default_rng(7)
    p = rng.random((300, 4))
    y = (rng.random(p.shape) < p**2).astype(int)
    y[:, 3] = 0
    y[:2, 3] = 1  # 2 positives < min_positives
    dt = DecisionThreshold(mode="per_code", min_positives=5).fit(p, y)
    g = DecisionThreshold(mode="global").fit(p, y)
    assert dt.global_threshold_ == g.global_threshold_
    assert dt.per_code_.tolist() == [True, True, True, False]
    assert dt.thresholds_[3] == dt.global_threshold_
    for j in range(3):
        assert dt.thresholds_[j] == f1_optimal_threshold(p[:, j], y[:, j])[0]
    assert np.array_equal(dt.predict(p), p >= dt.thresholds_)
    again = DecisionThreshold.from_dict(json.loads(json.dumps(dt.to_dict())))
    assert np.array_equal(again.predict(p), dt.predict(p))


def test_decision_threshold_unknown_mode():
    with pytest.raises(ConfigError):
        DecisionThreshold(mode="weird").fit(np.zeros((2, 2)), np.zeros((2, 2)))


# --- report and plot ----------------------------------------------------------------------------


def test_ece_equal_mass_hand_example_and_calibrated_sample():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 0, 1, 0])
    # two equal-mass bins: |0.1-0| and |0.9-0.5| -> (0.1 + 0.4) / 2
    assert ece(p, y, n_bins=2) == pytest.approx(0.25)
    curve = reliability_curve(p, y, n_bins=2)
    assert curve["count"] == [2, 2]
    rng = np.random.default_rng(8)
    q = rng.random(200_000)
    assert ece(q, rng.random(q.size) < q) < 0.01
    assert brier_score(p, y) == pytest.approx(np.mean((p - y) ** 2))


def test_reliability_plot_writes_png(tmp_path):
    from medcoder.calibration.plots import plot_reliability

    z, y = _miscalibrated(9, n_docs=200, n_labels=10)
    before = calibration_report(expit(z), y)
    after = calibration_report(TemperatureCalibrator().fit(z, y).transform(z), y)
    json.dumps(before)  # plain JSON
    fig = plot_reliability(before, after, show_counts=True)
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # the diagonal, before, after
    for line, rep in zip(ax.lines[1:], (before, after), strict=True):
        np.testing.assert_allclose(line.get_xdata(), rep["reliability"]["mean_predicted"])
        np.testing.assert_allclose(line.get_ydata(), rep["reliability"]["fraction_positive"])
        assert f"ECE {rep['ece']:.4f}" in line.get_label()
    # show_counts: one count per bin of each curve, the bins' own counts
    counts = [int(t.get_text()) for t in ax.texts]
    assert counts == [*before["reliability"]["count"], *after["reliability"]["count"]]
    out = tmp_path / "reliability.png"
    fig.savefig(out)
    assert_png(out, tuple(fig.get_size_inches()), fig.dpi)
