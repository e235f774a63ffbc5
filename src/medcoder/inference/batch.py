"""Batch prediction, streamed: notes from a folder/JSONL/CSV/Parquet -> predictions + audit log + summary.

What ``scripts/predict.py`` calls. Guarantees, and why each exists:

* **Nothing is loaded or written before every setting is checked** (``medcoder.workflows.predict``
  and :func:`check_paths`): sizes, formats, and the output paths. An output (predictions, audit log,
  summary) may not resolve (following symlinks) to the input file, into the input folder, to a
  note file read, to the bundle directory or into it, to another output, or to an existing
  folder: any of these used to overwrite the notes or the model, or fail after predicting.
* **The input is checked whole before the bundle loads, without holding it** (:meth:`NoteSource.scan`):
  one streaming pass parses every note, refuses duplicate ids and counts the notes (the progress
  bar's total), so bad input is still one line and exit 2 with nothing written, as when the input
  was read into memory. Then the notes are read again, lazily, ``block_size`` at a time.
  Bounded: a note longer than ``max_note_chars`` (:data:`DEFAULT_MAX_NOTE_CHARS`) is cut to it and
  flagged ``truncated`` (its codes go to review with ``truncated_note``); ``.txt`` files are never
  read past the limit, and a JSONL line / CSV row too large to parse is a ``DataError``.
* **Memory does not grow with the input.** Per note, only the scan keeps something: a 64-bit hash
  of each id for the duplicate check (8 bytes a note, freed before the bundle loads; ids that
  collide are re-checked exactly in a second pass). A ``.txt`` folder's sorted file names are kept
  (they are the reading order). While predicting, at most one block of notes, predictions and
  output rows is alive; resuming skips notes by count and holds no set of ids (see below).
  Parquet input is read with ``ParquetFile.iter_batches(block_size)``: memory is bounded by one
  batch of the id and text columns (a text is cut to the limit in Arrow, before Python sees it).
* **Resumable** (``resume=True``, the script's default): a run writes into a hidden folder beside
  the output, ``.<output name>.medcoder-partial/`` (:class:`_Partial`): ``predictions.part``
  (JSONL/CSV, appended) or ``blocks/<first note>.parquet`` (Parquet: one file per block, a Parquet
  file being unreadable until its footer is written), ``audit.part`` (appended), ``lock`` (an
  exclusive ``flock`` while a run writes) and ``state.json``. After every block the parts are
  flushed and fsynced, then ``state.json`` is replaced atomically with the number of notes done,
  the last id, the byte length of each part, the summary counters, and the fingerprints of the
  bundle (its id), the input (sha256 of the file; for a folder, of its file names, sizes and
  mtimes), the settings that shape the output, the output paths and medcoder's version. A killed
  run (SIGKILL, power loss) is continued by the same command: the parts are cut back to the
  lengths ``state.json`` records (this drops a half-written last line and any block not yet
  recorded: those notes are predicted again), the first ``notes_done`` notes are skipped (the
  input is the same, by its fingerprint, so the same notes come first; the last one's id is
  checked too), and the run goes on. A partial whose fingerprints differ is refused
  (``ConfigError``: delete it or choose another output), never mixed in; so is one another run is
  writing (the lock). Ctrl-C, SIGTERM/SIGHUP and errors keep the partial as well when it holds at
  least one block (not an input that changed meanwhile: that partial could never be resumed).
  ``resume=False`` (the library default) starts over, removing any partial, and removes its own
  on every failure. The partial's files are JSON, JSONL, CSV and Parquet like the outputs: a
  killed run's ``predictions.part`` can be read as it is (up to its last complete line).
  ``batch_size``/``block_size`` are speed and memory settings and may change between runs.
* **All-or-nothing outputs**: at the end the parts are hard-linked (or copied, across file
  systems) to temp files beside each output (``.<name>.medcoder-<pid>-<random>.tmp``), Parquet
  blocks are merged into one file (one row group per block), and the three files are renamed
  together, the summary last (:class:`medcoder.atomic.AtomicFileSet`). **The summary is the
  completion marker: a predictions file without its summary is not complete.** A failed rename
  rolls back what this run renamed and leaves the partial as it was. Temps are deleted on every
  exit path; temps of a killed (SIGKILL) run are deleted by the next run that writes the same
  outputs, if their pid is no longer alive. Before the rename the input's fingerprint is computed
  again: an input changed while it was read is an error, not a silently mixed output.
* **CSV output is safe to open in a spreadsheet**: a cell that starts with ``=``, ``+``, ``-``,
  ``@``, tab or carriage return gets a leading ``'`` (OWASP's rule against formula injection:
  ``=HYPERLINK(...)`` as a note id would otherwise run as a formula). JSONL output is unchanged.
  **Parquet output** has real nested types: ``codes`` is ``list<struct<code, description,
  probability, decision, reasons: list<string>, evidence: list<struct<start, end, weight, source,
  negated>>, sources: list<string>>>`` (:func:`parquet_schema`).
* The summary is valid JSON: shares that are undefined (no codes) are ``null``, never ``NaN``.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import IO, Any

import numpy as np

from medcoder.atomic import (
    AtomicFileSet,
    atomic_write_text,
    make_temp,
    remove_stale_temps,
    signals_raise,
)
from medcoder.data.tabular import _id, _read_csv, _read_jsonl, max_row_size
from medcoder.errors import ConfigError, DataError
from medcoder.inference.coder import DEFAULT_MAX_NOTE_CHARS, Coder
from medcoder.inference.prediction import AUDIT_FIELDS, CodePrediction, DocumentPrediction

log = logging.getLogger(__name__)

INPUT_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
GRANULARITIES = ("note", "code")
REMOTE_BUNDLE_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
#: Cells starting with one of these are formulas to a spreadsheet (OWASP CSV injection).
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: The hidden folder beside the output that holds a run's parts: ``.<output name><suffix>``.
PARTIAL_SUFFIX = ".medcoder-partial"
STATE_VERSION = 1
#: Keys an evidence span may carry (``medcoder.modeling.scorer.Span``): the Parquet struct's fields.
EVIDENCE_KEYS = ("start", "end", "weight", "source", "negated")

# (location for messages, id, text)
_Located = tuple[str, str, str]


@dataclass
class BatchSummary:
    """What the run did, for the console and for ops dashboards (counts only, no text)."""

    notes: int = 0
    codes: int = 0
    auto_accepted: int = 0
    notes_fully_auto: int = 0
    empty_notes: int = 0
    truncated_notes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    wall_seconds: float = 0.0
    resumed_notes: int = 0
    """Notes taken from an interrupted run's partial instead of being predicted by this run."""

    @property
    def share_auto_accepted(self) -> float | None:
        """None (JSON null) when there are no codes: a share of nothing is undefined, not NaN."""
        return self.auto_accepted / self.codes if self.codes else None

    @property
    def share_notes_fully_auto(self) -> float | None:
        return self.notes_fully_auto / self.notes if self.notes else None

    def add(self, pred: DocumentPrediction) -> None:
        self.notes += 1
        self.codes += len(pred.codes)
        self.auto_accepted += len(pred.auto_accepted)
        self.notes_fully_auto += pred.document_decision == "auto_accept"
        self.empty_notes += "empty_note" in pred.document_reasons
        self.truncated_notes += pred.truncated
        self.reasons.update(r for c in pred.codes for r in c.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": dict(self.reasons), "share_auto_accepted": self.share_auto_accepted,
                "share_notes_fully_auto": self.share_notes_fully_auto}

    @classmethod
    def from_counts(cls, d: dict[str, Any]) -> BatchSummary:
        """The counters saved in a partial's state (so a resumed run's summary covers every note)."""
        names = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in d.items() if k in names and k != "reasons"})
        out.reasons = Counter(d.get("reasons", {}))
        return out

    def line(self) -> str:
        resumed = f", {self.resumed_notes} resumed from a partial run" if self.resumed_notes else ""
        return (f"{self.notes} notes, {self.codes} codes predicted, "
                f"{_pct(self.share_auto_accepted)} of codes auto-accepted, "
                f"{self.notes_fully_auto} notes ({_pct(self.share_notes_fully_auto)}) fully auto-coded, "
                f"{self.empty_notes} empty, {self.truncated_notes} truncated{resumed}; {self.wall_seconds:.1f} s")


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


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
                raise DataError(f"{where}: duplicate id {doc_id!r} (first at {first[doc_id]})",
                                hint="ids must be unique within a file")
            first[doc_id] = where

    def current_fingerprint(self) -> str:
        """The input's identity now: sha256 of the file's bytes; for a folder, sha256 of its
        ``*.txt`` names, sizes and modification times (touching a note changes it)."""
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
            try:
                st = (self.path / name).stat()
            except OSError as exc:
                raise DataError(f"{_show(self.path / name)}: cannot read ({exc.strerror or exc})") from exc
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return f"stat-sha256:{digest.hexdigest()}"


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


