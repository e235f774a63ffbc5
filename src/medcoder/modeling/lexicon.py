"""Lexicon strings: how notes and lexicon entries are normalised, and ICD-10-CM wording as entries.

Why a module of its own: the dictionary view (:mod:`medcoder.modeling.dictionary`) matches these
strings, and the training workflow builds a run's ``descriptions`` fit resource with
:func:`icd10cm_descriptions` (a view that wants code wording asks for it by name, see
:data:`medcoder.modeling.scorer.FIT_RESOURCES`). Pure functions of their inputs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

__all__ = ["STOPWORDS", "description_variants", "icd10cm_descriptions", "is_informative", "normalize",
           "normalize_with_offsets"]

# Stopwords used only to drop uninformative lexicon entries (a mention made of nothing else).
STOPWORDS = frozenset(
    ["a", "al", "ante", "bajo", "con", "contra", "de", "del", "desde", "el", "en", "entre", "hacia", "hasta", "la", "las", "le", "les", "lo", "los", "mas", "mi", "no", "o", "para", "por", "que", "se", "si", "sin", "sobre", "su", "sus", "tras", "un", "una", "uno", "unos", "unas", "y", "e", "u", "ni", "muy", "ya", "tipo", "the", "of", "and", "or", "in", "on", "at", "to", "for", "with", "without", "by", "from", "an", "as", "is", "are", "was", "were", "be", "been", "this", "that", "other", "others", "otro", "otra", "otros", "otras", "unspecified", "not", "nos"]
)

# --------------------------------------------------------------------------- normalisation


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """Normalise ``text`` and map every output character to its original index.

    Lower-case, NFKD without combining marks (accents), non-alphanumerics -> one space, no
    leading/trailing space. ``offsets[i]`` is the index in ``text`` of the character that produced
    normalised character ``i`` (a match ``norm[s:e]`` is ``text[offsets[s]:offsets[e-1] + 1]``).
    """
    out: list[str] = []
    offsets: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        if ch.isascii():
            pieces = ch.lower()
        else:
            pieces = "".join(
                c for c in unicodedata.normalize("NFKD", ch.lower()) if not unicodedata.combining(c)
            )
        for c in pieces:
            if c.isalnum():
                if pending_space and out:
                    out.append(" ")
                    offsets.append(i)
                pending_space = False
                out.append(c)
                offsets.append(i)
            else:
                pending_space = True
    return "".join(out), offsets


def normalize(text: str) -> str:
    return normalize_with_offsets(text)[0]


def is_informative(norm: str, min_chars: int) -> bool:
    """A normalised entry worth keeping: ``min_chars`` long and not only stopwords and numbers."""
    if len(norm) < min_chars:
        return False
    return any(not (tok in STOPWORDS or tok.isdigit()) for tok in norm.split())


# --------------------------------------------------------------------------- descriptions


_PAREN = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_LEAD = re.compile(r"^(other specified|other and unspecified|unspecified|other)\s+", re.I)
_TAIL = re.compile(
    r"\s*,?\s*(unspecified|not elsewhere classified|without complications?|nos|nec)\s*$", re.I
)


def description_variants(text: str) -> list[str]:
    """A description plus cheap surface variants that notes actually contain.

    ``"Essential (primary) hypertension"`` -> also ``"Essential hypertension"``;
    ``"Pneumonia, unspecified organism"`` -> also ``"Pneumonia"``; leading "Other"/"Unspecified"
    and trailing ", unspecified"/"without complications" are dropped. Generic leftovers are
    removed later by the stopword / length filter.
    """
    out = [text]
    no_paren = _PAREN.sub("", text).strip()
    out.append(no_paren)
    head = no_paren.split(",")[0].strip()
    out.append(head)
    for t in (no_paren, head):
        out.append(_TAIL.sub("", _LEAD.sub("", t)).strip())
    return list(dict.fromkeys(v for v in out if v))


def icd10cm_descriptions(
    codes: Sequence[str], *, fiscal_year: int = 2026, inclusion_terms: bool = True, variants: bool = True,
    codeset: Any = None,
) -> dict[str, list[str]]:
    """English strings per diagnosis code from the code set of ``fiscal_year`` (or ``codeset``):
    the code's own description (a parent's wording is too broad for a lexicon) and its
    inclusion terms (:meth:`CodeSet.inclusion_terms`; one code-set truth).

    For :meth:`DictionaryScorer.fit` ``descriptions=`` (English notes have no mention spans).
    """
    from medcoder.codesets import load_codeset

    cs = codeset if codeset is not None else load_codeset(fiscal_year)
    out: dict[str, list[str]] = {}
    for code in codes:
        strings: list[str] = []
        desc = cs.description(code)
        if desc:
            strings.append(desc)
        if inclusion_terms:
            strings.extend(cs.inclusion_terms(code))
        if variants:
            strings = [v for s in strings for v in description_variants(s)]
        if strings:
            out[code] = list(dict.fromkeys(strings))
    return out
