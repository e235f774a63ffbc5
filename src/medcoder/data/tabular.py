"""Load users' own notes from JSON Lines or CSV files into the same ``{id, text, codes}`` shape.

Why: the rest of the pipeline only knows ``DatasetDict`` rows, so a hospital's export needs one
documented format, with errors that say which file, line and column to fix.

* ``jsonl``: one JSON object per line, ``codes`` a list of strings; blank lines are ignored.
* ``csv``: a header row; ``codes`` one cell with codes joined by ``codes_separator`` (``;``);
  an empty cell means no codes.

Codes are stripped, upper-cased and de-duplicated (``normalize_code(code, None)``: no dot
insertion, because the code system of a user's corpus is unknown). Errors: a missing file, a
missing column, a malformed JSON line, a wrong value type or a duplicate id -> ``DataError``
naming file, line and column. Empty/whitespace-only notes follow ``on_error`` exactly like
CodiEsp: ``"skip"`` (counted and logged by id) or ``"raise"``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import datasets

from medcoder.data._common import build_dataset, check_on_error, is_empty_note
from medcoder.data.codes import dedupe, normalize_code
from medcoder.data.report import LoadReport, SplitReport
from medcoder.errors import ConfigError, DataError

FORMATS = ("jsonl", "csv")

# (location for messages, id, text, codes)
_Row = tuple[str, str, str, list[str]]
# (id, text, codes); codes None = unlabeled notes (prediction input): no codes column required
_Columns = tuple[str, str, str | None]


def load_tabular(
    train: str | Path,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    *,
    format: str = "jsonl",
    id_column: str = "id",
    text_column: str = "text",
    codes_column: str = "codes",
    codes_separator: str = ";",
    on_error: str = "skip",
) -> datasets.DatasetDict:
    """Load ``train`` (required) and optional ``dev``/``test`` files into a ``DatasetDict``."""
    if format not in FORMATS:
        raise ConfigError(
            f"data.format={format!r} is not a tabular format", hint=f"use one of {', '.join(FORMATS)}"
        )
    check_on_error(on_error)
    columns = (id_column, text_column, codes_column)
    out = datasets.DatasetDict()
    report = LoadReport()
    for split, file in (("train", train), ("dev", dev), ("test", test)):
        if file is None:
            continue
        path = Path(file).expanduser()
        if not path.is_file():
            raise DataError(f"data.{split}={path}: file not found", hint="check the path in the data config")
        rows = _read_jsonl(path, columns) if format == "jsonl" else _read_csv(path, columns, codes_separator)
        out[split], report.splits[split] = _to_dataset(rows, on_error)
    report.log(f"tabular[{format}]")
    return out


def iter_unlabeled(
    path: str | Path, *, format: str, id_column: str = "id", text_column: str = "text"
) -> Iterator[tuple[str, str, str]]:
    """``(location, id, text)`` of every note in a JSONL/CSV file without codes (prediction input).

    Same parsing and the same one-line errors as training data; empty notes are kept (the caller
    routes them to review), duplicate ids are refused.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not a tabular format", hint=f"use one of {', '.join(FORMATS)}")
    path = Path(path)
    columns: _Columns = (id_column, text_column, None)
    rows = _read_jsonl(path, columns) if format == "jsonl" else _read_csv(path, columns, ";")
    seen: dict[str, str] = {}
    for where, doc_id, text, _ in rows:
        if doc_id in seen:
            raise DataError(f"{where}: duplicate id {doc_id!r} (first at {seen[doc_id]})",
                            hint="ids must be unique within a file")
        seen[doc_id] = where
        yield where, doc_id, text


def _to_dataset(rows: Iterator[_Row], on_error: str) -> tuple[datasets.Dataset, SplitReport]:
    report = SplitReport()
    seen: dict[str, str] = {}
    ids: list[str] = []
    texts: list[str] = []
    codes: list[list[str]] = []
    for where, doc_id, text, raw_codes in rows:
        if doc_id in seen:
            raise DataError(
                f"{where}: duplicate id {doc_id!r} (first at {seen[doc_id]})",
                hint="ids must be unique within a file",
            )
        seen[doc_id] = where
        if is_empty_note(text):
            if on_error == "raise":
                raise DataError(
                    f"{where}: empty note (id {doc_id!r})",
                    hint="remove the row, or set data.on_error=skip to skip empty notes",
                )
            report.empty_note_ids.append(doc_id)
            continue
        norm = [normalize_code(c, None) for c in raw_codes if c.strip()]
        kept = dedupe(norm)
        report.n_duplicate_labels += len(norm) - len(kept)
        ids.append(doc_id)
        texts.append(text)
        codes.append(kept)
    report.empty_note_ids.sort()
    report.n_docs = len(ids)
    report.n_labels = sum(map(len, codes))
    report.n_docs_without_codes = sum(1 for c in codes if not c)
    return build_dataset(ids, texts, codes), report


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})", hint="re-encode as UTF-8") from exc


def _id(value: object, where: str, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise DataError(f"{where}: column {column!r} must be a non-empty string or integer, got {value!r}")
    return str(value)


def _read_jsonl(path: Path, columns: _Columns) -> Iterator[_Row]:
    id_col, text_col, codes_col = columns
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno})",
                hint="each line must be one JSON object",
            ) from exc
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [c for c in columns if c is not None and c not in obj]
        if missing:
            raise DataError(
                f"{where}: missing column {missing[0]!r} (has {sorted(obj)})",
                hint="set data.id_column / data.text_column / data.codes_column to your field names",
            )
        text, codes = obj[text_col], (obj[codes_col] if codes_col is not None else [])
        if not isinstance(text, str):
            raise DataError(f"{where}: column {text_col!r} must be a string, got {type(text).__name__}")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise DataError(
                f"{where}: column {codes_col!r} must be a list of strings, got {codes!r}",
                hint='write codes as a JSON list, e.g. ["E11.9", "I10"]',
            )
        yield where, _id(obj[id_col], where, id_col), text, codes


def _read_csv(path: Path, columns: _Columns, sep: str) -> Iterator[_Row]:
    id_col, text_col, codes_col = columns
    with path.open(encoding="utf-8-sig", newline="") as fh:  # newline="": notes span lines
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
            for col in columns:
                if col is not None and col not in header:
                    raise DataError(
                        f"{path}:1: missing column {col!r} (header has {header})",
                        hint="set data.id_column / data.text_column / data.codes_column to your column names",
                    )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row:  # more cells than header columns: a quoting error, not data
                    raise DataError(f"{where}: more cells than header columns", hint="quote cells that contain commas")
                if row[text_col] is None or row[id_col] is None:
                    raise DataError(f"{where}: fewer cells than header columns", hint="check the quoting")
                raw = (row[codes_col] or "") if codes_col is not None else ""
                yield where, _id(row[id_col], where, id_col), row[text_col], raw.split(sep)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})", hint="re-encode as UTF-8") from exc