def _note_names(folder: Path) -> list[str]:
    """The sorted ``*.txt`` names of ``folder``; a folder, broken symlink or special file named
    ``*.txt`` is a ``DataError`` (reading it would crash, or block forever on a FIFO)."""
    names = sorted(f.name for f in folder.glob("*.txt"))
    for name in names:
        f = folder / name
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
                raise DataError(f"{path}: missing column {col!r} (has {schema.names})",
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


# -- settings and paths -------------------------------------------------------------------------------
def check_positive(name: str, value: Any, *, low: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is not valid", hint=f"an integer >= {low}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not valid", hint="true or false")


@dataclass(frozen=True)
class OutputPaths:
    """The three files a run writes; the summary is committed last (the completion marker)."""

    predictions: Path
    audit: Path
    summary: Path

    @classmethod
    def beside(cls, output: str | Path, audit: str | Path | None = None, summary: str | Path | None = None
               ) -> OutputPaths:
        """Defaults: ``<output without suffix>.audit.jsonl`` and ``.summary.json``."""
        out = Path(output).expanduser()
        stem = out.with_suffix("")
        return cls(out,
                   Path(audit).expanduser() if audit else stem.with_name(stem.name + ".audit.jsonl"),
                   Path(summary).expanduser() if summary else stem.with_name(stem.name + ".summary.json"))

    def named(self) -> list[tuple[str, Path]]:
        return [("output", self.predictions), ("audit.path", self.audit), ("summary_path", self.summary)]

    @property
    def partial(self) -> Path:
        """The hidden folder beside the predictions where a run writes its parts."""
        return self.predictions.parent / f".{self.predictions.name}{PARTIAL_SUFFIX}"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(output_path: Path, audit_path: Path, granularity: str) -> str:
    """The output format, after checking the output file type and granularity (cheap)."""
    fmt = OUTPUT_FORMATS.get(Path(output_path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"output={output_path}: unsupported file type {Path(output_path).suffix!r}",
                          hint="use .jsonl, .csv or .parquet")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not valid", hint="use note or code")
    return fmt


def check_paths(outputs: OutputPaths, input_path: str | Path, bundle: str | Path | None = None) -> None:
    """Refuse outputs that would destroy the input, the bundle or each other, or cannot be written.

    Compared after ``Path.resolve()`` (symlinks followed) and, for files that exist, by inode
    (hard links): predictions, audit log and summary must be three different files, none of them
    the input file, inside the input folder, one of the notes read, or inside the bundle. A
    folder's notes are compared one by one as they are listed (nothing kept per note).
    """
    inp = Path(input_path).expanduser()
    inp_r = inp.resolve()
    resolved = {key: path.resolve() for key, path in outputs.named()}
    note_paths: set[Path] = set()    # outputs that resolve to a note file (symlinked note)
    note_inodes: set[Path] = set()   # outputs that are a note file by inode (hard link)
    if inp.is_dir():
        out_r = set(resolved.values())
        out_ino = {_inode(path): path for _, path in outputs.named() if _inode(path) is not None}
        for f in inp.glob("*.txt"):
            r = f.resolve()
            if r in out_r:
                note_paths.add(r)
            ino = _inode(f)
            if ino is not None and ino in out_ino:
                note_inodes.add(out_ino[ino])
    bundle_r = None
    if bundle is not None and not str(bundle).startswith(REMOTE_BUNDLE_PREFIXES):
        bundle_r = Path(bundle).expanduser().resolve()
    seen: dict[Path, str] = {}
    for key, path in outputs.named():
        res = resolved[key]
        where = f"{key}={path}"
        if res in seen:
            raise ConfigError(f"{where} is the same file as {seen[res]}",
                              hint="predictions, audit log and summary need three different paths")
        seen[res] = where
        if path.is_dir():
            raise ConfigError(f"{where} is an existing folder", hint="give a file path, e.g. out/predictions.jsonl")
        if res == inp_r or (inp.is_dir() and _inside(res, inp_r)) or res in note_paths or _same_file(path, inp):
            raise ConfigError(f"{where} would overwrite the input ({inp})",
                              hint="write outputs outside the input file/folder")
        if path in note_inodes:
            raise ConfigError(f"{where} is a note file of the input ({inp})", hint="write outputs outside the input")
        if bundle_r is not None and _inside(res, bundle_r):
            raise ConfigError(f"{where} is inside the bundle ({bundle})",
                              hint="a bundle is verified by the hash of every file: write outputs elsewhere")
        _check_writable(where, res)
    partial = outputs.partial
    if partial.exists() and (partial.is_symlink() or not partial.is_dir()):
        raise ConfigError(f"output={outputs.predictions}: {partial} exists and is not a partial-run folder",
                          hint="remove it or choose another output name")


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(where: str, resolved: Path) -> None:
    """The nearest existing ancestor must be a folder we may write into (parents are created)."""
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{where}: {parent} is a file, not a folder", hint="choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write into {parent} (permission denied)",
                          hint="choose a folder you can write to")


# -- rows and encoders --------------------------------------------------------------------------------
def _rows(pred: DocumentPrediction, granularity: str) -> Iterator[dict[str, Any]]:
    audit = {k: getattr(pred, k) for k in AUDIT_FIELDS}
    if granularity == "note":
        yield pred.to_dict()
        return
    doc = {"document_decision": pred.document_decision, "document_reasons": pred.document_reasons,
           "truncated": pred.truncated}
    if not pred.codes:  # every note appears in the output, also one with nothing predicted
        # An empty CodePrediction, so the row has exactly the columns of a code row (CSV header).
        yield {"id": pred.id, **asdict(CodePrediction("", "", None, "")), **doc, **audit}  # type: ignore[arg-type]
    for c in pred.codes:
        yield {"id": pred.id, **asdict(c), **doc, **audit}


def output_columns(granularity: str) -> list[str]:
    """The columns of every output row, known before any note is predicted (CSV header, Parquet
    schema): those of a note without codes, which has all of a code row's columns."""
    empty = DocumentPrediction(id="", codes=[], document_decision="", document_reasons=[], bundle_id="",
                               codeset_fy=None, policy_version="", input_sha256="", timestamp="")
    return list(next(_rows(empty, granularity)))


def parquet_schema(granularity: str) -> Any:
    """The Parquet schema of the output rows: real nested types (``codes`` a list of structs,
    reasons lists of strings), the column order of the JSONL/CSV output."""
    pa, _, _ = _pyarrow()
    strings = pa.list_(pa.string())
    evidence = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("weight", pa.float64()),
                                   ("source", pa.string()), ("negated", pa.bool_())]))
    code = [("code", pa.string()), ("description", pa.string()), ("probability", pa.float64()),
            ("decision", pa.string()), ("reasons", strings), ("evidence", evidence), ("sources", strings)]
    types = {**dict(code), "id": pa.string(), "codes": pa.list_(pa.struct(code)), "document_decision": pa.string(),
             "document_reasons": strings, "truncated": pa.bool_(), "bundle_id": pa.string(),
             "codeset_fy": pa.int32(), "policy_version": pa.string(), "input_sha256": pa.string(),
             "timestamp": pa.string()}
    missing = [c for c in output_columns(granularity) if c not in types]
    if missing:  # a new prediction field needs its Parquet type here (pyarrow would drop it silently)
        raise TypeError(f"no Parquet type for output column(s) {missing}")
    return pa.schema([(c, types[c]) for c in output_columns(granularity)])


