"""Strict JSON for the reports workflows write (comparison.json, evidence reports).

Why one helper: a metric can be NaN or infinite (MAP of a split without gold, a CI of one note),
and ``json.dumps`` would write ``NaN``, which is not JSON; three workflows had their own copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["finite"]


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float, at any depth of dicts, lists and tuples, made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
