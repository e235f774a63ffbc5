"""Batch prediction: notes from a folder/JSONL/CSV -> predictions file + audit log + summary.

What ``scripts/predict.py`` calls. Guarantees, and why each exists:

* **Nothing is loaded or written before every setting is checked** (``medcoder.workflows.predict``
  and :func:`check_paths`): sizes, formats, and the output paths. An output (predictions, audit log,
  summary) may not resolve (following symlinks) to the input file, into the input folder, to a
  note file read, to the bundle directory or into it, to another output, or to an existing
  folder: any of these used to overwrite the notes or the model, or fail after predicting.
* **The input is read and validated whole before the bundle loads** (:func:`read_notes`), and
  is bounded: a note longer than ``max_note_chars`` (:data:`DEFAULT_MAX_NOTE_CHARS`) is cut to
  it and flagged ``truncated`` (its codes go to review with ``truncated_note``); ``.txt`` files
  are never read past the limit, and a JSONL line / CSV row too large to parse is a ``DataError``.
* **All-or-nothing outputs**: the three files are written to temp files
  (``.<name>.medcoder-<pid>-<random>.tmp`` beside each) and renamed in one step at the end,
  the summary last (:class:`medcoder.atomic.AtomicFileSet`). **The summary is the completion
  marker: a predictions file without its summary is not complete.** A failed rename rolls back
  what this run renamed. Temps are deleted on every exit path (error, Ctrl-C, SIGTERM/SIGHUP,
  which raise while predicting); temps of a killed (SIGKILL) run are deleted by the next run
  that writes the same outputs, if their pid is no longer alive.
* **CSV output is safe to open in a spreadsheet**: a cell that starts with ``=``, ``+``, ``-``,
  ``@``, tab or carriage return gets a leading ``'`` (OWASP's rule against formula injection:
  ``=HYPERLINK(...)`` as a note id would otherwise run as a formula). JSONL output is unchanged.
* The summary is valid JSON: shares that are undefined (no codes) are ``null``, never ``NaN``.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from medcoder.atomic import AtomicFileSet, remove_stale_temps, signals_raise
from medcoder.data.tabular import iter_unlabeled
from medcoder.errors import ConfigError, DataError
from medcoder.inference.coder import DEFAULT_MAX_NOTE_CHARS, Coder
from medcoder.inference.prediction import AUDIT_FIELDS, CodePrediction, DocumentPrediction

INPUT_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
GRANULARITIES = ("note", "code")
REMOTE_BUNDLE_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
#: Cells starting with one of these are formulas to a spreadsheet (OWASP CSV injection).
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


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

    def line(self) -> str:
        return (f"{self.notes} notes, {self.codes} codes predicted, "
                f"{_pct(self.share_auto_accepted)} of codes auto-accepted, "
                f"{self.notes_fully_auto} notes ({_pct(self.share_notes_fully_auto)}) fully auto-coded, "
                f"{self.empty_notes} empty, {self.truncated_notes} truncated; {self.wall_seconds:.1f} s")


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


# -- reading ----------------------------------------------------------------------------------------
def read_notes(
    path: str | Path,
    *,
    id_column: str = "id",
    text_column: str = "text",
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS,
) -> list[tuple[str, str]]:
    """``(id, text)`` pairs from a folder of ``.txt`` files (id = file name stem), a ``.jsonl``
    or a ``.csv`` file. Raises ``DataError`` naming the file (and line) on anything unreadable,
    and on an input without any note.

    Bounded: a text longer than ``max_note_chars`` comes back cut to ``max_note_chars + 1``
    characters (no file is read further), so ``Coder.predict`` with the same limit cuts it to the
    limit and flags it ``truncated``.
    """
    check_positive("max_note_chars", max_note_chars, allow_none=True)
    p = Path(path).expanduser()
    if p.is_dir():
        files = _note_files(p)
        if not files:
            raise DataError(f"input={p}: no .txt files in this folder", hint="one note per <id>.txt file")
        return [(_file_id(f), _read_txt(f, max_note_chars)) for f in files]
    if not p.is_file():
        raise DataError(f"input={p}: no such file or folder", hint="a .txt folder, a .jsonl or a .csv file")
    fmt = INPUT_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise DataError(f"input={p}: unsupported file type {p.suffix!r}",
                        hint=f"use a folder of .txt files or one of {sorted(INPUT_SUFFIXES)}")
    notes = [(i, t) for _, i, t in iter_unlabeled(p, format=fmt, id_column=id_column, text_column=text_column,
                                                  max_note_chars=max_note_chars)]
    if not notes:
        raise DataError(f"input={p}: no notes in input", hint=f"one note per {'line' if fmt == 'jsonl' else 'row'}")
    return notes


def _note_files(folder: Path) -> list[Path]:
    """The ``*.txt`` entries of ``folder``; a folder, broken symlink or special file named
    ``*.txt`` is a ``DataError`` (reading it would crash, or block forever on a FIFO)."""
    files = sorted(folder.glob("*.txt"))
    for f in files:
        if f.is_dir():
            raise DataError(f"{_show(f)}: a folder, not a note file",
                            hint="the input folder holds one note per <id>.txt file; move or rename this folder")
        if f.is_symlink() and not f.exists():
            raise DataError(f"{_show(f)}: broken symbolic link (its target does not exist)",
                            hint="remove the link or restore its target")
        if not f.is_file():
            raise DataError(f"{_show(f)}: not a regular file", hint="one note per <id>.txt file")
    return files


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


# -- settings and paths -------------------------------------------------------------------------------
def check_positive(name: str, value: Any, *, low: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is not valid", hint=f"an integer >= {low}")


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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(output_path: Path, audit_path: Path, granularity: str) -> str:
    """The output format, after checking the output file type and granularity (cheap)."""
    fmt = OUTPUT_FORMATS.get(Path(output_path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"output={output_path}: unsupported file type {Path(output_path).suffix!r}",
                          hint="use .jsonl or .csv")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not valid", hint="use note or code")
    return fmt


def check_paths(outputs: OutputPaths, input_path: str | Path, bundle: str | Path | None = None) -> None:
    """Refuse outputs that would destroy the input, the bundle or each other, or cannot be written.

    Compared after ``Path.resolve()`` (symlinks followed) and, for files that exist, by inode
    (hard links): predictions, audit log and summary must be three different files, none of them
    the input file, inside the input folder, one of the notes read, or inside the bundle.
    """
    inp = Path(input_path).expanduser()
    inp_r = inp.resolve()
    notes_r: list[Path] = []
    if inp.is_dir():
        notes_r = [f.resolve() for f in inp.glob("*.txt")]
    bundle_r = None
    if bundle is not None and not str(bundle).startswith(REMOTE_BUNDLE_PREFIXES):
        bundle_r = Path(bundle).expanduser().resolve()
    seen: dict[Path, str] = {}
    for key, path in outputs.named():
        resolved = path.resolve()
        where = f"{key}={path}"
        if resolved in seen:
            raise ConfigError(f"{where} is the same file as {seen[resolved]}",
                              hint="predictions, audit log and summary need three different paths")
        seen[resolved] = where
        if path.is_dir():
            raise ConfigError(f"{where} is an existing folder", hint="give a file path, e.g. out/predictions.jsonl")
        if resolved == inp_r or (inp.is_dir() and _inside(resolved, inp_r)) or resolved in notes_r \
                or _same_file(path, inp):
            raise ConfigError(f"{where} would overwrite the input ({inp})",
                              hint="write outputs outside the input file/folder")
        if any(_same_file(path, n) for n in notes_r):
            raise ConfigError(f"{where} is a note file of the input ({inp})", hint="write outputs outside the input")
        if bundle_r is not None and _inside(resolved, bundle_r):
            raise ConfigError(f"{where} is inside the bundle ({bundle})",
                              hint="a bundle is verified by the hash of every file: write outputs elsewhere")
        _check_writable(where, resolved)


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


# -- writing ------------------------------------------------------------------------------------------
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
    def __init__(self, fh: IO[str], fmt: str) -> None:
        self.fh, self.fmt, self.csv = fh, fmt, None

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        if self.csv is None:
            self.csv = csv.DictWriter(self.fh, fieldnames=list(row))
            self.csv.writeheader()
        self.csv.writerow({k: _csv_cell(v) for k, v in row.items()})


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
    audit and summary default to ``<output without suffix>.audit.jsonl`` / ``.summary.json``)."""
    outputs = OutputPaths.beside(output_path, audit_path, summary_path)
    fmt = check_outputs(outputs.predictions, outputs.audit, granularity)
    check_paths(outputs, input_path, coder.bundle_dir)
    notes = read_notes(input_path, id_column=id_column, text_column=text_column, max_note_chars=max_note_chars)
    return predict_notes(coder, notes, outputs, fmt=fmt, granularity=granularity, include_text=include_text,
                         max_note_chars=max_note_chars, **predict_kw)