def _check_evidence_keys(rows: list[dict[str, Any]]) -> None:
    """pyarrow drops struct keys the schema lacks: refuse instead of losing evidence fields."""
    for row in rows:
        for c in row.get("codes", [row]):
            for e in c.get("evidence", ()):
                extra = set(e) - set(EVIDENCE_KEYS)
                if extra:
                    raise TypeError(f"evidence span keys {sorted(extra)} have no Parquet type")


def _csv_cell(value: Any) -> Any:
    """Lists of reason names become ``a;b``; nested structures (codes, evidence) become JSON;
    a text cell a spreadsheet would run as a formula gets a leading ``'`` (OWASP)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ";".join(value)
    elif isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


class _Writer:
    """Output rows -> bytes, one block at a time (JSONL lines; CSV rows, the header once)."""

    def __init__(self, fmt: str, columns: list[str]) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"_Writer writes jsonl or csv, not {fmt!r}")
        self.fmt, self.columns = fmt, columns

    def encode(self, rows: Iterable[dict[str, Any]], *, header: bool = False) -> bytes:
        if self.fmt == "jsonl":
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns)
        if header:
            writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
        return buf.getvalue().encode("utf-8")


def _fsync(fh: IO[Any]) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _blocks(notes: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """Lists of at most ``size`` notes, taken from ``notes`` only when the previous block is done."""
    while block := list(islice(notes, size)):
        yield block


# -- the partial run ----------------------------------------------------------------------------------
class _Partial:
    """The hidden folder where a run writes, and where a killed run's finished blocks wait.

    ``predictions.part`` / ``blocks/`` and ``audit.part`` grow block by block; ``state.json``
    (resumable runs only) records after each block how far they are complete; ``lock`` is held
    (``flock``) for the whole run, so two runs never write the same partial.
    """

    def __init__(self, outputs: OutputPaths, fmt: str) -> None:
        self.outputs, self.fmt = outputs, fmt
        self.dir = outputs.partial
        self.state_path = self.dir / "state.json"
        self.pred = self.dir / ("blocks" if fmt == "parquet" else "predictions.part")
        self.audit = self.dir / "audit.part"
        self._lock: IO[Any] | None = None

    # locking
    def acquire(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise ConfigError(f"output={self.outputs.predictions}: {self.dir} exists and is not a folder",
                              hint="remove it or choose another output name") from exc
        self._lock = open(self.dir / "lock", "a+b")  # noqa: SIM115 - held for the whole run
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            self._lock = None
            raise ConfigError(f"output={self.outputs.predictions}: another run is writing it (lock {self.dir / 'lock'})",
                              hint="wait for that run to end, or choose another output") from exc

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    # state
    def read_state(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        try:
            state = json.loads(self.state_path.read_text("utf-8"))
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown partial state version {state.get('version')!r}")
            missing = {"fingerprint", "notes_done", "last_id", "blocks", "bytes", "summary"} - set(state)
            if missing or not isinstance(state["notes_done"], int) or \
                    not {"predictions", "audit"} <= set(state["bytes"]):
                raise ValueError(f"state.json lacks {sorted(missing) or 'byte counts'}")
            return state
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is unreadable ({exc})",
                              hint=f"delete {self.dir} to start over") from exc

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.state_path, json.dumps(state, indent=1, allow_nan=False) + "\n")

    def clear(self) -> None:
        """Remove every part (not the lock we hold): a fresh start."""
        for entry in self.dir.iterdir():
            if entry.name == "lock":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # resuming
    def restore(self, state: dict[str, Any]) -> None:
        """Cut the parts back to what ``state`` records as complete (a half-written last line,
        a block whose state was never written: dropped, to be predicted again)."""
        for path, length in ((self.audit, state["bytes"]["audit"]), *(
                () if self.fmt == "parquet" else ((self.pred, state["bytes"]["predictions"]),))):
            size = path.stat().st_size if path.is_file() else -1
            if size < length:
                raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is damaged "
                                  f"({path.name} has {max(size, 0)} bytes, {length} recorded)",
                                  hint=f"delete {self.dir} to start over")
            if size > length:
                os.truncate(path, length)
        if self.fmt == "parquet":
            kept = 0
            for block in sorted(self.pred.glob("*.parquet")) if self.pred.is_dir() else []:
                if not block.stem.isdigit() or int(block.stem) >= state["notes_done"]:
                    block.unlink()  # written after the last recorded block
                else:
                    kept += 1
            if kept != state["blocks"]:
                raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is damaged "
                                  f"({kept} Parquet blocks, {state['blocks']} recorded)",
                                  hint=f"delete {self.dir} to start over")


def _fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{sub}" for sub in _fingerprint_diff(a, b)]
        elif a != b:
            out.append(k)
    return out


def _skip(notes: Iterator[tuple[str, str]], n: int, last_id: str | None, partial: Path) -> None:
    """Consume the ``n`` notes a partial already holds; the last must be the one it recorded."""
    doc_id = None
    for note in islice(notes, n):
        doc_id = note[0]
    if doc_id != last_id:
        raise ConfigError(f"the partial run in {partial} does not match the input (note {n} is {doc_id!r}, "
                          f"the partial ends at {last_id!r})", hint=f"delete {partial} to start over")


# -- predicting ---------------------------------------------------------------------------------------
def predict_file(
    coder: Coder,
    input_path: str | Path,
    output_path: str | Path,
    audit_path: str | Path | None = None,
    *,
    summary_path: str | Path | None = None,
    granularity: str = "note",
    include_text: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS,
    **predict_kw: Any,
) -> BatchSummary:
    """Predict every note of ``input_path`` into predictions + audit log + summary (all-or-nothing;
    audit and summary default to ``<output without suffix>.audit.jsonl`` / ``.summary.json``).
    ``predict_kw`` go to :func:`predict_notes` (``resume``, ``block_size``, ``progress``, ...)."""
    outputs = OutputPaths.beside(output_path, audit_path, summary_path)
    fmt = check_outputs(outputs.predictions, outputs.audit, granularity)
    check_paths(outputs, input_path, coder.bundle_dir)
    source = NoteSource(input_path, id_column=id_column, text_column=text_column, max_note_chars=max_note_chars,
                        parquet_batch_rows=predict_kw.get("block_size", 256)).scan()
    return predict_notes(coder, source, outputs, fmt=fmt, granularity=granularity, include_text=include_text,
                         max_note_chars=max_note_chars, **predict_kw)


def predict_notes(
    coder: Coder,
    notes: NoteSource | Iterable[tuple[str, str]],
    outputs: OutputPaths,
    *,
    fmt: str,
    granularity: str,
    include_text: bool = False,
    batch_size: int = 8,
    block_size: int = 256,
    evidence_top_k: int = 3,
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS,
    progress: bool = True,
    resume: bool = False,
    extra_summary: dict[str, Any] | None = None,
) -> BatchSummary:
    """Predict ``(id, text)`` notes into the three outputs, ``block_size`` notes at a time.

    ``notes``: a :class:`NoteSource` (streamed, scanned first if it was not), or any iterable of
    pairs (a list: in memory). ``resume=True`` keeps a killed or interrupted run's finished blocks
    and continues from them (see the module docstring; needs a ``NoteSource`` or a sequence, whose
    fingerprint identifies the input). SIGTERM/SIGHUP raise meanwhile, so nothing half-done is
    left behind except, with ``resume``, the partial that the same call continues.
    """
    check_positive("block_size", block_size)
    check_bool("resume", resume)
    if fmt not in OUTPUT_FORMATS.values():
        raise ConfigError(f"fmt={fmt!r} is not valid", hint=f"one of {sorted(set(OUTPUT_FORMATS.values()))}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not valid", hint="use note or code")
    if isinstance(notes, NoteSource):
        if notes.count is None:
            notes.scan()
        total, input_fp, recheck = notes.count, notes.fingerprint, notes.current_fingerprint
    else:
        total = len(notes) if isinstance(notes, Sized) else None
        input_fp, recheck = None, None
        if resume:
            if not isinstance(notes, Sequence):
                raise ConfigError("resume=true needs an input file or a list of notes, not a one-pass iterable",
                                  hint="pass a NoteSource, or resume=False")
            input_fp = _notes_fingerprint(notes)
    from medcoder import __version__

    fingerprint = {
        "bundle_id": coder.bundle_id, "input": input_fp, "medcoder": __version__,
        "settings": {"format": fmt, "granularity": granularity, "include_text": include_text,
                     "evidence_top_k": evidence_top_k, "max_note_chars": max_note_chars,
                     **({"id_column": notes.id_column, "text_column": notes.text_column}
                        if isinstance(notes, NoteSource) else {})},
        "outputs": {k: str(p.resolve()) for k, p in outputs.named()},
    }
    for _, path in outputs.named():
        remove_stale_temps(path)  # left by a run that was SIGKILLed
    part = _Partial(outputs, fmt)
    run = _BlockRun(coder, part, granularity=granularity, include_text=include_text, batch_size=batch_size,
                    evidence_top_k=evidence_top_k, max_note_chars=max_note_chars, durable=resume)
    with signals_raise():
        part.acquire()
        try:
            try:
                state = _start(part, fingerprint, resume)
                it = iter(notes)
                if state["notes_done"]:
                    _skip(it, state["notes_done"], state["last_id"], part.dir)
                    log.info("resuming from %s: %d notes already predicted", part.dir, state["notes_done"])
            except BaseException:
                if not part.state_path.is_file():
                    part.remove()  # a refused or damaged partial is left as it is (the message says so)
                raise
            try:
                summary = run.predict(it, state, block_size=block_size, total=total, progress=progress)
                if recheck is not None and recheck() != input_fp:
                    raise DataError(f"input {getattr(notes, 'path', '')} changed while it was being predicted",
                                    hint="run again once the input is final")
                text = json.dumps(
                    {"bundle_id": coder.bundle_id, "codeset_fy": coder.codeset_fy,
                     "policy_version": str(coder.policy.policy_version), **summary.to_dict(),
                     "max_note_chars": max_note_chars, "predictions": outputs.predictions.name,
                     "audit": outputs.audit.name, **(extra_summary or {})},
                    indent=2, allow_nan=False) + "\n"
                _commit(part, text, schema=run.schema)
            except BaseException as exc:
                done = state["notes_done"]
                if resume and done > 0 and not isinstance(exc, DataError):
                    log.warning("stopped after %d of %s notes; the finished blocks are kept in %s: run the "
                                "same command again to continue", done, "?" if total is None else total, part.dir)
                else:
                    part.remove()
                raise
            part.remove()  # while still holding the lock
        finally:
            part.release()
    return summary


class _BlockRun:
    """The block loop: predict a block with ``Coder.predict``, append its rows and audit lines to
    the parts, then (``durable``: resumable runs) fsync them and record the block in the state."""

    def __init__(self, coder: Coder, part: _Partial, *, granularity: str, include_text: bool, batch_size: int,
                 evidence_top_k: int, max_note_chars: int | None, durable: bool) -> None:
        self.coder, self.part, self.granularity = coder, part, granularity
        self.include_text, self.batch_size, self.evidence_top_k = include_text, batch_size, evidence_top_k
        self.max_note_chars, self.durable = max_note_chars, durable
        self.schema = parquet_schema(granularity) if part.fmt == "parquet" else None
        self.writer = None if part.fmt == "parquet" else _Writer(part.fmt, output_columns(granularity))

    def predict(self, notes: Iterator[tuple[str, str]], state: dict[str, Any], *, block_size: int,
                total: int | None, progress: bool) -> BatchSummary:
        summary = BatchSummary.from_counts(state["summary"])
        summary.resumed_notes = state["notes_done"]
        prior, started = summary.wall_seconds, time.perf_counter()
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(contextlib.closing(_progress(total, state["notes_done"], progress)))
            pred_fh = None if self.writer is None else stack.enter_context(open(self.part.pred, "ab"))
            audit_fh = stack.enter_context(open(self.part.audit, "ab"))
            for block in _blocks(notes, block_size):
                preds = self._predict(block)
                rows = [row for pred in preds for row in _rows(pred, self.granularity)]
                if self.schema is not None:
                    _write_parquet_block(self.part.pred / f"{state['notes_done']:012d}.parquet", rows, self.schema,
                                         sync=self.durable)
                    state["blocks"] += 1
                else:
                    assert self.writer is not None and pred_fh is not None
                    pred_fh.write(self.writer.encode(rows, header=state["bytes"]["predictions"] == 0))
                    state["bytes"]["predictions"] = self._flush(pred_fh)
                audit_fh.write(self._audit_lines(block, preds))
                state["bytes"]["audit"] = self._flush(audit_fh)
                for pred in preds:
                    summary.add(pred)
                summary.wall_seconds = prior + time.perf_counter() - started
                state.update(notes_done=state["notes_done"] + len(block), last_id=block[-1][0],
                             summary=summary.to_dict())
                if self.durable:  # recorded only once the block's bytes are on disk
                    self.part.write_state(state)
                bar.update(len(block))
            for fh in (pred_fh, audit_fh):
                if fh is not None:
                    _fsync(fh)
        summary.wall_seconds = prior + time.perf_counter() - started
        return summary

    def _predict(self, block: list[tuple[str, str]]) -> list[DocumentPrediction]:
        # The one inference path; Coder.predict sorts the block by length and batches it, and
        # returns the predictions in input order.
        return self.coder.predict([t for _, t in block], [i for i, _ in block], batch_size=self.batch_size,
                                  evidence_top_k=self.evidence_top_k, max_note_chars=self.max_note_chars,
                                  progress=False)

    def _audit_lines(self, block: list[tuple[str, str]], preds: list[DocumentPrediction]) -> bytes:
        """Audit records: no note text unless ``include_text`` (then the text as scored)."""
        limit = self.max_note_chars
        lines = []
        for (_, text), pred in zip(block, preds, strict=True):
            scored = (text if limit is None else text[:limit]) if self.include_text else None
            lines.append(json.dumps(pred.audit_record(scored), ensure_ascii=False) + "\n")
        return "".join(lines).encode("utf-8")

    def _flush(self, fh: IO[bytes]) -> int:
        """Push the block to the file (and to disk when resumable); its length now."""
        if self.durable:
            _fsync(fh)
        return fh.tell()


def _start(part: _Partial, fingerprint: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The state to continue from: a matching partial's (resume), else a fresh one."""
    remove_stale_temps(part.state_path)
    state = part.read_state() if resume else None
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            diff = _fingerprint_diff(state.get("fingerprint") or {}, fingerprint)
            raise ConfigError(
                f"output={part.outputs.predictions}: {part.dir} holds a partial run of another "
                f"bundle, input or settings (differs in: {', '.join(diff) or 'format'})",
                hint=f"delete {part.dir} to start over, or choose another output")
        part.restore(state)
        return state
    if any(entry.name != "lock" for entry in part.dir.iterdir()):
        log.info("removing the earlier partial run in %s (%s)", part.dir,
                 "not resumable" if resume else "resume=false starts over")
    part.clear()
    if part.fmt == "parquet":
        part.pred.mkdir()
    else:
        part.pred.touch()
    part.audit.touch()
    state = {"version": STATE_VERSION, "fingerprint": fingerprint, "notes_done": 0, "last_id": None,
             "blocks": 0, "bytes": {"predictions": 0, "audit": 0}, "summary": BatchSummary().to_dict()}
    if resume:
        part.write_state(state)
    return state


