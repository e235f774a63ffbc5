"""Human-readable descriptions for ICD-10-CM diagnosis codes, for coders reading predictions and
for the label-query initialisation (each code's query starts from its description's encoding).

Why best-effort: CodiEsp uses the Spanish CIE10-ES, which has codes the US ICD-10-CM lacks, and
corpora carry partial codes. A description of the nearest valid parent ("Z20.8" for "Z20.8188") is
still useful to a reviewer, and a missing description must never stop training or prediction, so
this never raises and returns "" when nothing matches.

Descriptions come from the :class:`~medcoder.codesets.CodeSet` of the configured fiscal year (one
source of code-set truth). Procedure (PCS) codes get "" (``code_type="P"``): the code sets hold
diagnoses only, and a PCS code's prefix can collide with an unrelated diagnosis category.
"""

from __future__ import annotations

import logging

from medcoder.codesets.base import CodeSet
from medcoder.codesets.registry import load_codeset

logger = logging.getLogger(__name__)

DEFAULT_DESCRIPTION_FY = 2026


def _candidates(code: str) -> list[str]:
    """The code, then ever shorter prefixes down to the 3-character category."""
    code = code.strip().upper().rstrip(".")
    out = []
    while len(code.replace(".", "")) >= 3:
        out.append(code)
        code = code[:-1].rstrip(".")
    return out


def code_descriptions(codes: list[str], *, code_type: str = "D", codeset: CodeSet | None = None,
                      fiscal_year: int | None = None) -> dict[str, str]:
    """Map each code to its ICD-10-CM description (or its nearest valid parent's, or "").

    ``codeset`` (or ``fiscal_year``, default FY2026) says which year's wording to use.
    """
    result = dict.fromkeys(codes, "")
    if code_type != "D" or not codes:
        return result
    try:
        cs = codeset or load_codeset(fiscal_year or DEFAULT_DESCRIPTION_FY)
    except Exception:  # noqa: BLE001 - optional enrichment, never fatal
        logger.warning("ICD-10-CM FY%s unavailable; code descriptions left empty", fiscal_year)
        return result
    for code in result:
        if not isinstance(code, str):
            continue
        for candidate in _candidates(code):
            description = cs.description(candidate)
            if description is not None:
                result[code] = description
                break
    return result
