"""Human-readable descriptions for ICD-10-CM diagnosis codes, for coders reading predictions.

Why best-effort: CodiEsp uses the Spanish CIE10-ES, which has codes the US ICD-10-CM lacks, and
corpora carry partial codes. A description of the nearest valid parent ("Z20.8" for "Z20.8188") is
still useful to a reviewer, and a missing description must never stop training or prediction, so
this never raises and returns "" when nothing matches.

Procedure (PCS) codes get "" (``code_type="P"``): ``simple_icd_10_cm`` covers diagnoses only, and
a PCS code's prefix can collide with an unrelated diagnosis category.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def _candidates(code: str) -> list[str]:
    """The code, then ever shorter prefixes down to the 3-character category."""
    code = code.strip().upper().rstrip(".")
    out = []
    while len(code.replace(".", "")) >= 3:
        out.append(code)
        code = code[:-1].rstrip(".")
    return out


def code_descriptions(codes: list[str], *, code_type: str = "D") -> dict[str, str]:
    """Map each code to its ICD-10-CM description (or its nearest valid parent's, or "")."""
    result = dict.fromkeys(codes, "")
    if code_type != "D" or not codes:
        return result
    try:
        import simple_icd_10_cm as cm  # slow import (~3 s): only when descriptions are wanted
    except Exception:  # optional enrichment, never fatal
        logger.warning("simple_icd_10_cm unavailable; code descriptions left empty")
        return result
    for code in result:
        if not isinstance(code, str):
            continue
        for candidate in _candidates(code):
            try:
                if cm.is_valid_item(candidate):
                    result[code] = cm.get_description(candidate)
                    break
            except Exception:  # a library quirk must not stop a run
                continue
    return result