def _progress(total: int | None, done: int, enabled: bool) -> Any:
    """A tqdm bar on stderr: notes done, notes/s and time left (the total is the scan's count)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit=" notes", desc="predicting", disable=not enabled,
                mininterval=1.0, smoothing=0.1, dynamic_ncols=True)


def _notes_fingerprint(notes: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for doc_id, text in notes:
        digest.update(json.dumps([doc_id, text], ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    return f"sha256-notes:{digest.hexdigest()}"


def _write_parquet_block(path: Path, rows: list[dict[str, Any]], schema: Any, *, sync: bool) -> None:
    """One block as its own Parquet file (one row group), fsynced before the state records it."""
    pa, _, pq = _pyarrow()
    _check_evidence_keys(rows)
    table = pa.Table.from_pylist(rows, schema=schema)
    with open(path, "wb") as fh:
        pq.write_table(table, fh)
        if sync:
            _fsync(fh)


def _stage(src: Path, target: Path) -> Path:
    """A temp file beside ``target`` with ``src``'s content: a hard link (free, and the partial
    stays whole if the commit fails), or a copy across file systems."""
    tmp = make_temp(target)
    try:
        os.unlink(tmp)
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return tmp


def _commit(part: _Partial, summary_text: str, *, schema: Any) -> None:
    """Stage the parts beside their targets, then rename the three together, the summary last."""
    outputs = part.outputs
    staged: dict[Path, Path] = {}
    try:
        if schema is not None:
            pa, _, pq = _pyarrow()
            tmp = staged[outputs.predictions] = make_temp(outputs.predictions)
            with open(tmp, "wb") as fh:
                writer = pq.ParquetWriter(fh, schema)
                try:
                    for block in sorted(part.pred.glob("*.parquet")):  # names: first note, zero-padded
                        writer.write_table(pq.read_table(block, schema=schema))  # one row group per block
                finally:
                    writer.close()
                _fsync(fh)
        else:
            staged[outputs.predictions] = _stage(part.pred, outputs.predictions)
        staged[outputs.audit] = _stage(part.audit, outputs.audit)
        tmp = staged[outputs.summary] = make_temp(outputs.summary)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(summary_text)
            _fsync(fh)
        files = AtomicFileSet([outputs.predictions, outputs.audit, outputs.summary])
        files.temps.update(staged)
        files.commit()
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
