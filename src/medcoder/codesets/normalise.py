"""Input code -> the canonical code of a given code set, with the rule that got it there
(:func:`resolve_code`; :meth:`CodeSet.normalise` is the usual way to call it).

Why rules and not a fuzzy match: a gold label that silently turns into another code corrupts
training and evaluation, so each step is small, deterministic and recorded, and the lossy one is
named as such. The rules were chosen on CodiEsp-D (2,557 distinct codes, 2018 Spanish edition):
2,459 are valid FY2026 codes as written; all 98 others are *truncated placeholder forms* — the
7th (encounter) character was cut and the ``X`` placeholders left behind (``T81.4XX`` for
``T81.4XXA``, ``S02.0XX``, ``T68.XXX``, ``M80.08X``).

Rules, tried in order (the first that yields a code of the set wins):

1. ``as_is``  — the string is a code of the set exactly as written;
2. ``format`` — after strip, upper-case, removing spaces and a trailing dot, and putting the dot
   after the 3-character category (``e119`` / ``E11.9 `` -> ``E11.9``);
3. ``placeholder_x`` — trailing placeholder ``X`` characters after the dot removed one at a time
   (``T81.4XX`` -> ``T81.4X`` -> ``T81.4``; ``T68.XXX`` -> ``T68``). The result is the code the
   truncated form stood for; it is often a header (not billable), which the caller can check;
4. ``ancestor`` (only with ``allow_ancestor=True``; **lossy**) — the nearest code of the set that
   is a prefix (``R52.9`` -> ``R52``): more general than the input, so migration never applies it
   silently (see :mod:`medcoder.codesets.migration`);
5. ``failed`` — malformed (not letter-digit-alphanumeric[.1-4 more]) or no prefix is a code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from medcoder.codesets.spelling import CODE_PATTERN, dotted

__all__ = ["RULES", "CodeLookup", "NormalisationReport", "NormalisedCode", "resolve_code", "resolve_codes"]

AS_IS = "as_is"
FORMAT = "format"
PLACEHOLDER_X = "placeholder_x"
ANCESTOR = "ancestor"
FAILED = "failed"
RULES: tuple[str, ...] = (AS_IS, FORMAT, PLACEHOLDER_X, ANCESTOR, FAILED)


class CodeLookup(Protocol):
    """What the rules ask of a code set (a :class:`~medcoder.codesets.base.CodeSet` is one).

    A protocol, not an import of ``CodeSet``: the code set calls these rules
    (``CodeSet.normalise``), so this module must not depend on it back.
    """

    fiscal_year: int

    def is_valid(self, code: str) -> bool: ...

    def parent(self, code: str) -> str | None: ...


@dataclass(frozen=True)
class NormalisedCode:
    """One input code and what it became. ``code`` is None when normalisation failed."""

    raw: str
    code: str | None
    rule: str

    @property
    def ok(self) -> bool:
        return self.code is not None

    @property
    def lossy(self) -> bool:
        """The result is more general than the input (an ancestor), not the same code."""
        return self.rule == ANCESTOR


def _formatted(raw: str) -> str | None:
    text = raw.strip().upper().replace(" ", "").rstrip(".")
    if not text:
        return None
    code = dotted(text)
    return code if CODE_PATTERN.match(code) else None


def resolve_code(codeset: CodeLookup, raw: str, *, allow_ancestor: bool = True) -> NormalisedCode:
    """Resolve ``raw`` against ``codeset``: the first of the module's rules that yields a code of
    the set wins (see the module docstring). Unlike :func:`medcoder.data.codes.canonical_code`,
    which only fixes a string's format, this may change the code (placeholders, ancestors), and
    says which rule did."""
    if codeset.is_valid(raw) and raw == dotted(raw):
        return NormalisedCode(raw, raw, AS_IS)
    code = _formatted(raw)
    if code is None:
        return NormalisedCode(raw, None, FAILED)
    if codeset.is_valid(code):
        return NormalisedCode(raw, code, FORMAT)
    stripped = code
    while "." in stripped and stripped.endswith("X"):
        stripped = stripped[:-1].rstrip(".")
        if codeset.is_valid(stripped):
            return NormalisedCode(raw, stripped, PLACEHOLDER_X)
    if allow_ancestor:
        ancestor = codeset.parent(code)
        if ancestor is not None:
            return NormalisedCode(raw, ancestor, ANCESTOR)
    return NormalisedCode(raw, None, FAILED)


@dataclass
class NormalisationReport:
    """Results for many codes (distinct inputs, first-seen order) and counts per rule."""

    fiscal_year: int
    results: list[NormalisedCode] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.rule for r in self.results)
        return {rule: c.get(rule, 0) for rule in RULES}

    @property
    def failed(self) -> list[str]:
        """Inputs that could not be normalised: the list a person has to look at."""
        return [r.raw for r in self.results if not r.ok]

    @property
    def mapping(self) -> dict[str, str]:
        """Input -> normalised code, for the inputs that could be normalised."""
        return {r.raw: r.code for r in self.results if r.code is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "fiscal_year": self.fiscal_year,
            "counts": self.counts,
            "failed": self.failed,
            "changed": {r.raw: r.code for r in self.results if r.ok and r.rule != AS_IS},
        }


def resolve_codes(codeset: CodeLookup, codes: Iterable[str], *, allow_ancestor: bool = True) -> NormalisationReport:
    """Resolve each distinct input code once (:func:`resolve_code`), with counts per rule."""
    report = NormalisationReport(fiscal_year=codeset.fiscal_year)
    for raw in dict.fromkeys(codes):
        report.results.append(resolve_code(codeset, raw, allow_ancestor=allow_ancestor))
    return report
