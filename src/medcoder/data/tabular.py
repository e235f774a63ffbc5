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

**No value of the file is ever put into an error** (note text is PHI): errors name the file, the
line or row, the column and what was expected, never a cell. Why: a headerless CSV's first row is
a note, so even its "header" is quoted only where a cell equals the expected column name up to
case and spaces; an id, a wrong-typed cell or a duplicate is located by line, not quoted. One
column may not serve two roles (:func:`check_column_roles`): ``id_column=text`` would copy the
note into every id, hence into predictions, audit logs and messages.

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
from collections.abc import Iterator, Sequence
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
    check_column_roles(id_column, text_column, codes_column, prefix="data.")
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


def check_column_roles(id_column: object, text_column: object, codes_column: object = None, *,
                       prefix: str = "") -> None:
    """Refuse one column named for two roles (``id_column == text_column``, or the codes column
    being either): the id is copied into predictions, audit logs and error messages, so an id
    column that is the note text would put clinical text into all of them."""
    roles = [(f"{prefix}id_column", id_column), (f"{prefix}text_column", text_column)]
    if codes_column is not None:
        roles.append((f"{prefix}codes_column", codes_column))
    for i, (key, value) in enumerate(roles):
        for other, other_value in roles[:i]:
            if value == other_value:
                raise ConfigError(f"{other} and {key} name the same column ({value!r})",
                                  hint="each role needs its own column: the id column is copied into predictions "
                                       "and audit logs, so it must never be the note text")


def missing_column(where: str, column: str, names: Sequence[object], expected: Sequence[str], *,
                   hint: str, what: str = "header") -> DataError:
    """The error for a column the file lacks, naming none of the file's own cells.

    Why not list the columns the file has: a headerless CSV's first row is a note (``header has
    ['1', 'Mrs Jane Roe ...']`` once leaked one), and a JSON object's keys or a Parquet schema
    converted from such a CSV are no safer. Only a name equal to ``column`` up to case and
    surrounding spaces is pointed at, by position, since that is the likely typo.
    """
    want = column.strip().casefold()
    near = [i for i, n in enumerate(names) if isinstance(n, str) and n.strip().casefold() == want]
    detail = f"the {what} has {len(names)} column(s), none named {column!r}"
    if near:
        detail += f"; column {near[0] + 1} differs from it only in case or spaces"
    shown = ", ".join(repr(c) for c in expected)
    return DataError(f"{where}: missing column {column!r} ({detail}; expected columns {shown})",
                     hint=f"{hint} (the file's values are not shown: they may be note text)")


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
    check_column_roles(id_column, text_column)
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the input path")
    columns: _Columns = (id_column, text_column, None)
    cap = max_row_size(max_note_chars)
    rows = (_read_jsonl(path, columns, cap) if format == "jsonl" else _read_csv(path, columns, ";", cap))
    seen: dict[str, str] = {}
    for where, doc_id, text, _ in rows:
        if doc_id in seen:
            raise DataError(f"{where}: duplicate id (first at {seen[doc_id]})", hint="ids must be unique within a file")
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
            raise DataError(f"{where}: duplicate id (first at {seen[doc_id]})", hint="ids must be unique within a file")
        seen[doc_id] = where
        if is_empty_note(text):
            if on_error == "raise":
                raise DataError(f"{where}: empty note",
                                hint="remove the row, or set data.on_error=skip to skip empty notes")
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
    """The id as a string; a wrong one is described by its type, never quoted (it may be text)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        got = "an empty string" if isinstance(value, str) else _kind(value)
        raise DataError(f"{where}: column {column!r} must be a non-empty string or integer, got {got}")
    return str(value)


def _kind(value: object) -> str:
    """A value's JSON-ish type for a message (``null``, ``a list``, ...), never the value itself."""
    if value is None:
        return "null"
    names = {bool: "true/false", float: "a number", list: "a list", dict: "an object", str: "a string"}
    return names.get(type(value), type(value).__name__)


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
            expected = [c for c in columns if c is not None]
            raise missing_column(where, missing[0], list(obj), expected, what="object",
                                 hint="each line needs these fields; or set id_column / text_column / codes_column "
                                      "to your field names")
        text, codes = obj[text_col], (obj[codes_col] if codes_col is not None else [])
        if not isinstance(text, str):
            raise DataError(f"{where}: column {text_col!r} must be a string, got {_kind(text)}")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            got = _kind(codes) if not isinstance(codes, list) else "a list with an item that is not a string"
            raise DataError(
                f"{where}: column {codes_col!r} must be a list of strings, got {got}",
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
            expected = [c for c in columns if c is not None]
            for col in expected:
                if col not in header:
                    raise missing_column(
                        f"{path}:1", col, header, expected,
                        hint=f"the first line must be a header row naming the columns (e.g. {','.join(expected)}); "
                             "add one, or set id_column / text_column / codes_column to your column names",
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
