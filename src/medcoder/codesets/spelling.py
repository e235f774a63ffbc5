"""How an ICD-10-CM code is spelled: the dotted CMS form and the dot-less key.

Why a module of its own: the code set (:mod:`medcoder.codesets.base`), the rules that resolve an
input code against it (:mod:`medcoder.codesets.normalise`), the source readers and the Excludes1
parser all compare codes in these two spellings. Keeping them below all of those (this module
imports nothing of the package) lets the dependencies between the others run one way.
"""

from __future__ import annotations

import re

__all__ = ["CODE_PATTERN", "dotless", "dotted"]

CODE_PATTERN = re.compile(r"^[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?$")
"""Shape of a dotted ICD-10-CM code: 3-character category, then up to 4 characters after a dot."""


def dotless(code: str) -> str:
    """``' e11.9 '`` -> ``'E119'``: upper case, no dot, no blanks. The spelling of CMS's order
    file, and the key Excludes1 ranges are compared on (prefixes and lexicographic ranges work on
    it without the dot getting in the way)."""
    return code.strip().upper().replace(".", "").replace(" ", "")


def dotted(code: str) -> str:
    """``'e119'`` / ``'E11.9'`` -> ``'E11.9'``; 3-character categories have no dot (``'I10'``)."""
    d = dotless(code)
    return f"{d[:3]}.{d[3:]}" if len(d) > 3 else d
