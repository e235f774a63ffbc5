"""ICD-10-CM Excludes1 notes (parsed from ``simple-icd-10-cm``'s tabular list) and the conflict
matrix that routing multiplies predictions with.

Why in ``codesets``: validity, hierarchy and Excludes1 are facts of one fiscal year's code set.
:class:`~medcoder.codesets.CodeSet` owns them (``CodeSet.excludes1``, ``CodeSet.conflict_matrix``),
so routing asks the bundle's year and there is one source of code-set truth.

An Excludes1 note ("NOT CODED HERE") means the two conditions cannot be coded together, so a
prediction containing both is certainly wrong somewhere and must go to a coder.

The notes are free text with the partner codes in parentheses, e.g.
``'type 1 diabetes mellitus (E10.-)'`` or
``'hypertensive disease complicating pregnancy, ... (O10-O11, O13-O16)'``. A note on a code
applies to the code and all its descendants, so a code's forbidden partners are the union of the
notes on the code and on each of its ancestors (subcategory, category, block, chapter).

Parsed forms inside parentheses (comma- or semicolon-separated lists are split):

* ``E10.-`` / ``E10-`` / ``O24.4-`` / ``E10`` / ``P70.2`` -> the code and every descendant
  (prefix match on the dot-less code);
* ``E10-E14`` / ``S00.0-S00.9`` -> a range, compared lexicographically on the dot-less code cut
  to the length of each end (so ``E14.9`` is inside ``E10-E14``).

What it cannot parse, and how it fails (always towards *fewer* conflicts, except the last):

* notes without a parenthesised code (~2% of notes, e.g. ``'disorders of:'`` headers whose
  children are listed on separate lines, or ``'... E72.4'`` without parentheses) are ignored;
* tokens that are not a code whose 3-character category exists (``(G6PD)``, ``(RSV)``) are
  ignored;
* a predicted code *shorter* than the excluded code (``E10`` against ``(E10.9)``) does not match:
  a truncated code cannot be shown to conflict;
* qualifiers after a code (``(V01-V09 with 5th character 9)``, ``(E08-E13 with .51-.52)``) are
  dropped, so the range is taken whole: this over-fires, which only sends more codes to review.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import simple_icd_10_cm as cm
from scipy import sparse

from medcoder.codesets.spelling import dotless

__all__ = [
    "conflict_matrix",
    "conflicting_pairs",
    "excluded_by",
    "excludes1_specs",
    "parse_note",
]

_CODE = r"[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?"
_SPEC = re.compile(
    rf"(?<![0-9A-Za-z])(?:({_CODE})(?:\.?-)?\s*-\s*({_CODE})(?:\.?-)?|({_CODE})(?:\.?-)?)"
    r"(?![0-9A-Za-z])"
)
_PAREN = re.compile(r"\(([^()]*)\)")

Spec = tuple[str, str]


def _category_exists(code: str) -> bool:
    try:
        return bool(cm.is_valid_item(code[:3]))
    except Exception:  # noqa: BLE001 - the library raises on odd input; treat as unknown
        return False


def parse_note(note: str) -> list[Spec]:
    """Code specs ``(low, high)`` (dot-less, inclusive) named in one Excludes1 note."""
    specs: list[Spec] = []
    for group in _PAREN.findall(note):
        for m in _SPEC.finditer(group):
            lo, hi, single = m.group(1), m.group(2), m.group(3)
            if single is not None:
                lo = hi = single
            lo, hi = dotless(lo), dotless(hi)
            if _category_exists(lo) and _category_exists(hi):
                specs.append((lo, hi))
    return specs


def _in_spec(code: str, spec: Spec) -> bool:
    lo, hi = spec
    return code[: len(lo)] >= lo and code[: len(hi)] <= hi


def _notes_for(code: str) -> list[str]:
    if not cm.is_valid_item(code):
        return []
    items = [code, *cm.get_ancestors(code)]
    notes: list[str] = []
    for item in items:
        try:
            notes.extend(cm.get_excludes1(item))
        except ValueError:
            continue
    return notes


@lru_cache(maxsize=65536)
def excludes1_specs(code: str) -> tuple[Spec, ...]:
    """Forbidden partner specs for ``code`` (its own notes and its ancestors'); cached.

    Invalid codes have none. Specs that would cover the code itself are dropped (a note never
    forbids a code together with itself).
    """
    try:
        notes = _notes_for(code.strip())
    except Exception:  # noqa: BLE001 - unknown / malformed code: no known exclusions
        return ()
    me = dotless(code)
    out: list[Spec] = []
    for note in notes:
        for spec in parse_note(note):
            if not _in_spec(me, spec) and spec not in out:
                out.append(spec)
    return tuple(out)


@lru_cache(maxsize=262144)
def excluded_by(code: str, other: str) -> bool:
    """True when an Excludes1 note on ``code`` (or an ancestor) forbids ``other`` with it."""
    o = dotless(other)
    return any(_in_spec(o, spec) for spec in excludes1_specs(code))


def conflicting_pairs(codes: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of codes that may not be coded together.

    Checked in both directions (the tables are not perfectly symmetric), so either code's note
    suffices.
    """
    pairs: list[tuple[int, int]] = []
    n = len(codes)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = codes[i], codes[j]
            if dotless(a) == dotless(b):
                continue
            if excluded_by(a, b) or excluded_by(b, a):
                pairs.append((i, j))
    return pairs


SpecsFn = Callable[[str], tuple[Spec, ...]]


@lru_cache(maxsize=8)
def conflict_matrix(label_codes: tuple[str, ...], specs: SpecsFn | None = None) -> sparse.csr_matrix:
    """Symmetric boolean ``(n_labels, n_labels)`` matrix: codes ``i`` and ``j`` may not be coded
    together. Built once per label space (cached), so routing thousands of notes is one sparse
    product instead of a pairwise loop per note.

    Every spec covers a contiguous run of the sorted dot-less codes (``c[:len(lo)] >= lo`` iff
    ``c >= lo``; ``c[:len(hi)] <= hi`` iff ``c < hi + "\\x7f"``), so each spec is two bisections.
    Equal codes in two spellings never conflict. ``specs`` gives a code's Excludes1 specs (a
    :meth:`CodeSet.excludes1`); the default is the FY2026 tabular list of ``simple-icd-10-cm``.
    """
    specs_of = excludes1_specs if specs is None else specs
    norm = [dotless(c) for c in label_codes]
    order = sorted(range(len(norm)), key=norm.__getitem__)
    keys = [norm[i] for i in order]
    rows: list[int] = []
    cols: list[int] = []
    for i, code in enumerate(label_codes):
        for lo, hi in specs_of(code):
            a = bisect.bisect_left(keys, lo)
            b = bisect.bisect_left(keys, hi + "\x7f")
            for k in range(a, b):
                j = order[k]
                if norm[j] != norm[i]:
                    rows.append(i)
                    cols.append(j)
    n = len(label_codes)
    m = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int8), (np.asarray(rows, int), np.asarray(cols, int))),
        shape=(n, n),
    )
    m = ((m + m.T) > 0).astype(np.int8)
    return sparse.csr_matrix(m)
