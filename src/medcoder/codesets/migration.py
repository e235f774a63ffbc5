"""Move a labeled corpus to another fiscal year: every gold code gets one category, nothing is guessed.

Categories (per distinct code; the first rule that applies wins):

1. ``unchanged`` — a *billable* code of the target year exactly as written;
2. ``normalised`` — a billable code of the target year after :mod:`medcoder.codesets.normalise`'s
   lossless rules (``format``, ``placeholder_x``); the document gets the normalised spelling;
3. ``remapped`` — the target year's conversion table (CMS, previous -> current) maps the code to
   exactly one valid target code; the document gets that code;
4. ``flagged`` — a code-set change that only a person can resolve; the document **keeps the
   original code** and is listed in ``flagged_documents.csv`` with the candidates:

   * the conversion table maps the code to several target codes (``conversion_one_to_many``);
   * the code was billable in the reference year but is a header in the target year, i.e. it was
     split into new subcodes (``now_header``; ``G35`` in FY2026, candidates ``G35.A`` ...);
   * the code existed in the reference year and is gone from the target year
     (``deleted_in_target``; candidates: the billable codes under its nearest valid ancestor);

5. ``unmappable`` — not a code of the target year (even after normalisation), no table entry, not
   a known deletion: e.g. a Spanish CIE-10-ES code that ICD-10-CM never had. Kept as written by
   default (``on_unmappable="keep"``, so no gold label silently disappears; routing's
   ``invalid_code`` rule sends such predictions to review), or dropped (``"drop"``). The nearest
   valid ancestor is given as a hint (``candidates``), never applied.

Two more rules for codes that are valid **headers** (not billable) in the target year: when the
reference year does not say they were billable, they stay as they are (``unchanged`` /
``normalised``, with ``target_billable=False``): CodiEsp's truncated forms (``T81.4XX`` ->
``T81.4``) were headers in the source coding too, so nothing changed with the year.

The *reference year* is the code set the corpus was coded with when that is an ICD-10-CM year
we can load (``from_fy``); otherwise the year before the target when available (the usual case:
a corpus coded last year). Without a reference year, splits and deletions cannot be told apart
from codes that never existed, and the report says so.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from medcoder.atomic import atomic_write_text
from medcoder.codesets.base import CodeSet
from medcoder.codesets.normalise import AS_IS
from medcoder.constraints import path_part_problem
from medcoder.data._common import build_dataset
from medcoder.data.codes import dedupe
from medcoder.data.codiesp import RELEASE_DIRNAME, TEXT_DIRS
from medcoder.errors import ConfigError, DataError
from medcoder.ownership import claim_outputs

__all__ = [
    "CATEGORIES",
    "CodeMapping",
    "MigrationResult",
    "data_override",
    "map_code",
    "migrate_dataset",
    "write_migration",
]

UNCHANGED, NORMALISED, REMAPPED, FLAGGED, UNMAPPABLE = CATEGORIES = (
    "unchanged",
    "normalised",
    "remapped",
    "flagged",
    "unmappable",
)
ON_UNMAPPABLE = ("keep", "drop")
#: The report files :func:`write_migration` writes beside the corpus.
REPORT_FILES = ("code_mapping.csv", "flagged_documents.csv", "migration_report.json")
SPLITS_ORDER = ("train", "dev", "test")


@dataclass(frozen=True)
class CodeMapping:
    """What one distinct gold code becomes. ``target_code`` is what the migrated corpus holds
    (the original code for ``flagged`` and kept ``unmappable`` codes)."""

    code: str
    category: str
    rule: str
    target_code: str
    target_billable: bool
    candidates: tuple[str, ...] = ()


def map_code(code: str, target: CodeSet, reference: CodeSet | None = None) -> CodeMapping:
    """Apply the module's rules to one code (see the module docstring)."""
    n = target.normalise(code, allow_ancestor=False)
    same = n.rule == AS_IS
    if n.ok and target.is_billable(n.code):
        return CodeMapping(code, UNCHANGED if same else NORMALISED, n.rule, n.code, True)

    conv = target.conversions.get(code) or (target.conversions.get(n.code) if n.ok else None) or ()
    valid_conv = tuple(sorted(c for c in conv if target.is_valid(c)))
    if len(valid_conv) == 1:
        new = valid_conv[0]
        return CodeMapping(code, REMAPPED, "conversion_table", new, target.is_billable(new))
    if len(valid_conv) > 1:
        return CodeMapping(code, FLAGGED, "conversion_one_to_many", code, False, valid_conv)

    if n.ok:  # a valid header of the target year
        if reference is not None and reference.is_billable(n.code):
            return CodeMapping(code, FLAGGED, "now_header", code, False, tuple(target.billable_descendants(n.code)))
        return CodeMapping(code, UNCHANGED if same else NORMALISED, n.rule, n.code, False)

    ancestor = target.parent(code)
    in_reference = reference is not None and reference.normalise(code, allow_ancestor=False).ok
    if in_reference:
        options = tuple(target.billable_descendants(ancestor)) if ancestor else ()
        return CodeMapping(code, FLAGGED, "deleted_in_target", code, False, options)
    return CodeMapping(code, UNMAPPABLE, "not_in_target", code, False, (ancestor,) if ancestor else ())


