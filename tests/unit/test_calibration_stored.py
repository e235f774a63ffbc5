"""Issue 22: every value ``calibration.json`` holds is checked where it is read (``from_dict``).

Before: a NaN τ loaded, and ``probs < nan`` is false, so ``low_confidence`` never fired and codes
below the certified τ were auto-accepted; thresholds of the wrong length loaded and crashed at the
first predict; NaN calibrator parameters made NaN probabilities. Now each is a one-line
``BundleError`` naming the field, for every reader (``Coder.load``, ``coder_from_run``, calibrate).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from medcoder.calibration import DecisionThreshold, RiskTargets
from medcoder.calibration.calibrators import calibrator_from_dict, make_calibrator
from medcoder.errors import BundleError
from medcoder.routing import RoutingInputs, RoutingPolicy
from medcoder.routing.reasons import LOW_CONFIDENCE

CODES = ["A00", "B00", "C00"]
FREQ = dict.fromkeys(CODES, 50)


def _policy_dict() -> dict:
    policy = RoutingPolicy(0.9, DecisionThreshold.fixed(0.5, n_labels=len(CODES)), check_excludes1=False,
                           check_validity=False, targets=RiskTargets(0.9, 0.1))
    return json.loads(json.dumps(policy.to_dict()))


def _refused(read, d: dict, match: str) -> BundleError:
    with pytest.raises(BundleError, match=match) as info:
        read(d)
    assert "\n" not in str(info.value)
    return info.value


def test_a_nan_tau_is_refused_not_auto_accepting() -> None:
    d = _policy_dict()
    d["tau_accept"] = float("nan")
    _refused(RoutingPolicy.from_dict, d, r"policy\.tau_accept=nan is not valid")
    # What a NaN τ did: probability 0.6, far below the certified 0.9, carried no low_confidence.
    good = RoutingPolicy.from_dict(_policy_dict())
    row = good.route(RoutingInputs(np.array([[0.6, 0.1, 0.1]]), CODES, FREQ))[0]
    assert row[0].reasons == [LOW_CONFIDENCE]


@pytest.mark.parametrize("tau", [float("inf"), -0.1, 1.5, "0.9", True, [0.9], {"v": 1}])
def test_tau_must_be_null_or_a_probability(tau) -> None:
    d = _policy_dict()
    d["tau_accept"] = tau
    _refused(RoutingPolicy.from_dict, d, r"policy\.tau_accept=.* is not valid \(expected null or a number in \[0, 1\]\)")


@pytest.mark.parametrize("tau", [None, 0, 0.0, 0.5, 1, 1.0])
def test_valid_taus_load(tau) -> None:
    d = _policy_dict()
    d["tau_accept"] = tau
    assert RoutingPolicy.from_dict(d).threshold == tau


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(thresholds=[0.5, float("nan"), 0.5]), r"state\.thresholds\[1\]=nan"),
    (lambda s: s.update(thresholds=[0.5, 1.5, 0.5]), r"state\.thresholds\[1\]=1\.5"),
    (lambda s: s.update(thresholds=[0.5, -1, 0.5]), r"state\.thresholds\[1\]=-1"),
    (lambda s: s.update(thresholds=[]), r"state\.thresholds is empty"),
    (lambda s: s.update(thresholds="0.5"), r"state\.thresholds is str"),
    (lambda s: s.update(per_code=[False]), r"state\.per_code has 1 entries, expected 3"),
    (lambda s: s.update(per_code=[0, 0, 0]), r"state\.per_code\[0\]=0"),
    (lambda s: s.update(global_threshold=float("nan")), r"state\.global_threshold=nan"),
    (lambda s: s.pop("thresholds"), r"state\.thresholds is missing"),
])
def test_decision_thresholds_are_finite_probabilities_one_flag_each(edit, match) -> None:
    d = _policy_dict()
    edit(d["decision_threshold"]["state"])
    _refused(RoutingPolicy.from_dict, d, r"policy\.decision_threshold\." + match)
    _refused(DecisionThreshold.from_dict, d["decision_threshold"], r"decision_threshold\." + match)


@pytest.mark.parametrize("key, value, match", [
    ("min_train_count", -1, "min_train_count"),
    ("check_validity", "yes", "check_validity"),
    ("codeset_fy", "2026", r"policy\.codeset_fy='2026'"),
    ("targets", {"target_precision": float("nan"), "delta": 0.1}, r"policy\.targets: .*target_precision"),
    ("targets", {"target_precision": 0.9, "delta": 2.0}, r"policy\.targets: .*delta"),
    ("targets", [0.9, 0.1], r"policy\.targets is a list"),
    ("decision_threshold", [1], r"policy\.decision_threshold is a list"),
])
def test_other_policy_fields_are_one_bundle_error_line(key, value, match) -> None:
    d = _policy_dict()
    d[key] = value
    _refused(RoutingPolicy.from_dict, d, match)


def test_a_policy_that_is_not_an_object_or_lacks_tau_is_refused() -> None:
    _refused(RoutingPolicy.from_dict, [1, 2], r"policy is a list")
    d = _policy_dict()
    del d["tau_accept"]
    _refused(RoutingPolicy.from_dict, d, r"policy\.tau_accept is missing")


def _fitted(name: str) -> dict:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3))
    y = (rng.random((200, 3)) < 0.5).astype(float)
    kw = {"min_positives": 5} if name == "platt" else {}
    return json.loads(json.dumps(make_calibrator(name, **kw).fit(logits, y).to_dict()))


@pytest.mark.parametrize("name, edit, match", [
    ("temperature", lambda s: s.update(temperature=float("nan")), r"calibrator\.state\.temperature=nan"),
    ("temperature", lambda s: s.update(temperature=0.0), r"calibrator\.state\.temperature=0\.0"),
    ("temperature", lambda s: s.update(temperature=-2.0), r"calibrator\.state\.temperature=-2\.0"),
    ("temperature", lambda s: s.update(temperature="1"), r"calibrator\.state\.temperature='1'"),
    ("platt", lambda s: s.update(coef=[1.0, float("nan"), 1.0]), r"calibrator\.state\.coef\[1\]=nan"),
    ("platt", lambda s: s.update(intercept=[0.0]), r"calibrator\.state\.intercept has 1 entries, expected 3"),
    ("platt", lambda s: s.update(pooled_coef=float("inf")), r"calibrator\.state\.pooled_coef=inf"),
    ("platt", lambda s: s.pop("per_code"), r"calibrator\.state\.per_code is missing"),
    ("isotonic", lambda s: s.update(y_thresholds=[1.5] * len(s["y_thresholds"])), r"y_thresholds\[0\]=1\.5"),
    ("isotonic", lambda s: s.update(X_thresholds=list(reversed(s["X_thresholds"]))), r"X_thresholds\[1\]"),
    ("isotonic", lambda s: s.update(y_thresholds=s["y_thresholds"][:1]), r"y_thresholds has 1 entries"),
])
def test_calibrator_parameters_are_finite_and_in_range(name, edit, match) -> None:
    d = _fitted(name)
    assert calibrator_from_dict(copy.deepcopy(d)).transform(np.zeros((1, 3))).shape == (1, 3)
    edit(d["state"])
    _refused(calibrator_from_dict, d, match)


@pytest.mark.parametrize("d, match", [
    ([1], r"calibrator is a list"),
    ({"method": "temperature", "params": [1], "state": {}}, r"calibrator\.params is a list"),
    ({"method": "temperature", "params": {"log_t_bounds": [5, -5]}, "state": {}}, r"log_t_bounds"),
    ({"method": "temperature", "params": {"log_t_bounds": [float("nan"), 5]}, "state": {}}, r"log_t_bounds\[0\]=nan"),
    ({"method": "platt", "params": {"C": float("nan")}, "state": {}}, r"calibrator\.params: .*C=nan"),
    ({"method": "platt", "params": {"nope": 1}, "state": {}}, r"calibrator\.params: .*nope"),
    ({"method": "temperature", "params": {}, "state": [1]}, r"calibrator\.state is a list"),
])
def test_calibrator_shapes_are_one_bundle_error_line(d, match) -> None:
    _refused(calibrator_from_dict, d, match)
