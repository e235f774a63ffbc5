"""What changed between two fiscal years: added, deleted, billability changed, revised.

Why both code-level and billable-level counts: CMS announces changes in *billable* codes ("FY2026:
487 new codes, 28 deleted"), and ``G35`` multiple sclerosis is "deleted" in that sense although it
still exists as a header over its new subcodes. A migration needs both views: a code absent from
the new year is unusable, a code that became a header must be re-coded by a person.

One row per code that differs (``change`` is the first that applies):

* ``added`` / ``deleted`` — the code exists in only one year;
* ``billable_to_header`` / ``header_to_billable`` — in both years, billability flipped (``G35``);
* ``revised`` — in both years, same billability, description changed.

``description_changed`` is reported on every row present in both years. Descriptions are compared
after folding case, accents and whitespace, and cutting at ``"/\\t"`` (``simple-icd-10-cm`` appends
alternative 7th-character terms that way), so the count reflects wording changes rather than how
two sources spell the same title; a few source-specific differences remain when the two years
come from different sources (e.g. ``H34.8112`` where ``simple-icd-10-cm`` appends an inclusion
term after ``/``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medcoder.atomic import atomic_write_text
from medcoder.codesets.base import CodeSet
from medcoder.ownership import claim_outputs

__all__ = ["CHANGES", "CodeChange", "CodeSetDiff", "diff_codesets", "write_diff"]

CHANGES = ("added", "deleted", "billable_to_header", "header_to_billable", "revised")


@dataclass(frozen=True)
class CodeChange:
    code: str
    change: str
    from_billable: bool | None
    to_billable: bool | None
    description_changed: bool
    from_description: str
    to_description: str


def _comparable(description: str) -> str:
    text = description.split("/\t")[0]
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", text).strip().casefold()


@dataclass
class CodeSetDiff:
    """Changes from ``from_fy`` to ``to_fy`` (sorted by code) plus both sets' sizes."""

    from_fy: int
    to_fy: int
    from_source: str
    to_source: str
    sizes: dict[str, int]
    changes: list[CodeChange]

    def codes(self, change: str) -> list[str]:
        return [c.code for c in self.changes if c.change == change]

    def summary(self) -> dict[str, Any]:
        """Counts per change, plus CMS-style billable additions/deletions."""
        counts = {name: len(self.codes(name)) for name in CHANGES}
        billable_added = [c.code for c in self.changes if c.to_billable and not c.from_billable]
        billable_deleted = [c.code for c in self.changes if c.from_billable and not c.to_billable]
        return {
            "from_fy": self.from_fy,
            "to_fy": self.to_fy,
            "from_source": self.from_source,
            "to_source": self.to_source,
            **self.sizes,
            **counts,
            "description_changed": sum(c.description_changed for c in self.changes),
            "billable_added": len(billable_added),
            "billable_deleted": len(billable_deleted),
            "billable_deleted_codes": billable_deleted,
        }

    def summary_text(self) -> str:
        s = self.summary()
        return (
            f"ICD-10-CM FY{self.from_fy} -> FY{self.to_fy}: "
            f"{s['from_codes']} -> {s['to_codes']} codes ({s['from_billable']} -> {s['to_billable']} billable); "
            f"billable codes added {s['billable_added']}, deleted {s['billable_deleted']}; "
            f"codes added {s['added']}, deleted {s['deleted']}, billable->header {s['billable_to_header']}, "
            f"header->billable {s['header_to_billable']}, revised {s['revised']}"
        )


def diff_codesets(old: CodeSet, new: CodeSet) -> CodeSetDiff:
    """Every code that was added, deleted, changed billability or was revised."""
    changes: list[CodeChange] = []
    desc_old, desc_new = old.descriptions, new.descriptions
    bill_old, bill_new = old.billable_codes, new.billable_codes
    for code in sorted(desc_old.keys() | desc_new.keys()):
        in_old, in_new = code in desc_old, code in desc_new
        d_old, d_new = desc_old.get(code, ""), desc_new.get(code, "")
        b_old = code in bill_old if in_old else None
        b_new = code in bill_new if in_new else None
        desc_changed = in_old and in_new and d_old != d_new and _comparable(d_old) != _comparable(d_new)
        if not in_old:
            change = "added"
        elif not in_new:
            change = "deleted"
        elif b_old and not b_new:
            change = "billable_to_header"
        elif b_new and not b_old:
            change = "header_to_billable"
        elif desc_changed:
            change = "revised"
        else:
            continue
        changes.append(CodeChange(code, change, b_old, b_new, bool(desc_changed), d_old, d_new))
    sizes = {
        "from_codes": len(old),
        "from_billable": len(old.billable_codes),
        "to_codes": len(new),
        "to_billable": len(new.billable_codes),
    }
    return CodeSetDiff(old.fiscal_year, new.fiscal_year, old.source, new.source, sizes, changes)


def write_diff(diff: CodeSetDiff, output_dir: str | Path) -> dict[str, Path]:
    """``codeset_diff.csv`` (one row per change), ``summary.json`` and ``summary.txt``, atomically.

    ``output_dir`` may be a user's folder: a file of those names there that medcoder did not write
    is never replaced (one-line ``ConfigError`` before anything is written; :mod:`medcoder.ownership`).
    """
    out = Path(output_dir)
    buf = io.StringIO()
    fields = list(CodeChange.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for change in diff.changes:
        writer.writerow(asdict(change))
    paths = {"csv": out / "codeset_diff.csv", "summary": out / "summary.json", "text": out / "summary.txt"}
    claim_outputs(out, [p.name for p in paths.values()], kind="codeset_diff")
    atomic_write_text(paths["csv"], buf.getvalue())
    atomic_write_text(paths["summary"], json.dumps(diff.summary(), indent=1) + "\n")
    atomic_write_text(paths["text"], diff.summary_text() + "\n")
    return paths
