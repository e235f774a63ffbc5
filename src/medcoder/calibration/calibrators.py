"""Post-hoc calibrators: logits -> probabilities that mean what they say.

The routing policy compares probabilities with an auto-accept threshold chosen on the calibration
split, so the *ranking* of scores matters most; calibration makes the probabilities shown to coders
and the reliability metrics (ECE, Brier) honest. All calibrators follow scikit-learn's estimator
conventions (hyper-parameters in ``__init__``, learning in ``fit``, fitted state in attributes that
end in ``_``) and serialise to plain JSON so a bundle's ``calibration.json`` can rebuild them
without pickles.

Inputs are arrays of shape ``(n_docs, n_labels)``: ``logits`` (real) and ``y_true`` (0/1).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from medcoder.calibration.stored import (
    HINT,
    stored_bools,
    stored_mapping,
    stored_number,
    stored_numbers,
    stored_params,
)
from medcoder.constraints import Constraint, int_at_least, positive, validate
from medcoder.errors import BundleError, ConfigError
from medcoder.registry import Registry

__all__ = [
    "CALIBRATOR_NAMES",
    "BaseCalibrator",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "calibrator_from_dict",
    "make_calibrator",
]


def _as_2d(logits: np.ndarray) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"logits must be 2-D (n_docs, n_labels), got shape {arr.shape}")
    return arr


def _check_pair(logits: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = _as_2d(logits)
    y = np.asarray(y_true, dtype=np.float64)
    if y.ndim == 1:
        y = y[None, :]
    if y.shape != z.shape:
        raise ValueError(f"y_true shape {y.shape} does not match logits shape {z.shape}")
    return z, y


class BaseCalibrator:
    """Shared fit/transform/JSON plumbing. Subclasses set ``name`` and implement the math."""

    name: ClassVar[str] = ""
    #: One map for every code (True) or parameters per code (False): only a pooled map carries
    #: over to another label space (a refitted model's, ``certification.refit``).
    pooled: ClassVar[bool] = True

    def fit(self, logits: np.ndarray, y_true: np.ndarray) -> BaseCalibrator:
        raise NotImplementedError

    def transform(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, logits: np.ndarray, y_true: np.ndarray) -> np.ndarray:
        return self.fit(logits, y_true).transform(logits)

    # --- serialisation -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {}

    def _state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (``json.dumps`` works: no numpy types)."""
        return {"method": self.name, "params": self.get_params(), "state": self._state()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaseCalibrator:
        """Inverse of :meth:`to_dict`; every stored parameter is checked by ``_set_state`` (finite,
        in range, one per code where per code), a bad one is a ``BundleError`` naming the field."""
        d = stored_mapping("calibrator", d)
        if d.get("method") != cls.name:
            raise ConfigError(
                f"calibration.method: expected {cls.name!r}, got {d.get('method')!r}",
                hint="use medcoder.calibration.calibrator_from_dict to dispatch on the method",
            )
        obj = stored_params("calibrator.params", cls, d.get("params", {}))
        obj._set_state(dict(stored_mapping("calibrator.state", d.get("state", {}))))
        return obj

    def _check_fitted(self, attr: str) -> None:
        if not hasattr(self, attr):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


class IdentityCalibrator(BaseCalibrator):
    """``sigmoid(logit)`` unchanged: the "before" reference for calibration reports."""

    name = "none"

    def fit(self, logits: np.ndarray, y_true: np.ndarray) -> IdentityCalibrator:
        _check_pair(logits, y_true)
        self.fitted_ = True
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        return expit(_as_2d(logits))

    def _state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.fitted_ = True


class TemperatureCalibrator(BaseCalibrator):
    """One temperature for all codes: ``p = sigmoid(z / T)``.

    Why the default: a single parameter cannot overfit a small calibration split (CodiEsp dev has
    a few hundred notes and thousands of codes), it never changes the ranking of scores, and it
    fixes the dominant failure of fine-tuned transformers — over-confidence.

    Fitted by minimising the mean binary cross-entropy over all (note, code) pairs with
    :func:`scipy.optimize.minimize_scalar` on ``log T`` (bounded), so ``T > 0`` by construction.
    """

    name = "temperature"

    def __init__(self, log_t_bounds: tuple[float, float] = (-5.0, 5.0)) -> None:
        self.log_t_bounds = log_t_bounds

    def get_params(self) -> dict[str, Any]:
        return {"log_t_bounds": [float(b) for b in self.log_t_bounds]}

    def fit(self, logits: np.ndarray, y_true: np.ndarray) -> TemperatureCalibrator:
        z, y = _check_pair(logits, y_true)
        z, y = z.ravel(), y.ravel()

        def nll(log_t: float) -> float:
            s = z * math.exp(-log_t)
            # BCE with logits, numerically stable: log(1 + e^s) - y*s
            return float(np.mean(np.logaddexp(0.0, s) - y * s))

        lo, hi = self.log_t_bounds
        res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
        self.temperature_ = float(math.exp(res.x))
        self.nll_ = float(res.fun)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        self._check_fitted("temperature_")
        return expit(_as_2d(logits) / self.temperature_)

    def _state(self) -> dict[str, Any]:
        if not hasattr(self, "temperature_"):
            return {}
        return {"temperature": self.temperature_, "nll": self.nll_}

    def _set_state(self, state: dict[str, Any]) -> None:
        # The stored params are refitted from (calibrate's CalibrationPlan), so they are checked too.
        bounds = stored_numbers("calibrator.params.log_t_bounds", list(self.log_t_bounds)
                                if isinstance(self.log_t_bounds, list | tuple) else self.log_t_bounds, length=2, per="")
        if bounds[0] >= bounds[1]:
            raise BundleError(f"calibrator.params.log_t_bounds={list(self.log_t_bounds)!r} is not valid "
                              "(expected low < high)", hint=HINT)
        if "temperature" in state:
            self.temperature_ = stored_number("calibrator.state.temperature", state["temperature"], low=0.0,
                                              above=True)
            nll = state.get("nll")  # a record of the fit, not used to transform; NaN when unknown
            if nll is not None and (isinstance(nll, bool) or not isinstance(nll, int | float)):
                raise BundleError(f"calibrator.state.nll={nll!r} is not valid (expected a number)", hint=HINT)
            self.nll_ = float("nan") if nll is None else float(nll)


def _fit_logistic(z: np.ndarray, y: np.ndarray, c: float) -> tuple[float, float]:
    lr = LogisticRegression(C=c, solver="lbfgs", max_iter=1000)
    lr.fit(z.reshape(-1, 1), y.astype(int))
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


class PlattCalibrator(BaseCalibrator):
    """Per-code Platt scaling ``p = sigmoid(a_j * z + b_j)`` with a pooled fallback.

    Codes differ in base rate and in how over-confident the model is about them, which one
    temperature cannot express. But a logistic fit on a code with 2 positives is noise, so codes
    with fewer than ``min_positives`` positives (or fewer than ``min_positives`` negatives) use one
    pooled fit over all pairs instead. ``C`` is scikit-learn's inverse L2 strength; the default
    mild regularisation keeps per-code slopes finite on separable codes.
    """

    name = "platt"
    pooled = False
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "min_positives": Constraint(int_at_least(1), "an integer >= 1"),
        "C": Constraint(positive, "a number > 0"),
    }

    def __init__(self, min_positives: int = 10, C: float = 1.0) -> None:  # noqa: N803
        validate("calibration.params", {"min_positives": min_positives, "C": C}, self.parameter_constraints)
        self.min_positives = min_positives
        self.C = C

    def get_params(self) -> dict[str, Any]:
        return {"min_positives": int(self.min_positives), "C": float(self.C)}

    def fit(self, logits: np.ndarray, y_true: np.ndarray) -> PlattCalibrator:
        z, y = _check_pair(logits, y_true)
        n_docs, n_labels = z.shape
        if y.min() == y.max():
            raise ValueError("PlattCalibrator needs both positive and negative pairs to fit")
        pa, pb = _fit_logistic(z.ravel(), y.ravel(), self.C)
        coef = np.full(n_labels, pa)
        intercept = np.full(n_labels, pb)
        per_code = np.zeros(n_labels, dtype=bool)
        pos = y.sum(axis=0)
        neg = n_docs - pos
        for j in np.flatnonzero((pos >= self.min_positives) & (neg >= self.min_positives)):
            coef[j], intercept[j] = _fit_logistic(z[:, j], y[:, j], self.C)
            per_code[j] = True
        self.coef_ = coef
        self.intercept_ = intercept
        self.per_code_ = per_code
        self.pooled_coef_ = pa
        self.pooled_intercept_ = pb
        self.n_labels_ = n_labels
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        self._check_fitted("coef_")
        z = _as_2d(logits)
        if z.shape[1] != self.n_labels_:
            raise ValueError(
                f"PlattCalibrator was fitted on {self.n_labels_} codes, got {z.shape[1]}"
            )
        return expit(z * self.coef_[None, :] + self.intercept_[None, :])

    def _state(self) -> dict[str, Any]:
        if not hasattr(self, "coef_"):
            return {}
        return {
            "coef": [float(v) for v in self.coef_],
            "intercept": [float(v) for v in self.intercept_],
            "per_code": [bool(v) for v in self.per_code_],
            "pooled_coef": float(self.pooled_coef_),
            "pooled_intercept": float(self.pooled_intercept_),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        if "coef" in state:
            where = "calibrator.state"
            for key in ("intercept", "per_code", "pooled_coef", "pooled_intercept"):
                if key not in state:
                    raise BundleError(f"{where}.{key} is missing", hint=HINT)
            self.coef_ = stored_numbers(f"{where}.coef", state["coef"])
            n = int(self.coef_.shape[0])
            self.intercept_ = stored_numbers(f"{where}.intercept", state["intercept"], length=n)
            self.per_code_ = stored_bools(f"{where}.per_code", state["per_code"], length=n)
            self.pooled_coef_ = float(stored_number(f"{where}.pooled_coef", state["pooled_coef"]))  # type: ignore[arg-type]
            self.pooled_intercept_ = float(stored_number(f"{where}.pooled_intercept",  # type: ignore[arg-type]
                                                         state["pooled_intercept"]))
            self.n_labels_ = n


class IsotonicCalibrator(BaseCalibrator):
    """One pooled isotonic map from logit to probability.

    Non-parametric, so it fixes miscalibration shapes a sigmoid cannot, but it needs many pairs:
    hence pooled over all codes. Stored as the fitted breakpoints (``X_thresholds_``,
    ``y_thresholds_``) and applied with linear interpolation and clipping — exactly what
    :class:`sklearn.isotonic.IsotonicRegression` with ``out_of_bounds="clip"`` does — so the JSON
    form reproduces the transform without pickling the estimator. Caveat: flat steps create ties
    (and probabilities of exactly 0 or 1), which coarsens the auto-accept threshold grid.
    """

    name = "isotonic"

    def fit(self, logits: np.ndarray, y_true: np.ndarray) -> IsotonicCalibrator:
        z, y = _check_pair(logits, y_true)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(z.ravel(), y.ravel())
        self.X_thresholds_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        self._check_fitted("X_thresholds_")
        z = _as_2d(logits)
        flat = np.interp(z.ravel(), self.X_thresholds_, self.y_thresholds_)
        return flat.reshape(z.shape)

    def _state(self) -> dict[str, Any]:
        if not hasattr(self, "X_thresholds_"):
            return {}
        return {
            "X_thresholds": [float(v) for v in self.X_thresholds_],
            "y_thresholds": [float(v) for v in self.y_thresholds_],
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        if "X_thresholds" in state:
            # np.interp needs increasing breakpoints, and an isotonic map never decreases.
            self.X_thresholds_ = stored_numbers("calibrator.state.X_thresholds", state["X_thresholds"],
                                                nondecreasing=True)
            if "y_thresholds" not in state:
                raise BundleError("calibrator.state.y_thresholds is missing", hint=HINT)
            self.y_thresholds_ = stored_numbers("calibrator.state.y_thresholds", state["y_thresholds"], low=0.0,
                                                high=1.0, length=int(self.X_thresholds_.shape[0]),
                                                nondecreasing=True)


#: ``calibration.method`` -> calibrator class (medcoder.registry: one registration style).
CALIBRATORS: Registry[type[BaseCalibrator]] = Registry("calibration.method", {
    cls.name: cls for cls in (TemperatureCalibrator, PlattCalibrator, IsotonicCalibrator, IdentityCalibrator)
})
CALIBRATOR_NAMES: tuple[str, ...] = tuple(CALIBRATORS)


def make_calibrator(name: str, **kw: Any) -> BaseCalibrator:
    """Build an unfitted calibrator by config name (``calibration.method``).

    Raises :class:`~medcoder.errors.ConfigError` naming the field, the value and the allowed
    names for an unknown method.
    """
    return CALIBRATORS.lookup(name)(**kw)


def calibrator_from_dict(d: dict[str, Any]) -> BaseCalibrator:
    """Rebuild a fitted calibrator from :meth:`BaseCalibrator.to_dict` output (a stored value
    out of range is a one-line ``BundleError`` naming the field; an unknown method, as for the
    config value, a ``ConfigError`` listing the known ones)."""
    d = stored_mapping("calibrator", d)
    return CALIBRATORS.lookup(d.get("method")).from_dict(d)
