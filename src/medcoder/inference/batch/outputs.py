"""Outputs of batch prediction: their paths and the checks on them, the rows and their encoders
(JSONL, CSV, Parquet), the summary, and the all-or-nothing commit of the three files.

* **Output paths are checked before anything is loaded or written** (:func:`check_paths`): an output
  (predictions, audit log, summary) may not resolve (following symlinks) to the input file, into
  the input folder, to a note file read, to the bundle directory or into it, to another output,
  or to an existing folder: any of these used to overwrite the notes or the model, or fail after
  predicting. Nor may it lie inside an MLflow artifact store, any bundle or MLflow model, or the
  bundle cache, and an existing file is replaced only if medcoder wrote it
  (:mod:`~medcoder.inference.batch.protect`): a file in the registry's bundle broke every later
  load of it, and ``summary_path=mlflow.db`` replaced the tracking store.
* **All-or-nothing outputs** (:func:`commit_outputs`): at the end the parts are hard-linked (or
  copied, across file systems) to temp files beside each output, Parquet blocks are merged into
  one file (one row group per block), and the three files are renamed together, the summary last
  (:class:`medcoder.atomic.AtomicFileSet`). **The summary is the completion marker: a predictions
  file without its summary is not complete.**
* **CSV output is safe to open in a spreadsheet**: a cell that starts with ``=``, ``+``, ``-``,
  ``@``, tab or carriage return gets a leading ``'`` (OWASP's rule against formula injection:
  ``=HYPERLINK(...)`` as a note id would otherwise run as a formula). JSONL output is unchanged.
  **Parquet output** has real nested types (:func:`parquet_schema`).
* The summary is valid JSON: shares that are undefined (no codes) are ``null``, never ``NaN``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from medcoder.atomic import AtomicFileSet, existing_ancestor, fsync_file, is_inside, make_temp
from medcoder.errors import ConfigError, DataError
from medcoder.inference.batch.protect import Protected, check_replaceable, protected_place, resolve
from medcoder.inference.batch.sources import _pyarrow
from medcoder.inference.prediction import AUDIT_FIELDS, CodePrediction, DocumentPrediction

OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
GRANULARITIES = ("note", "code")
REMOTE_BUNDLE_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
#: Cells starting with one of these are formulas to a spreadsheet (OWASP CSV injection).
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: The hidden folder beside the output that holds a run's parts: ``.<output name><suffix>``.
PARTIAL_SUFFIX = ".medcoder-partial"
#: Keys an evidence span may carry (``medcoder.modeling.scorer.Span``): the Parquet struct's fields.
EVIDENCE_KEYS = ("start", "end", "weight", "source", "negated")


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


# -- paths ------------------------------------------------------------------------------------------
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


def check_outputs(output_path: Path, audit_path: Path, granularity: str) -> str:
    """The output format, after checking the output file type and granularity (cheap)."""
    fmt = OUTPUT_FORMATS.get(Path(output_path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"output={output_path}: unsupported file type {Path(output_path).suffix!r}",
                          hint="use .jsonl, .csv or .parquet")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not valid", hint="use note or code")
    return fmt


def check_paths(outputs: OutputPaths, input_path: str | Path, bundle: str | Path | None = None, *,
                protected: Sequence[Protected] = ()) -> None:
    """Refuse outputs that would destroy the input, the bundle, the model registry or each other,
    replace a file medcoder did not write, or cannot be written.

    Compared after ``Path.resolve()`` (symlinks followed; a link loop is a ``ConfigError``) and,
    for files that exist, by inode (hard links): predictions, audit log and summary must be three
    different files, none of them the input file, inside the input folder, one of the notes read,
    inside the bundle, inside any other bundle or MLflow model, the bundle cache or one of the
    ``protected`` folders (the MLflow artifact stores: :func:`~medcoder.inference.batch.protect.artifact_stores`).
    An existing output must be a file medcoder wrote. A folder's notes are compared one by one as
    they are listed (nothing kept per note).
    """
    inp = Path(input_path).expanduser()
    inp_r = resolve(inp, "input", DataError)
    resolved = {key: resolve(path, key) for key, path in outputs.named()}
    note_paths: set[Path] = set()    # outputs that resolve to a note file (symlinked note)
    note_inodes: set[Path] = set()   # outputs that are a note file by inode (hard link)
    if inp.is_dir():
        out_r = set(resolved.values())
        out_ino = {_inode(path): path for _, path in outputs.named() if _inode(path) is not None}
        for f in inp.glob("*.txt"):
            r = resolve(f, "input", DataError)
            if r in out_r:
                note_paths.add(r)
            ino = _inode(f)
            if ino is not None and ino in out_ino:
                note_inodes.add(out_ino[ino])
    bundle_r = None
    if bundle is not None and not str(bundle).startswith(REMOTE_BUNDLE_PREFIXES):
        bundle_r = resolve(Path(bundle).expanduser(), "bundle")
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
        if res == inp_r or (inp.is_dir() and is_inside(res, inp_r)) or res in note_paths or _same_file(path, inp):
            raise ConfigError(f"{where} would overwrite the input ({inp})",
                              hint="write outputs outside the input file/folder")
        if path in note_inodes:
            raise ConfigError(f"{where} is a note file of the input ({inp})", hint="write outputs outside the input")
        if bundle_r is not None and is_inside(res, bundle_r):
            raise ConfigError(f"{where} is inside the bundle ({bundle})",
                              hint="a bundle is verified by the hash of every file: write outputs elsewhere")
        place = protected_place(res, protected)
        if place is not None:
            raise ConfigError(f"{where} is {place}",
                              hint="bundles, MLflow models and artifact stores are verified or managed by MLflow "
                                   "and medcoder: write outputs elsewhere")
        _check_writable(where, res)
    check_replaceable(outputs.named(), OUTPUT_FORMATS.get(outputs.predictions.suffix.lower(), "jsonl"))
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
    parent = existing_ancestor(resolved)
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


def _write_parquet_block(path: Path, rows: list[dict[str, Any]], schema: Any, *, sync: bool) -> None:
    """One block as its own Parquet file (one row group), fsynced before the state records it."""
    pa, _, pq = _pyarrow()
    _check_evidence_keys(rows)
    table = pa.Table.from_pylist(rows, schema=schema)
    with open(path, "wb") as fh:
        pq.write_table(table, fh)
        if sync:
            fsync_file(fh)


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
            fsync_file(fh)
    return tmp


def commit_outputs(outputs: OutputPaths, pred: Path, audit: Path, summary_text: str, *, schema: Any) -> None:
    """Stage the parts (``pred``: the predictions part, a folder of Parquet blocks when ``schema``
    is given; ``audit``: the audit part) beside their targets, then rename the three together,
    the summary last. The outputs are checked again first: a file someone else put there while
    the run predicted is not replaced either."""
    check_replaceable(outputs.named(), OUTPUT_FORMATS.get(outputs.predictions.suffix.lower(), "jsonl"))
    staged: dict[Path, Path] = {}
    try:
        if schema is not None:
            pa, _, pq = _pyarrow()
            tmp = staged[outputs.predictions] = make_temp(outputs.predictions)
            with open(tmp, "wb") as fh:
                writer = pq.ParquetWriter(fh, schema)
                try:
                    for block in sorted(pred.glob("*.parquet")):  # names: first note, zero-padded
                        writer.write_table(pq.read_table(block, schema=schema))  # one row group per block
                finally:
                    writer.close()
                fsync_file(fh)
        else:
            staged[outputs.predictions] = _stage(pred, outputs.predictions)
        staged[outputs.audit] = _stage(audit, outputs.audit)
        tmp = staged[outputs.summary] = make_temp(outputs.summary)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(summary_text)
            fsync_file(fh)
        files = AtomicFileSet([outputs.predictions, outputs.audit, outputs.summary])
        files.temps.update(staged)
        files.commit()
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