@dataclass
class MigrationResult:
    """The migrated corpus, one mapping per distinct code, and per-document review rows."""

    data: datasets.DatasetDict
    to_fy: int
    reference_fy: int | None
    target_source: str
    on_unmappable: str
    mappings: dict[str, CodeMapping]
    n_docs: dict[str, int]
    occurrences: Counter[str]
    review_rows: list[dict[str, str]] = field(default_factory=list)
    n_docs_changed: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts only (codes and ids, never note text): safe to log anywhere."""
        distinct = Counter(m.category for m in self.mappings.values())
        occ: Counter[str] = Counter()
        for code, m in self.mappings.items():
            occ[m.category] += self.occurrences[code]
        docs_flagged = {(r["split"], r["id"]) for r in self.review_rows if r["category"] == FLAGGED}
        docs_unmappable = {(r["split"], r["id"]) for r in self.review_rows if r["category"] == UNMAPPABLE}
        rules = Counter(m.rule for m in self.mappings.values())
        return {
            "to_fy": self.to_fy,
            "reference_fy": self.reference_fy,
            "target_source": self.target_source,
            "on_unmappable": self.on_unmappable,
            "n_docs": dict(self.n_docs),
            "n_distinct_codes": len(self.mappings),
            "n_code_occurrences": sum(self.occurrences.values()),
            "distinct_codes": {c: distinct.get(c, 0) for c in CATEGORIES},
            "code_occurrences": {c: occ.get(c, 0) for c in CATEGORIES},
            "rules": dict(sorted(rules.items())),
            "distinct_codes_not_billable_in_target": sum(
                1 for m in self.mappings.values() if m.category in (UNCHANGED, NORMALISED) and not m.target_billable
            ),
            "n_docs_changed": self.n_docs_changed,
            "n_docs_flagged": len(docs_flagged),
            "n_docs_with_unmappable": len(docs_unmappable),
        }

    def summary_text(self) -> str:
        s = self.summary()
        d, o = s["distinct_codes"], s["code_occurrences"]
        parts = ", ".join(f"{c} {d[c]} ({o[c]})" for c in CATEGORIES)
        ref = f"FY{self.reference_fy}" if self.reference_fy else "none"
        return (
            f"migrated to ICD-10-CM FY{self.to_fy} (reference year {ref}): {s['n_distinct_codes']} distinct codes "
            f"({s['n_code_occurrences']} occurrences): {parts}; valid but not billable: "
            f"{s['distinct_codes_not_billable_in_target']}; documents changed {s['n_docs_changed']}, "
            f"flagged {s['n_docs_flagged']}, with unmappable codes {s['n_docs_with_unmappable']}"
        )


def migrate_dataset(
    data: datasets.DatasetDict,
    target: CodeSet,
    reference: CodeSet | None = None,
    *,
    on_unmappable: str = "keep",
) -> MigrationResult:
    """Map every gold code of every split (rows keep their id and text; see the module docstring).

    Occurrences are counted per document (a loaded corpus has each code at most once per note).
    """
    if on_unmappable not in ON_UNMAPPABLE:
        raise ConfigError(f"on_unmappable={on_unmappable!r} is not supported", hint=f"use one of {', '.join(ON_UNMAPPABLE)}")
    mappings: dict[str, CodeMapping] = {}
    occurrences: Counter[str] = Counter()
    n_docs: dict[str, int] = {}
    review: list[dict[str, str]] = []
    changed = 0
    out = datasets.DatasetDict()
    for split, ds in data.items():
        missing = {"id", "text", "codes"} - set(ds.column_names)
        if missing:
            raise DataError(f"split {split!r}: missing column(s) {sorted(missing)}", hint="load the corpus with load_corpus")
        new_codes: list[list[str]] = []
        for doc_id, codes in zip(ds["id"], ds["codes"], strict=True):
            mapped: list[str] = []
            for code in codes:
                m = mappings.get(code) or mappings.setdefault(code, map_code(code, target, reference))
                occurrences[code] += 1
                if m.category in (FLAGGED, UNMAPPABLE):
                    review.append({"split": split, "id": str(doc_id), "code": code, "category": m.category,
                                   "rule": m.rule, "candidates": " ".join(m.candidates)})
                if not (m.category == UNMAPPABLE and on_unmappable == "drop"):
                    mapped.append(m.target_code)
            mapped = dedupe(mapped)
            changed += mapped != list(codes)
            new_codes.append(mapped)
        n_docs[split] = len(ds)
        out[split] = build_dataset(list(ds["id"]), list(ds["text"]), new_codes)
    return MigrationResult(out, target.fiscal_year, reference.fiscal_year if reference else None, target.source,
                           on_unmappable, mappings, n_docs, occurrences, review, changed)


# --- writing ---------------------------------------------------------------------------------------
def _csv_text(rows: list[Mapping[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _write_split(ds: datasets.Dataset, path: Path, fmt: str) -> None:
    if fmt == "csv":
        rows = [{"id": r["id"], "text": r["text"], "codes": ";".join(r["codes"])} for r in ds]
        atomic_write_text(path, _csv_text(rows, ["id", "text", "codes"]))
    else:
        lines = (json.dumps({"id": r["id"], "text": r["text"], "codes": r["codes"]}, ensure_ascii=False) for r in ds)
        atomic_write_text(path, "\n".join(lines) + "\n")


def _write_codiesp(data: Mapping[str, datasets.Dataset], out: Path, language: str) -> Path:
    """The corpus in CodiEsp's own release layout (``{split}/{split}D.tsv`` + one ``.txt`` per
    note), so ``data=codiesp_d_<lang> data.root=<this>`` reads it like the original. Built in a
    temp folder and renamed: 1,000 files must not be left half-written."""
    release = out / RELEASE_DIRNAME
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".codiesp.", suffix=".partial"))
    try:
        for split, ds in data.items():
            text_dir = tmp / split / TEXT_DIRS[language]
            text_dir.mkdir(parents=True)
            rows = []
            for r in ds:
                why = path_part_problem(r["id"])
                if why is not None:  # the id becomes a file name: never a path out of the release
                    raise DataError(f"split {split!r}: note id {ascii(r['id'])} cannot be a file name: {why}",
                                    hint="write the migrated corpus as jsonl or csv, or fix the ids")
                (text_dir / f"{r['id']}.txt").write_text(r["text"], encoding="utf-8")
                rows += [f"{r['id']}\t{c}" for c in r["codes"]]
            (tmp / split / f"{split}D.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        if release.exists():  # medcoder's own, earlier migration: claim_outputs checked it
            shutil.rmtree(release)
        os.replace(tmp, release)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return release


def write_migration(
    result: MigrationResult, output_dir: str | Path, *, fmt: str = "jsonl", language: str = "en"
) -> dict[str, Path]:
    """Write the corpus in the input's format — ``{split}.jsonl`` / ``.csv`` (``id,text,codes``)
    or CodiEsp's release layout (``fmt="codiesp"``) — and the report (``migration_report.json``,
    ``code_mapping.csv``, ``flagged_documents.csv``), each atomically.

    The report files hold codes, ids and counts only; the note text is only in the corpus files.
    ``output_dir`` may be a user's folder: an entry of those names there that medcoder did not
    write (a CodiEsp release, a ``train.jsonl``) is never replaced or deleted (one-line
    ``ConfigError`` before anything is written; :mod:`medcoder.ownership`).
    """
    if fmt not in ("jsonl", "csv", "codiesp"):
        raise ConfigError(f"output format {fmt!r} is not supported", hint="use jsonl, csv or codiesp")
    out = Path(output_dir)
    splits = sorted(result.data, key=lambda s: (SPLITS_ORDER.index(s) if s in SPLITS_ORDER else 9, s))
    for split in splits:  # a split name becomes a file name
        why = path_part_problem(split)
        if why is not None:
            raise DataError(f"split {ascii(split)} cannot be a file name: {why}", hint="name the splits train, dev, test")
    corpus = [RELEASE_DIRNAME] if fmt == "codiesp" else [f"{split}.{fmt}" for split in splits]
    claim_outputs(out, [*corpus, *REPORT_FILES], kind="migrate_labels")
    paths: dict[str, Path] = {}
    if fmt == "codiesp":
        release = _write_codiesp(result.data, out, language)
        paths.update({split: release / split for split in result.data})
    else:
        for split in splits:
            paths[split] = out / f"{split}.{fmt}"
            _write_split(result.data[split], paths[split], fmt)

    mapping_rows = [
        {"code": m.code, "category": m.category, "rule": m.rule, "target_code": m.target_code,
         "target_billable": m.target_billable, "n_documents": result.occurrences[m.code], "candidates": " ".join(m.candidates)}
        for m in sorted(result.mappings.values(), key=lambda m: (CATEGORIES.index(m.category), m.code))
    ]
    paths["code_mapping"] = out / REPORT_FILES[0]
    atomic_write_text(paths["code_mapping"], _csv_text(mapping_rows, list(mapping_rows[0]) if mapping_rows else ["code"]))
    paths["flagged_documents"] = out / REPORT_FILES[1]
    atomic_write_text(paths["flagged_documents"],
                      _csv_text(result.review_rows, ["split", "id", "code", "category", "rule", "candidates"]))
    report = {**result.summary(), "data_override": data_override(paths, fmt, language=language, fy=result.to_fy),
              "files": {k: str(v) for k, v in paths.items()}}
    paths["report"] = out / REPORT_FILES[2]
    atomic_write_text(paths["report"], json.dumps(report, indent=1) + "\n")
    return paths


def data_override(paths: Mapping[str, Path], fmt: str = "jsonl", *, language: str = "en",
                  fy: int | None = None) -> str:
    """The command-line override that trains on the migrated corpus (missing splits -> null)."""
    if fmt == "codiesp":
        root = next(iter(paths.values())).parent.resolve()
        suffix = f"_fy{fy}" if fy else "_migrated"
        return (f"data=codiesp_d_{language} data.root={root} data.download=false "
                f"data.name=codiesp_d_{language}{suffix}" + (f" codeset.fiscal_year={fy}" if fy else ""))
    parts = [f"data={fmt}"]
    for split in SPLITS_ORDER:
        parts.append(f"data.{split}={paths[split].resolve() if split in paths else 'null'}")
    if fy:
        parts.append(f"codeset.fiscal_year={fy}")
    return " ".join(parts)

