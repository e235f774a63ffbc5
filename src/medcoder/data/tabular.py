"""Load users' own notes from JSON Lines or CSV files into the same ``{id, text, codes}`` shape.

Why: the rest of the pipeline only knows ``DatasetDict`` rows, so a hospital's export needs one
documented format, with errors that say which file, line and column to fix.

* ``jsonl``: one JSON object per line, ``codes`` a list of strings; blank lines are ignored.
* ``csv``: a header row; ``codes`` one cell with codes joined by ``codes_separator`` (``;``);
  an empty cell means no codes.

Codes are stripped, upper-cased and de-duplicated (``canonical_code(code, None)``: no dot
insertion, because the code system of a user's corpus is unknown). Errors: a missing file, a
missing column, a malformed JSON line (also one nested too deeply or with an integer too long for
Python), a wrong value type, text that is not valid Unicode (invalid UTF-8, or an unpaired
surrogate escape such as ``"\\ud800"`` in JSON) or a duplicate id -> ``DataError`` naming file,
line and column. Empty/whitespace-only notes follow ``on_error`` exactly like CodiEsp: ``"skip"``
(counted and logged by id) or ``"raise"``.

JSONL lines are split on ``\\n`` only (``\\r\\n`` works too): JSON allows U+2028, U+0085 ... raw
inside strings, so ``str.splitlines`` would cut valid lines apart.

Bounded input (prediction, :func:`iter_unlabeled` with ``max_note_chars``): why: one 20 MB line
once took 3.4 GB of memory. A line/row must be parsed whole, so one longer than
:func:`max_row_size` (``ROW_SIZE_PER_CHAR`` × ``max_note_chars``: room for a note of the limit
written with JSON's 12-byte escapes, plus its id) is refused with a ``DataError`` naming file and
line, read with ``readline(limit)`` so the rest of the line is never loaded. Texts longer than
``max_note_chars`` are cut to ``max_note_chars + 1`` characters: enough for ``Coder.predict`` to
see that the note is too long, truncate it to the limit and flag it ``truncated``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import datasets

from medcoder.data._common import build_dataset, check_on_error, is_empty_note
from medcoder.data.codes import canonical_code, dedupe
from medcoder.data.report import LoadReport, SplitReport
from medcoder.errors import ConfigError, DataError

FORMATS = ("jsonl", "csv")

#: A line/row may hold this many bytes (JSONL) or characters (CSV) per character of
#: ``max_note_chars`` before it is refused unread: 4 bytes per UTF-8 character × 4 for JSON
#: escapes (``\\ud83d\\ude00`` is 12 bytes for one character), ids and other columns.
ROW_SIZE_PER_CHAR = 16

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


def max_row_size(max_note_chars: int | None) -> int | None:
    """The largest line (JSONL, bytes) or row (CSV, characters) read for a note limit."""
    return None if max_note_chars is None else ROW_SIZE_PER_CHAR * max_note_chars + 4096


def iter_unlabeled(
    path: str | Path,
    *,
    format: str,
    id_column: str = "id",
    text_column: str = "text",
    max_note_chars: int | None = None,
) -> Iterator[tuple[str, str, str]]:
    """``(location, id, text)`` of every note in a JSONL/CSV file without codes (prediction input).

    Same parsing and the same one-line errors as training data; empty notes are kept (the caller
    routes them to review), duplicate ids are refused. With ``max_note_chars`` the input is
    bounded (see the module docstring): a text longer than the limit comes back cut to
    ``max_note_chars + 1`` characters, and a line/row beyond :func:`max_row_size` is a ``DataError``.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not a tabular format", hint=f"use one of {', '.join(FORMATS)}")
    if max_note_chars is not None and (isinstance(max_note_chars, bool) or not isinstance(max_note_chars, int)
                                       or max_note_chars < 1):
        raise ConfigError(f"max_note_chars={max_note_chars!r} is not valid", hint="a positive number of characters")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the input path")
    columns: _Columns = (id_column, text_column, None)
    cap = max_row_size(max_note_chars)
    rows = (_read_jsonl(path, columns, cap) if format == "jsonl" else _read_csv(path, columns, ";", cap))
    seen: dict[str, str] = {}
    for where, doc_id, text, _ in rows:
        if doc_id in seen:
            raise DataError(f"{where}: duplicate id {doc_id!r} (first at {seen[doc_id]})",
                            hint="ids must be unique within a file")
        seen[doc_id] = where
        if max_note_chars is not None and len(text) > max_note_chars + 1:
            text = text[: max_note_chars + 1]
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
        norm = [canonical_code(c, None) for c in raw_codes if c.strip()]
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


