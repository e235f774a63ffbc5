"""Range checks for the values a ``from_dict`` reads back from ``calibration.json``.

Why: ``calibration.json`` is a file, and a file can hold anything. A NaN τ compared false with
every probability, so ``low_confidence`` never fired and *more* codes were auto-accepted than the
certified τ allows; a shortened threshold list loaded fine and crashed at predict. The estimators'
``from_dict`` (the one place each value is read, for ``Coder.load``, the evidence evaluation and
calibrate's refits alike) now check every stored number here, and a bad one is a one-line
:class:`~medcoder.errors.BundleError` naming the field (``policy.tau_accept=nan is not valid
(expected ...)``), never a traceback and never a silently different policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from medcoder.errors import BundleError, ConfigError

__all__ = ["HINT", "stored_bools", "stored_mapping", "stored_number", "stored_numbers", "stored_params"]

HINT = "calibration.json is written by scripts/calibrate.py; re-run it or re-export the bundle, never edit it"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expected(low: float, high: float) -> str:
    if math.isinf(low) and math.isinf(high):
        return "a finite number"
    if math.isinf(high):
        return f"a finite number >= {low:g}"
    return f"a number in [{low:g}, {high:g}]"


def stored_mapping(field: str, value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else a :class:`BundleError` naming ``field``."""
    if not isinstance(value, Mapping):
        raise BundleError(f"{field} is a {type(value).__name__}, expected an object", hint=HINT)
    return value


def stored_number(field: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                  optional: bool = False, above: bool = False) -> float | None:
    """``value`` as a float: finite and in ``[low, high]`` (``(low, high]`` with ``above``);
    None only when ``optional``. NaN and infinities are refused: no comparison with them is true."""
    if value is None and optional:
        return None
    ok = _is_number(value) and math.isfinite(value) and (value > low if above else value >= low) and value <= high
    if not ok:
        expected = _expected(low, high).replace(">=", ">") if above else _expected(low, high)
        raise BundleError(f"{field}={value!r} is not valid (expected {'null or ' if optional else ''}{expected})",
                          hint=HINT)
    return float(value)


def stored_numbers(field: str, values: Any, *, low: float = -math.inf, high: float = math.inf,
                   length: int | None = None, nondecreasing: bool = False, per: str = " (one per code)"
                   ) -> np.ndarray:
    """A non-empty list of finite numbers in ``[low, high]`` (``length`` of them when given) as a
    float array; the first bad entry is named by index (the list itself may be thousands long)."""
    if not isinstance(values, list) or not values:
        raise BundleError(f"{field} is {type(values).__name__ if not isinstance(values, list) else 'empty'}, "
                          f"expected a non-empty list of numbers", hint=HINT)
    if length is not None and len(values) != length:
        raise BundleError(f"{field} has {len(values)} entries, expected {length}{per}", hint=HINT)
    for i, v in enumerate(values):
        stored_number(f"{field}[{i}]", v, low=low, high=high)
    arr = np.asarray(values, dtype=np.float64)
    if nondecreasing and arr.size > 1 and bool(np.any(np.diff(arr) < 0)):
        i = int(np.flatnonzero(np.diff(arr) < 0)[0]) + 1
        raise BundleError(f"{field}[{i}]={values[i]!r} is smaller than the entry before it (expected a "
                          f"non-decreasing list)", hint=HINT)
    return arr


def stored_bools(field: str, values: Any, *, length: int) -> np.ndarray:
    """A list of ``length`` booleans as a bool array."""
    if not isinstance(values, list) or len(values) != length:
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise BundleError(f"{field} has {size} entries, expected {length} booleans (one per code)", hint=HINT)
    bad = next((i for i, v in enumerate(values) if not isinstance(v, bool)), None)
    if bad is not None:
        raise BundleError(f"{field}[{bad}]={values[bad]!r} is not valid (expected true or false)", hint=HINT)
    return np.asarray(values, dtype=bool)


def stored_params(field: str, build: Any, params: Any) -> Any:
    """``build(**params)``: the constructor's own range checks (:mod:`medcoder.constraints`),
    reported as a stored field of ``calibration.json`` rather than a config value to fix on the
    command line."""
    params = stored_mapping(field, params)
    try:
        return build(**params)
    except ConfigError as exc:
        raise BundleError(f"{field}: {exc.message}", hint=HINT) from exc
    except TypeError as exc:  # an unknown or missing keyword
        raise BundleError(f"{field}: {str(exc).splitlines()[0]}", hint=HINT) from exc