def predict_notes(
    coder: Coder,
    notes: list[tuple[str, str]],
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
    extra_summary: dict[str, Any] | None = None,
) -> BatchSummary:
    """Predict already-read ``(id, text)`` notes into the three outputs (temp files, committed
    together at the end, the summary last). SIGTERM/SIGHUP raise meanwhile, so temps are removed."""
    check_positive("block_size", block_size)
    summary = BatchSummary()
    started = time.perf_counter()
    for _, path in outputs.named():
        remove_stale_temps(path)  # left by a run that was SIGKILLed
    with signals_raise(), AtomicFileSet([outputs.predictions, outputs.audit, outputs.summary]) as files:
        fh_out = files.open(outputs.predictions, "w", encoding="utf-8", newline="")
        fh_audit = files.open(outputs.audit, "w", encoding="utf-8")
        writer = _Writer(fh_out, fmt)
        # Blocks bound memory on large inputs; Coder.predict sorts each block by length.
        for start in range(0, len(notes), block_size):
            block = notes[start : start + block_size]
            preds = coder.predict([t for _, t in block], [i for i, _ in block], batch_size=batch_size,
                                  evidence_top_k=evidence_top_k, max_note_chars=max_note_chars,
                                  progress=progress and len(notes) > block_size)
            for (_, text), pred in zip(block, preds, strict=True):
                for row in _rows(pred, granularity):
                    writer.write(row)
                scored = text if max_note_chars is None else text[:max_note_chars]
                record = pred.audit_record(scored if include_text else None)
                fh_audit.write(json.dumps(record, ensure_ascii=False) + "\n")
                summary.add(pred)
        summary.wall_seconds = time.perf_counter() - started
        files.write_text(outputs.summary, json.dumps(
            {"bundle_id": coder.bundle_id, "codeset_fy": coder.codeset_fy,
             "policy_version": str(coder.policy.policy_version), **summary.to_dict(),
             "max_note_chars": max_note_chars, "predictions": outputs.predictions.name,
             "audit": outputs.audit.name, **(extra_summary or {})},
            indent=2, allow_nan=False) + "\n")
    return summary
