"""Valid ranges of parameters, declared once on the class that takes them.

Why (scikit-learn's ``_parameter_constraints``, in small): a range was checked twice, once in the
config checks before anything loads and once in the estimator, with two messages that could drift
apart. Now a class lists ``parameter_constraints = {name: Constraint(...)}``; the class validates
itself with :func:`validate`, and ``medcoder.workflows.config_checks`` reads the same table to refuse
a bad value in a second, before any model or corpus is loaded. A failure is one
:class:`~medcoder.errors.ConfigError` line naming ``<group>.<name>``, the value and the valid range.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medcoder.errors import ConfigError

__all__ = ["MAX_PATH_PART_BYTES", "MAX_PATH_PART_CHARS", "Constraint", "check_keys", "check_path_part", "in_open_unit",
           "in_unit_interval_right_open", "int_at_least", "is_bool", "is_int", "is_num", "num_at_least", "one_of",
           "path_part_problem", "positive", "problem", "problems", "validate"]


@dataclass(frozen=True)
class Constraint:
    """A value must satisfy ``ok``; ``expected`` says the valid range in words."""

    ok: Callable[[Any], bool]
    expected: str
    optional: bool = False  # None is allowed


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and v >= low


def num_at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: is_num(v) and v >= low


def positive(v: Any) -> bool:
    return is_num(v) and v > 0


def in_open_unit(v: Any) -> bool:
    return is_num(v) and 0 < v < 1


def in_unit_interval_right_open(v: Any) -> bool:
    return is_num(v) and 0 <= v < 1


def one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda v: v in allowed


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def problem(key: str, value: Any, ok: Callable[[Any], bool], expected: str, optional: bool) -> str | None:
    """The sentence for ``key=value`` breaking its rule, or None when it holds (None counts as
    "not set"). One wording for the classes' own checks and the config checks."""
    if value is None:
        return None if optional else f"{key} is not set (expected {expected})"
    return None if ok(value) else f"{key}={value!r} is not valid (expected {expected})"


def problems(group: str, values: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> list[str]:
    """One sentence per value of ``values`` that breaks its constraint (absent keys are skipped:
    the constructor's default applies)."""
    found = (problem(f"{group}.{name}", values[name], rule.ok, rule.expected, rule.optional)
             for name, rule in constraints.items() if name in values)
    return [p for p in found if p is not None]


def check_keys(group: str, values: Mapping[str, Any], allowed: Iterable[str], *, context: str = "") -> None:
    """Every key of ``values`` must be in ``allowed``: a misspelt key (``model.head_dropuot``) is a
    one-line ``ConfigError`` naming it, the key probably meant and the valid keys, never silently
    ignored. ``context`` is added after the keys (e.g. `` for data.format=csv``)."""
    valid = sorted(set(allowed))
    unknown = [str(k) for k in values if k not in valid]
    if not unknown:
        return
    where = f"{group}." if group else ""
    guesses = [g for k in unknown for g in difflib.get_close_matches(k, valid, n=1)]
    maybe = f" (did you mean {', '.join(where + g for g in guesses)}?)" if guesses else ""
    raise ConfigError(f"{', '.join(where + k for k in unknown)}: unknown key{'s' if len(unknown) > 1 else ''}"
                      f"{context}{maybe}", hint=f"valid keys of {group or 'the config'}{context}: {', '.join(valid)}")


def validate(group: str, values: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Raise one ``ConfigError`` line listing every broken constraint."""
    found = problems(group, values, constraints)
    if found:
        raise ConfigError("; ".join(found), hint="fix it on the command line, e.g. key=value")


#: A path part's limits: file systems allow 255 bytes per name, and medcoder adds prefixes and
#: suffixes to some (``.<name>.<random>.partial`` staging folders, ``<data.name>_fy2026``).
MAX_PATH_PART_CHARS = 128
MAX_PATH_PART_BYTES = 200
#: Unicode categories a name may not hold: controls (NUL, newline, ESC ...), lone surrogates (not
#: writable as UTF-8) and line/paragraph separators (they break one-line logs and messages).
_BAD_NAME_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")


def path_part_problem(value: Any) -> str | None:
    """Why ``value`` cannot be one folder or file name, or None when it can."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return f"it is {type(value).__name__}, not a name"
    text = str(value)
    if not text.strip():
        return "it is empty"
    if "/" in text or "\\" in text:
        return "it holds a path separator (/ or \\)"
    if text in (".", ".."):
        return "it names the current or the parent folder"
    bad = next((c for c in text if unicodedata.category(c) in _BAD_NAME_CATEGORIES), None)
    if bad is not None:
        return f"it holds the non-printing character {ascii(bad)}"
    if text != text.strip():
        return "it starts or ends with white space"
    if len(text) > MAX_PATH_PART_CHARS or len(text.encode("utf-8")) > MAX_PATH_PART_BYTES:
        return f"it is longer than {MAX_PATH_PART_CHARS} characters ({MAX_PATH_PART_BYTES} bytes)"
    return None


def check_path_part(key: str, value: Any) -> str:
    """``value`` of config key ``key`` as ONE folder or file name (``run_name``, ``data.name``, an
    MLflow alias...), or a one-line ``ConfigError`` naming the key, the value (``ascii()``: a
    control character cannot break the line) and what to do.

    Why one check for every such value: a config value joined onto a folder (``checkpoint_dir /
    run_name``) is a path, and the folder it names may be written into or deleted.
    ``run_name=../../precious``, an empty ``run_name`` (the parent: every run's checkpoints) or an
    absolute path each made training delete a folder it never created (issue 22). So: non-empty,
    no ``/`` or ``\\``, not ``.``/``..``, no control characters, no surrounding white space, at
    most :data:`MAX_PATH_PART_CHARS` characters. An integer (``run_name=7`` on the command line) is
    a name too. Returns the value as text.
    """
    why = path_part_problem(value)
    if why is not None:
        raise ConfigError(f"{key}={ascii(value)} cannot be used as a folder or file name: {why}",
                          hint=f"give {key} a single name of letters, digits, '-', '_' or '.' (e.g. {key}=my-run-1)")
    return str(value)
