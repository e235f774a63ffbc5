"""Input readers of batch prediction: a folder of ``<id>.txt``, a ``.jsonl``, ``.csv`` or ``.parquet``
file, read lazily as ``(id, text)`` pairs.

Why checked whole but never held (:meth:`NoteSource.scan`): bad input must be one line and exit 2
with nothing written, as when the input was read into memory, yet memory must not grow with the
input. One streaming pass parses every note, refuses duplicate ids (a 64-bit hash of each id, 8
bytes a note, freed before the bundle loads; colliding ids are re-checked exactly in a second
pass) and counts the notes; then the notes are read again, lazily, ``block_size`` at a time.
Parquet is read with ``ParquetFile.iter_batches``: one batch of the id and text columns in memory,
a text cut to the limit in Arrow before Python sees it. A note longer than ``max_note_chars`` comes
back cut to ``max_note_chars + 1`` characters (no ``.txt`` file is read further), so
``Coder.predict`` with the same limit cuts it and flags it ``truncated``.

Errors never quote the input (note text is PHI): they name the file, the line or row and the
column, and a duplicate id by where it occurs first, not by its value; one column may not be both
the id and the text (:func:`medcoder.data.tabular.check_column_roles`).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import os
import stat
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.data.tabular import (
    _id,
    _read_csv,
    _read_jsonl,
    check_column_roles,
    max_row_size,
    missing_column,
)
from medcoder.errors import ConfigError, DataError
from medcoder.inference.coder import DEFAULT_MAX_NOTE_CHARS

INPUT_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}

# (location for messages, id, text)
_Located = tuple[str, str, str]


# -- settings -----------------------------------------------------------------------------------------
def check_positive(name: str, value: Any, *, low: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is not valid", hint=f"an integer >= {low}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not valid", hint="true or false")


# -- reading ----------------------------------------------------------------------------------------
class NoteSource:
    """An input (a folder of ``<id>.txt``, a ``.jsonl``, ``.csv`` or ``.parquet`` file) read lazily.

    Iterating gives ``(id, text)`` pairs from the start, reading as it goes: a consumer that takes
    one block at a time holds one block. :meth:`scan` checks the whole input first (one streaming
    pass) and sets :attr:`count` and :attr:`fingerprint`. Texts longer than ``max_note_chars``
    come back cut to ``max_note_chars + 1`` characters (no ``.txt`` file is read further), so
    ``Coder.predict`` with the same limit cuts them to the limit and flags them ``truncated``.
    Errors are ``DataError`` naming the file (and line or row).
    """

    def __init__(self, path: str | Path, *, id_column: str = "id", text_column: str = "text",
                 max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS, parquet_batch_rows: int = 256) -> None:
        check_positive("max_note_chars", max_note_chars, allow_none=True)
        check_positive("parquet_batch_rows", parquet_batch_rows)
        check_column_roles(id_column, text_column)
        p = Path(path).expanduser()
        if p.is_dir():
            self.kind = "txt"
        elif not p.is_file():
            raise DataError(f"input={p}: no such file or folder",
                            hint="a .txt folder, a .jsonl, .csv or .parquet file")
        else:
            kind = INPUT_SUFFIXES.get(p.suffix.lower())
            if kind is None:
                raise DataError(f"input={p}: unsupported file type {p.suffix!r}",
                                hint=f"use a folder of .txt files or one of {sorted(INPUT_SUFFIXES)}")
            self.kind = kind
        self.path = p
        self.id_column, self.text_column = id_column, text_column
        self.max_note_chars = max_note_chars
        self.parquet_batch_rows = parquet_batch_rows
        self.count: int | None = None
        self.fingerprint: str | None = None
        self._names: list[str] | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, doc_id, text in self.located():
            yield doc_id, text

    def located(self) -> Iterator[_Located]:
        """``(location, id, text)``: the location (``file:line``, ``file:row N``, the note file)
        is for error messages."""
        limit = self.max_note_chars
        if self.kind == "txt":
            names = self._names if self._names is not None else _note_names(self.path)
            for name in names:
                f = self.path / name
                yield _show(f), _file_id(f), _read_txt(f, limit)
            return
        if self.kind == "parquet":
            yield from _read_parquet(self.path, self.id_column, self.text_column, limit, self.parquet_batch_rows)
            return
        columns = (self.id_column, self.text_column, None)
        cap = max_row_size(limit)
        rows = _read_jsonl(self.path, columns, cap) if self.kind == "jsonl" else _read_csv(self.path, columns, ";", cap)
        for where, doc_id, text, _ in rows:
            yield where, doc_id, (text if limit is None or len(text) <= limit + 1 else text[: limit + 1])

    def scan(self) -> NoteSource:
        """Read and check every note once (nothing kept but the count, 8 bytes per note of id
        hashes until the duplicate check is done, and a folder's file names): every note parses,
        ids are unique, there is at least one note. Sets :attr:`count` and :attr:`fingerprint`."""
        if self.kind == "txt":
            self._names = _note_names(self.path)
            if not self._names:
                raise DataError(f"input={self.path}: no .txt files in this folder", hint="one note per <id>.txt file")
        self.fingerprint = self.current_fingerprint()
        hashes = array("Q")
        n = 0
        for _, doc_id, _ in self.located():
            n += 1
            if self.kind != "txt":  # file names in one folder are unique already
                hashes.append(_id_hash(doc_id))
        if n == 0:
            raise DataError(f"input={self.path}: no notes in input",
                            hint=f"one note per {'row' if self.kind in ('csv', 'parquet') else 'line'}")
        if len(hashes) > 1:
            ordered = np.sort(np.frombuffer(hashes, dtype=np.uint64))
            del hashes
            same = ordered[1:][ordered[1:] == ordered[:-1]]
            if same.size:
                self._raise_duplicate(set(same.tolist()))
        self.count = n
        return self

    def _raise_duplicate(self, candidates: set[int]) -> None:
        """Second pass over the ids whose hashes collide: the first real duplicate is an error
        (with both locations, as the training reader reports it); a hash collision is not."""
        first: dict[str, str] = {}
        for where, doc_id, _ in self.located():
            if _id_hash(doc_id) not in candidates:
                continue
            if doc_id in first:
                raise DataError(f"{where}: duplicate id (first at {first[doc_id]})", hint="ids must be unique within a file")
            first[doc_id] = where

    def current_fingerprint(self) -> str:
        """The input's identity now: sha256 of the file's bytes; for a folder, sha256 over its
        ``*.txt`` names and the sha256 of each one's bytes.

        Why content and not name/size/mtime: a note edited to the same size within the file
        system's timestamp resolution (or restored with its old mtime by a copy tool) kept its
        fingerprint, so a resumed run silently skipped the edited note. Hashing reads every note
        once more; touching a note no longer counts as a change.
        """
        digest = hashlib.sha256()
        if self.kind != "txt":
            try:
                with self.path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            except OSError as exc:
                raise DataError(f"input={self.path}: cannot read ({exc.strerror or exc})",
                                hint="check permissions") from exc
            return f"sha256:{digest.hexdigest()}"
        for name in _note_names(self.path):
            digest.update(f"{name}\0{_file_sha256(self.path / name)}\n".encode("utf-8", "surrogateescape"))
        return f"content-sha256:{digest.hexdigest()}"


def iter_notes(path: str | Path, *, id_column: str = "id", text_column: str = "text",
               max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS) -> Iterator[tuple[str, str]]:
    """``(id, text)`` pairs of an input, read lazily (no whole-input check: see :meth:`NoteSource.scan`)."""
    return iter(NoteSource(path, id_column=id_column, text_column=text_column, max_note_chars=max_note_chars))


def read_notes(
    path: str | Path,
    *,
    id_column: str = "id",
    text_column: str = "text",
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS,
) -> list[tuple[str, str]]:
    """All ``(id, text)`` pairs of an input, in memory (small inputs, notebooks, tests); batch
    prediction streams with :class:`NoteSource` instead. Same checks as :meth:`NoteSource.scan`."""
    source = NoteSource(path, id_column=id_column, text_column=text_column, max_note_chars=max_note_chars).scan()
    return list(source)


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _file_sha256(f: Path) -> str:
    """sha256 of a note file's bytes; opened non-blocking and checked to be a regular file, so a
    note replaced by a FIFO since it was listed cannot hang the run."""
    try:
        fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"{_show(f)}: cannot read ({exc.strerror or exc})", hint="check the file") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"{_show(f)}: not a regular file", hint="one note per <id>.txt file")
        digest = hashlib.sha256()
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _note_names(folder: Path) -> list[str]:
    """The sorted ``*.txt`` names of ``folder``; a folder, broken symlink, symlink loop or special
    file named ``*.txt`` is a ``DataError`` (reading it would crash, or block forever on a FIFO)."""
    try:
        names = sorted(f.name for f in folder.glob("*.txt"))
    except (OSError, RuntimeError) as exc:  # the folder itself a link loop, unreadable
        raise DataError(f"input={_show(folder)}: cannot list the folder ({exc})", hint="check the path") from None
    for name in names:
        f = folder / name
        try:
            os.stat(f)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DataError(f"{_show(f)}: a symbolic link loop (the link points back to itself)",
                                hint="remove the link or point it at a real note file") from None
        if f.is_dir():
            raise DataError(f"{_show(f)}: a folder, not a note file",
                            hint="the input folder holds one note per <id>.txt file; move or rename this folder")
        if f.is_symlink() and not f.exists():
            raise DataError(f"{_show(f)}: broken symbolic link (its target does not exist)",
                            hint="remove the link or restore its target")
        if not f.is_file():
            raise DataError(f"{_show(f)}: not a regular file", hint="one note per <id>.txt file")
    return names


def _show(path: Path) -> str:
    """A path for a one-line message: names with control characters (a newline would break the
    one-line error) or bytes that are not UTF-8 (surrogates: unprintable) are escaped."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _file_id(f: Path) -> str:
    try:
        f.stem.encode("utf-8")
    except UnicodeEncodeError as exc:  # os gave undecodable bytes back as surrogates
        raise DataError(f"{_show(f)}: file name is not valid UTF-8, so it cannot be a note id",
                        hint="rename the file") from exc
    return f.stem


def _read_txt(f: Path, max_note_chars: int | None) -> str:
    """The note, at most ``max_note_chars + 1`` characters of it (universal newlines, as before)."""
    try:
        with f.open(encoding="utf-8-sig") as fh:
            return fh.read(-1 if max_note_chars is None else max_note_chars + 1)
    except UnicodeDecodeError as exc:
        raise DataError(f"{_show(f)}: not valid UTF-8 (byte {_utf8_error_offset(f)})",
                        hint="re-encode the file as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"{_show(f)}: cannot read ({exc.strerror or exc})", hint="check permissions") from exc


def _utf8_error_offset(f: Path) -> int:
    """File offset of the first invalid UTF-8 byte (only called after decoding failed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = pending = 0  # pending: bytes of an unfinished character held back by the decoder
    with f.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:  # exc.start counts from the held-back bytes
                return offset - pending + exc.start
            offset += len(chunk)
            pending = len(decoder.getstate()[0])
    return offset - pending  # the file ends inside a character


def _pyarrow() -> tuple[Any, Any, Any]:
    """pyarrow, imported on first use (it comes with ``datasets``/``mlflow``; only Parquet needs it)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - a dependency of datasets
        raise ConfigError("Parquet needs pyarrow, which is not installed", hint="pip install pyarrow") from exc
    return pa, pc, pq


def _read_parquet(path: Path, id_col: str, text_col: str, limit: int | None, batch_rows: int) -> Iterator[_Located]:
    """Rows of a Parquet file, ``batch_rows`` at a time (``iter_batches``: one batch of the two
    columns in memory). Texts are cut to ``limit + 1`` characters in Arrow, before conversion."""
    pa, pc, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).strip().splitlines()[0][:200]})",
                        hint="write it with pandas.DataFrame.to_parquet or pyarrow") from exc
    with contextlib.closing(pf):
        schema = pf.schema_arrow
        for col in (id_col, text_col):
            if col not in schema.names:
                raise missing_column(str(path), col, schema.names, (id_col, text_col), what="Parquet schema",
                                     hint="set id_column / text_column to your column names")
        text_type, id_type = schema.field(text_col).type, schema.field(id_col).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise DataError(f"{path}: column {text_col!r} must be text (string), got {text_type}")
        if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or pa.types.is_integer(id_type)):
            raise DataError(f"{path}: column {id_col!r} must be strings or integers, got {id_type}")
        row = 0
        try:
            batches = pf.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys((id_col, text_col))))
            for batch in batches:
                ids, texts = batch.column(id_col), batch.column(text_col)
                for name, values in ((id_col, ids), (text_col, texts)):
                    try:
                        values.validate(full=True)
                    except pa.ArrowInvalid as exc:
                        raise DataError(f"{path}: rows {row + 1}-{row + batch.num_rows}: column {name!r} is not "
                                        f"valid text ({exc})", hint="re-export the file with UTF-8 strings") from exc
                if limit is not None:
                    texts = pc.utf8_slice_codeunits(texts, 0, limit + 1)
                for doc_id, text in zip(ids.to_pylist(), texts.to_pylist(), strict=True):
                    row += 1
                    where = f"{path}:row {row}"
                    if text is None:
                        raise DataError(f"{where}: column {text_col!r} is null",
                                        hint="every row needs a text (an empty string for an empty note)")
                    yield where, _id(doc_id, where, id_col), text
        except pa.ArrowException as exc:
            raise DataError(f"{path}: unreadable after row {row} ({str(exc).strip().splitlines()[0][:200]})",
                            hint="the file may be truncated or damaged") from exc