def _id(value: object, where: str, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise DataError(f"{where}: column {column!r} must be a non-empty string or integer, got {value!r}")
    return str(value)


def _check_unicode(value: str, where: str, column: str) -> None:
    """Refuse text that cannot be written back as UTF-8 (a JSON ``\\ud800`` escape decodes to an
    unpaired surrogate): it would fail later, in the tokenizer or in the output writer."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(
            f"{where}: column {column!r} is not valid Unicode (unpaired surrogate "
            f"U+{ord(value[exc.start]):04X} at character {exc.start})",
            hint="the program that wrote this file produced invalid text; re-export it as UTF-8",
        ) from exc


def _jsonl_lines(path: Path, max_line_bytes: int | None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file split on ``\\n`` only; a line longer than
    ``max_line_bytes`` is refused after reading at most ``max_line_bytes + 1`` bytes of it."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})", hint="check the path and permissions") from exc
    with fh:
        line_no = 0
        while True:
            raw = fh.readline(max_line_bytes + 1) if max_line_bytes is not None else fh.readline()
            if not raw:
                return
            line_no += 1
            if max_line_bytes is not None and len(raw) > max_line_bytes:
                raise DataError(
                    f"{path}:{line_no}: line longer than {max_line_bytes} bytes, not read",
                    hint="shorten or split this note, or raise max_note_chars (the line limit is 16 × max_note_chars)",
                )
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid UTF-8 (byte {exc.start} of the line)",
                                hint="re-encode as UTF-8") from exc


def _read_jsonl(path: Path, columns: _Columns, max_line_bytes: int | None = None) -> Iterator[_Row]:
    id_col, text_col, codes_col = columns
    for line_no, line in _jsonl_lines(path, max_line_bytes):
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
        except (ValueError, RecursionError) as exc:  # e.g. an integer of > 4300 digits, [[[[...]]]]
            raise DataError(f"{where}: invalid JSON ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                            hint="each line must be one JSON object") from exc
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
        doc_id = _id(obj[id_col], where, id_col)
        _check_unicode(doc_id, where, id_col)
        _check_unicode(text, where, text_col)
        for code in codes:
            _check_unicode(code, where, str(codes_col))
        yield where, doc_id, text, codes


class _BoundedLines:
    """Physical lines for ``csv.reader`` (``newline=""``: a quoted note spans lines), refusing a
    row longer than ``cap`` characters after reading at most ``cap + 1`` of it."""

    def __init__(self, fh: IO[str], cap: int | None, path: Path) -> None:
        self.fh, self.cap, self.path = fh, cap, path
        self.row_chars = 0
        self.line_no = 0

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        if self.cap is None:
            line = self.fh.readline()
        else:
            line = self.fh.readline(self.cap + 1 - self.row_chars)
        if not line:
            raise StopIteration
        self.line_no += 1
        self.row_chars += len(line)
        if self.cap is not None and self.row_chars > self.cap:
            raise DataError(
                f"{self.path}:{self.line_no}: CSV row longer than {self.cap} characters, not read",
                hint="shorten or split this note (or check for an unclosed quote), or raise max_note_chars",
            )
        return line


def _read_csv(path: Path, columns: _Columns, sep: str, max_row_chars: int | None = None) -> Iterator[_Row]:
    id_col, text_col, codes_col = columns
    try:
        fh = path.open(encoding="utf-8-sig", newline="")  # newline="": notes span lines
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})", hint="check the path and permissions") from exc
    with fh:
        lines = _BoundedLines(fh, max_row_chars, path)
        reader = csv.reader(lines)

        def next_row() -> list[str] | None:
            lines.row_chars = 0
            # csv's own cell limit (131072 characters) would refuse a note under max_note_chars
            old = csv.field_size_limit()
            if max_row_chars is not None:
                csv.field_size_limit(max(old, max_row_chars))
            try:
                return next(reader, None)
            finally:
                csv.field_size_limit(old)

        try:
            header = next_row() or []
            for col in columns:
                if col is not None and col not in header:
                    raise DataError(
                        f"{path}:1: missing column {col!r} (header has {header})",
                        hint="set data.id_column / data.text_column / data.codes_column to your column names",
                    )
            while (cells := next_row()) is not None:
                if not cells:  # a blank line (csv.DictReader skips these too)
                    continue
                where = f"{path}:{reader.line_num}"
                if len(cells) > len(header):  # more cells than header columns: a quoting error, not data
                    raise DataError(f"{where}: more cells than header columns", hint="quote cells that contain commas")
                row = dict(zip(header, cells, strict=False))
                if row.get(text_col) is None or row.get(id_col) is None:
                    raise DataError(f"{where}: fewer cells than header columns", hint="check the quoting")
                raw = (row.get(codes_col) or "") if codes_col is not None else ""
                yield where, _id(row[id_col], where, id_col), row[text_col], raw.split(sep)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 (at or after line {lines.line_no + 1})",
                            hint="re-encode as UTF-8") from exc
