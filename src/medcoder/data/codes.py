"""The canonical spelling of a code string, shared by every corpus loader.

Why one function (:func:`canonical_code`): gold labels, the label space, code-set lookups and
predictions are compared as plain strings, so ``n44.8`` in a TSV and ``N44.8`` in a code table
must become the same string the moment they enter the package, never later.

Rules (deliberately small and documented, because every later join depends on them):

* always: strip surrounding whitespace and upper-case;
* ``code_type="D"`` (ICD-10-CM / CIE10-ES diagnoses): the canonical form carries a dot after the
  3-character category, so a dot-less code longer than 3 characters gets one (``N448`` ->
  ``N44.8``); codes that already have a dot, and bare 3-character categories, are kept as they are;
* ``code_type="P"`` (ICD-10-PCS procedures: 7 characters, or 4-character CodiEsp prefixes): PCS
  never uses dots, so the code is only upper-cased;
* ``code_type=None`` (users' own corpora of unknown or mixed code systems): only strip and
  upper-case — inserting dots there could silently corrupt a PCS code.
"""

from __future__ import annotations

import warnings

from medcoder.errors import ConfigError, DataError

CODE_TYPES = ("D", "P")


def check_code_type(code_type: str | None, *, allow_none: bool = False) -> None:
    """Reject an unknown code type early, naming the config field, instead of mis-normalising."""
    if code_type is None and allow_none:
        return
    if code_type not in CODE_TYPES:
        raise ConfigError(
            f"data.code_type={code_type!r} is not a known code type",
            hint=f"use one of {', '.join(CODE_TYPES)} (D = diagnoses, P = procedures)",
        )


def canonical_code(code: str, code_type: str | None = "D") -> str:
    """Return the canonical spelling of ``code`` (see the module docstring for the rules).

    Only the string's format changes (case, surrounding blanks, the CM dot): whether the code
    exists in a code set is :func:`medcoder.codesets.normalise.resolve_code`'s question.
    Raises ``DataError`` for an empty code: an empty label is corrupt data, not a code.
    """
    check_code_type(code_type, allow_none=True)
    norm = code.strip().upper()
    if not norm:
        raise DataError(f"empty code {code!r}", hint="remove the row or fill in the code")
    if code_type == "D" and "." not in norm and len(norm) > 3:
        norm = f"{norm[:3]}.{norm[3:]}"
    return norm


def normalize_code(code: str, code_type: str | None = "D") -> str:
    """Deprecated alias of :func:`canonical_code` (kept because ``medcoder.data`` exported it).

    Renamed because three functions were called ``normalise_code``/``normalize_code`` with three
    different jobs; this one only canonicalises a code string's format.
    """
    warnings.warn("medcoder.data.normalize_code is deprecated; use medcoder.data.canonical_code",
                  DeprecationWarning, stacklevel=2)
    return canonical_code(code, code_type)


def dedupe(codes: list[str]) -> list[str]:
    """Drop repeated codes but keep first-seen order, so rows are deterministic across runs."""
    return list(dict.fromkeys(codes))
