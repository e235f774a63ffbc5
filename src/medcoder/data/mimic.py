"""MIMIC-III v1.4 and MIMIC-IV discharge summaries -> ``{id, text, codes}`` splits, as Edin et al. 2023.

Edin, Junge, Havtorn, Borgholt, Maistro, Ruotsalo, Maaløe: "Automated Medical Coding on MIMIC-III
and MIMIC-IV: A Critical Review and Replicability Study" (SIGIR 2023). The rules below follow
their ``prepare_data`` scripts; where this module differs it says so.

Inputs: a credentialed user's *local* PhysioNet files, in their published schemas (``.csv.gz`` or
``.csv``). Nothing is downloaded and nothing is written next to them (a read-only folder works,
Edin's issue #4): everything goes to ``cache_dir``.

* MIMIC-III: ``NOTEEVENTS`` (``SUBJECT_ID, HADM_ID, CATEGORY, TEXT`` used), ``DIAGNOSES_ICD`` and
  ``PROCEDURES_ICD`` (``HADM_ID, SEQ_NUM, ICD9_CODE`` used), all in ``root``.
* MIMIC-IV: ``note/discharge`` (``subject_id, hadm_id, note_seq, text``) in ``note_root``
  (MIMIC-IV-Note, default ``root``); ``hosp/diagnoses_icd`` and ``hosp/procedures_icd``
  (``hadm_id, seq_num, icd_code, icd_version``) in ``root``.

Rules (one row per admission; ``id`` = ``hadm_id``):

* MIMIC-III: only ``CATEGORY == "Discharge summary"``; the report and its addenda of the same
  admission are joined with a space, in file order (as Edin). MIMIC-IV: the discharge notes of an
  admission, identical duplicates dropped, joined in ``note_seq`` order (Edin keeps one row per
  note; MIMIC-IV-Note has one discharge note per admission, so this only matters for odd files).
* ICD-9 codes get Mullenbach's/Edin's dot: diagnoses after 3 characters (E codes: 4), procedures
  after 2. ICD-10-CM after 3 characters; ICD-10-PCS has no dot. Unlike Edin's ``reformat_icd10``
  a 3-character ICD-10-CM category keeps no trailing dot (``I10``, not ``I10.``): the spelling of
  :func:`medcoder.data.codes.canonical_code` and of the project's code sets.
* ``codes`` = diagnoses (by ``SEQ_NUM``) then procedures, de-duplicated; ``code_types`` picks
  ``D``/``P`` (default both, as Edin). Admissions without a note or without a code are dropped.
* ``mimiciii_full``: every code. ``mimiciii_50``: only the 50 codes of Mullenbach et al. (Edin
  use that published list, because the top 50 recomputed on v1.4 differ slightly;
  ``top50="frequency"`` recomputes them), admissions left without a code dropped.
  ``mimiciv_icd9`` / ``mimiciv_icd10``: only codes of that ``icd_version``; codes seen in fewer
  than ``min_code_count`` (10) admissions dropped, then admissions left without a code.
* ``text_preprocessing="edin"`` applies Edin's normalisation (lower case, runs of non
  alphanumerics -> one space, digit-only tokens removed); the default ``"none"`` keeps the note as
  written, so evidence offsets point into the real note and new notes need no extra step.

Splits (``train``/``dev``/``test``):

* With ``split_files`` (Edin's published ``*_split(s).feather``/parquet/csv with ``_id`` and
  ``split``, or a mapping ``{train, dev, test}`` of Mullenbach-style headerless hadm-id lists),
  those are used (read by :func:`medcoder.data.splits.read_split_files`); admissions that the
  file does not list are dropped (counted in the manifest). Note that Edin's
  ``mimiciii_full``/``mimiciii_50`` splits *are* Mullenbach's.
* Otherwise patient-level iterative stratification as Edin
  (:func:`medcoder.data.splits.stratified_group_split`, the groups being patients): test 0.15
  first, then validation 0.10 of the whole (``0.10 / 0.85`` of the rest), seed 10. A patient's
  labels are the union of their admissions' codes, so ``subject_id`` never spans two splits. The
  splitter gives the same splits as iterative-stratification's ``MultilabelStratifiedShuffleSplit``
  (see :mod:`medcoder.data.splits`); Edin's own stratifier is not in their repository, so their
  exact splits come only from their files.

Memory stays bounded (Edin's issue #2): CSVs are read in chunks with only the needed columns;
kept note texts are streamed to a temporary Arrow file in the cache, then each split is written as
an Arrow file that ``datasets`` memory-maps (``Dataset.from_file``), so no text is held twice.

Cache: ``cache_dir/<variant>-<key>/`` holds ``train.arrow``, ``dev.arrow``, ``test.arrow`` and
``manifest.json`` (written last: the completion marker) with the parameters, each input's path,
size and mtime, and counts. A re-run with the same parameters and unchanged inputs reuses it. Every
file is written to a temp file and renamed (:mod:`medcoder.atomic`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from medcoder.atomic import atomic_open, atomic_write_text, make_temp, remove_stale_temps
from medcoder.data._common import FEATURES
from medcoder.data.splits import SPLITS, read_split_files, split_file_paths, stratified_group_split
from medcoder.data.tabular import missing_column
from medcoder.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

VARIANTS = ("mimiciii_full", "mimiciii_50", "mimiciv_icd9", "mimiciv_icd10")
TEST_SIZE = 0.15
VAL_SIZE = 0.10
SEED = 10
#: Edin et al.: MIMIC-IV codes seen in fewer admissions are dropped.
MIMICIV_MIN_CODE_COUNT = 10
TEXT_PREPROCESSING = ("none", "edin")
TOP50_MODES = ("mullenbach", "frequency")
CHUNKSIZE = 5_000
#: Bump when the prepared files change meaning, so old caches are rebuilt.
CACHE_SCHEMA = 1

#: The 50 codes of Mullenbach et al. 2018 (CAML), which Edin et al. keep for MIMIC-III-50.
MULLENBACH_TOP50 = frozenset({
    "401.9", "38.93", "428.0", "427.31", "414.01", "96.04", "96.6", "584.9", "250.00", "96.71",
    "272.4", "518.81", "99.04", "39.61", "599.0", "530.81", "96.72", "272.0", "285.9", "88.56",
    "244.9", "486", "38.91", "285.1", "36.15", "276.2", "496", "99.15", "995.92", "V58.61",
    "507.0", "038.9", "88.72", "585.9", "403.90", "311", "305.1", "37.22", "412", "33.24",
    "39.95", "287.5", "410.71", "276.1", "V45.81", "424.0", "45.13", "V15.82", "511.9", "37.23",
})


# --------------------------------------------------------------------------------------------
# Codes


def reformat_icd9(code: str, *, is_diag: bool) -> str:
    """Insert the dot MIMIC-III/IV leave out: diagnoses after 3 characters (E codes after 4),
    procedures after 2; codes too short for a dot are kept as they are."""
    code = code.strip().upper().replace(".", "")
    cut = (4 if code.startswith("E") else 3) if is_diag else 2
    return f"{code[:cut]}.{code[cut:]}" if len(code) > cut else code


def reformat_icd10(code: str, *, is_diag: bool) -> str:
    """ICD-10-CM: dot after the 3-character category (none for a bare category); PCS: no dot."""
    code = code.strip().upper().replace(".", "")
    if is_diag and len(code) > 3:
        return f"{code[:3]}.{code[3:]}"
    return code


_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_DIGIT_TOKENS = re.compile(r"(\s\d+)+\s")
_SPACES = re.compile(r"\s+")


def edin_preprocess(text: str) -> str:
    """Edin et al.'s text normalisation (their ``TextPreprocessor`` as configured for MIMIC)."""
    text = _NON_ALNUM.sub(" ", text.lower())
    text = _DIGIT_TOKENS.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class _Input:
    role: str                     # notes | diagnoses | procedures
    names: tuple[str, ...]        # candidate paths relative to the root, first found wins
    columns: tuple[str, ...]      # columns read (all required)
    schema: str                   # for messages


_III = {
    "notes": _Input("notes", ("NOTEEVENTS.csv.gz", "NOTEEVENTS.csv"),
                    ("SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"), "MIMIC-III v1.4 NOTEEVENTS"),
    "diagnoses": _Input("diagnoses", ("DIAGNOSES_ICD.csv.gz", "DIAGNOSES_ICD.csv"),
                        ("HADM_ID", "SEQ_NUM", "ICD9_CODE"), "MIMIC-III v1.4 DIAGNOSES_ICD"),
    "procedures": _Input("procedures", ("PROCEDURES_ICD.csv.gz", "PROCEDURES_ICD.csv"),
                         ("HADM_ID", "SEQ_NUM", "ICD9_CODE"), "MIMIC-III v1.4 PROCEDURES_ICD"),
}
_IV = {
    "notes": _Input("notes", ("note/discharge.csv.gz", "note/discharge.csv", "discharge.csv.gz",
                              "discharge.csv"),
                    ("subject_id", "hadm_id", "note_seq", "text"), "MIMIC-IV-Note discharge"),
    "diagnoses": _Input("diagnoses", ("hosp/diagnoses_icd.csv.gz", "hosp/diagnoses_icd.csv",
                                      "diagnoses_icd.csv.gz", "diagnoses_icd.csv"),
                        ("hadm_id", "seq_num", "icd_code", "icd_version"),
                        "MIMIC-IV hosp/diagnoses_icd"),
    "procedures": _Input("procedures", ("hosp/procedures_icd.csv.gz", "hosp/procedures_icd.csv",
                                        "procedures_icd.csv.gz", "procedures_icd.csv"),
                         ("hadm_id", "seq_num", "icd_code", "icd_version"),
                         "MIMIC-IV hosp/procedures_icd"),
}


def _find(root: Path, spec: _Input, root_key: str) -> Path:
    for name in spec.names:
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{root / spec.names[0]}: file not found (also tried {', '.join(spec.names[1:])})",
        hint=f"point data.{root_key} at the folder that holds the {spec.schema} file "
             "(PhysioNet credentialed download; nothing is downloaded for you)",
    )


def _read_error(path: Path, exc: Exception) -> DataError:
    """A one-line error without the reader's message where that could quote the file: pandas'
    parser and I/O errors name lines and positions, other ``ValueError`` texts may hold a cell."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, UnicodeDecodeError):
        text = f"not valid UTF-8 at byte {exc.start}"
    elif isinstance(exc, OSError):
        text = exc.strerror or text
    elif not isinstance(exc, pd.errors.ParserError | pd.errors.EmptyDataError | EOFError | zlib.error):
        text = "message withheld: it may quote the file"
    return DataError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {text})",
                     hint="re-download the file from PhysioNet (a truncated .gz or a non-CSV file)")


def _chunks(path: Path, spec: _Input, chunksize: int) -> Iterator[pd.DataFrame]:
    """Chunks of ``path`` with only ``spec.columns``, all as strings; the index numbers the data
    rows from 0 across chunks (for messages and file order)."""
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise _read_error(path, exc) from exc
    for column in spec.columns:
        if column not in header:  # the file's own header is not quoted: a headerless file's is a note
            raise missing_column(f"{path}:1", column, header, spec.columns,
                                 hint=f"expected the published {spec.schema} schema with a header row; "
                                      "use the unmodified PhysioNet file")
    try:
        reader = pd.read_csv(path, usecols=list(spec.columns), dtype=str, keep_default_na=False,
                             chunksize=chunksize)
        yield from reader
    except (ValueError, OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise _read_error(path, exc) from exc


def _int_column(chunk: pd.DataFrame, column: str, path: Path, *, allow_missing: bool) -> np.ndarray:
    """Integer ids of a string column; blanks -> -1 when allowed, otherwise a ``DataError``."""
    raw = chunk[column].str.strip()
    values = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
    bad = values.isna() & (raw != "")
    if not allow_missing:
        bad |= raw == ""
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: data row {chunk.index[pos] + 1}, column {column!r}: "
                        f"{'empty' if raw.iloc[pos] == '' else 'not an integer'} (the value is not shown)",
                        hint="the file is corrupt or not the published schema; re-download it")
    return values.fillna(-1).astype(np.int64).to_numpy()


@dataclass
class _Admission:
    diagnoses: list[tuple[int, str]]
    procedures: list[tuple[int, str]]


def _read_codes(path: Path, spec: _Input, *, is_diag: bool, version: int | None,
                admissions: dict[int, _Admission], chunksize: int) -> None:
    """Add ``(seq_num, dotted code)`` of ``path`` to ``admissions`` (only ``icd_version ==
    version`` for MIMIC-IV); rows without a code or admission are skipped, as Edin."""
    code_col = spec.columns[2]
    interned: dict[str, str] = {}
    for chunk in _chunks(path, spec, chunksize):
        hadm = _int_column(chunk, spec.columns[0], path, allow_missing=True)
        seq = _int_column(chunk, spec.columns[1], path, allow_missing=True)
        codes = chunk[code_col].str.strip().to_numpy()
        if version is not None:
            versions = _int_column(chunk, "icd_version", path, allow_missing=False)
            odd = ~np.isin(versions, (9, 10))
            if odd.any():
                pos = int(np.flatnonzero(odd)[0])
                raise DataError(f"{path}: data row {chunk.index[pos] + 1}, column 'icd_version': neither 9 nor 10",
                                hint="the file is corrupt or not the published MIMIC-IV schema")
            keep = versions == version
        else:
            keep = np.ones(len(chunk), dtype=bool)
        keep &= (hadm >= 0) & (codes != "")
        for h, s, raw in zip(hadm[keep].tolist(), seq[keep].tolist(), codes[keep].tolist(), strict=True):
            code = interned.get(raw)
            if code is None:
                fmt = reformat_icd10 if version == 10 else reformat_icd9
                code = interned[raw] = fmt(raw, is_diag=is_diag)
            adm = admissions.get(h)
            if adm is None:
                adm = admissions[h] = _Admission([], [])
            (adm.diagnoses if is_diag else adm.procedures).append((s, code))


_NOTE_SCHEMA = pa.schema([("hadm", pa.int64()), ("seq", pa.int64()), ("row", pa.int64()),
                          ("text", pa.large_string())])


@dataclass
class _Notes:
    """Where each kept note lies in the temporary Arrow file, and its admission's patient."""
    hadm: np.ndarray
    seq: np.ndarray
    row: np.ndarray
    batch: np.ndarray
    offset: np.ndarray
    subject_of: dict[int, int]
    n_read: int


def _read_notes(path: Path, spec: _Input, *, mimic3: bool, wanted: set[int] | None,
                tmp: Path, chunksize: int) -> _Notes:
    """Stream the notes of admissions in ``wanted`` (discharge summaries for MIMIC-III) into the
    Arrow file ``tmp``; only their positions stay in memory."""
    subj_col, hadm_col, third, text_col = spec.columns
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("hadm", "seq", "row", "batch", "offset")}
    subject_of: dict[int, int] = {}
    n_read = 0
    n_batches = 0
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, _NOTE_SCHEMA) as writer:
        for chunk in _chunks(path, spec, chunksize):
            n_read += len(chunk)
            pos = chunk.index.to_numpy(dtype=np.int64)  # data row numbers: file order
            if mimic3:
                keep = (chunk[third] == "Discharge summary").to_numpy()
                chunk, pos = chunk[keep], pos[keep]
            hadm = _int_column(chunk, hadm_col, path, allow_missing=True)
            text = chunk[text_col].to_numpy()
            keep = (hadm >= 0) & np.array([bool(t.strip()) for t in text], dtype=bool)
            if wanted is not None:
                keep &= np.fromiter((h in wanted for h in hadm.tolist()), dtype=bool, count=len(hadm))
            if not keep.any():
                continue
            chunk, hadm, text, row = chunk[keep], hadm[keep], text[keep], pos[keep]
            subj = _int_column(chunk, subj_col, path, allow_missing=False)
            seq = (np.zeros(len(chunk), dtype=np.int64) if mimic3
                   else _int_column(chunk, third, path, allow_missing=True))
            writer.write_batch(pa.record_batch(
                [pa.array(hadm), pa.array(seq), pa.array(row), pa.array(text.tolist(), pa.large_string())],
                schema=_NOTE_SCHEMA))
            for h, s, r in zip(hadm.tolist(), subj.tolist(), row.tolist(), strict=True):
                if subject_of.setdefault(h, s) != s:
                    raise DataError(f"{path}: data row {r + 1}: its {hadm_col} names an admission that an earlier "
                                    f"row gives another {subj_col} (ids not shown)",
                                    hint="the file is corrupt; re-download it")
            for key, values in (("hadm", hadm), ("seq", seq), ("row", row),
                                ("batch", np.full(len(hadm), n_batches, dtype=np.int64)),
                                ("offset", np.arange(len(hadm), dtype=np.int64))):
                cols[key].append(values)
            n_batches += 1
    cat = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in cols.items()}
    return _Notes(cat["hadm"], cat["seq"], cat["row"], cat["batch"], cat["offset"], subject_of, n_read)


# --------------------------------------------------------------------------------------------
# Preparation


def _stat(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_split(path: Path, rows: Iterator[tuple[str, str, list[str]]], batch_rows: int = 1000) -> int:
    """Stream ``(id, text, codes)`` rows into a ``datasets``-readable Arrow file (temp + rename)."""
    schema = FEATURES.arrow_schema
    n = 0
    with atomic_open(path, "wb") as fh, pa.ipc.new_stream(fh, schema) as writer:
        buf: dict[str, list[Any]] = {"id": [], "text": [], "codes": []}

        def flush() -> None:
            writer.write_batch(pa.RecordBatch.from_pydict(buf, schema=schema))
            for v in buf.values():
                v.clear()

        for doc_id, text, codes in rows:
            buf["id"].append(doc_id)
            buf["text"].append(text)
            buf["codes"].append(codes)
            n += 1
            if len(buf["id"]) >= batch_rows:
                flush()
        if buf["id"] or n == 0:
            flush()
    return n


def _check_options(variant: str, code_types: Sequence[str], text_preprocessing: str, top50: str,
                   min_code_count: int) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"data.variant={variant!r} is not a MIMIC variant", hint=f"use one of {', '.join(VARIANTS)}")
    if not code_types or any(t not in ("D", "P") for t in code_types):
        raise ConfigError(f"data.code_types={list(code_types)!r} is not valid",
                          hint="a non-empty list of D (diagnoses) and/or P (procedures)")
    if text_preprocessing not in TEXT_PREPROCESSING:
        raise ConfigError(f"data.text_preprocessing={text_preprocessing!r} is not known",
                          hint=f"use one of {', '.join(TEXT_PREPROCESSING)}")
    if top50 not in TOP50_MODES:
        raise ConfigError(f"data.top50={top50!r} is not known", hint=f"use one of {', '.join(TOP50_MODES)}")
    if isinstance(min_code_count, bool) or not isinstance(min_code_count, int) or min_code_count < 1:
        raise ConfigError(f"data.min_code_count={min_code_count!r} is not valid", hint="an integer >= 1")


def prepare_mimic(
    root: str | Path,
    *,
    variant: str,
    cache_dir: str | Path,
    note_root: str | Path | None = None,
    split_files: str | Path | Mapping[str, Any] | None = None,
    code_types: Sequence[str] = ("D", "P"),
    min_code_count: int | None = None,
    top50: str = "mullenbach",
    text_preprocessing: str = "none",
    test_size: float = TEST_SIZE,
    val_size: float = VAL_SIZE,
    seed: int = SEED,
    chunksize: int = CHUNKSIZE,
) -> Path:
    """Prepare (or reuse) the splits of ``variant``; return the cache folder (see module doc)."""
    if root is None:
        raise ConfigError("data.root is required for data.format=mimic",
                          hint="set data.root to your local PhysioNet MIMIC folder")
    if cache_dir is None:
        raise ConfigError("data.cache_dir is required for data.format=mimic",
                          hint="a writable folder for the prepared splits")
    mimic4 = variant.startswith("mimiciv") if isinstance(variant, str) else False
    if min_code_count is None:
        min_code_count = MIMICIV_MIN_CODE_COUNT if mimic4 else 1
    code_types = tuple(code_types)
    _check_options(variant, code_types, text_preprocessing, top50, min_code_count)
    root = Path(root).expanduser()
    note_root = Path(note_root).expanduser() if note_root is not None else root
    specs = _IV if mimic4 else _III
    files = {"notes": _find(note_root, specs["notes"], "note_root" if mimic4 else "root")}
    if "D" in code_types:
        files["diagnoses"] = _find(root, specs["diagnoses"], "root")
    if "P" in code_types:
        files["procedures"] = _find(root, specs["procedures"], "root")
    params = {
        "schema": CACHE_SCHEMA, "variant": variant, "code_types": list(code_types),
        "min_code_count": min_code_count, "top50": top50 if variant == "mimiciii_50" else None,
        "text_preprocessing": text_preprocessing, "test_size": test_size, "val_size": val_size,
        "seed": seed,
        "split_files": ({str(k): str(v) for k, v in split_files.items()} if isinstance(split_files, Mapping)
                        else (str(split_files) if split_files is not None else None)),
    }
    inputs = {role: _stat(p) for role, p in files.items()}
    inputs.update({f"split_file_{i}": _stat(p) for i, p in enumerate(split_file_paths(split_files))})
    key = hashlib.sha256(json.dumps([params, sorted((k, v["path"]) for k, v in inputs.items())],
                                    sort_keys=True).encode()).hexdigest()[:12]
    out = Path(cache_dir).expanduser() / f"{variant}-{key}"
    manifest_path = out / "manifest.json"
    if _cache_valid(out, manifest_path, params, inputs):
        logger.info("mimic[%s]: reusing %s", variant, out)
        return out

    out.mkdir(parents=True, exist_ok=True)
    for name in (*(f"{s}.arrow" for s in SPLITS), "manifest.json", "notes.arrow"):
        remove_stale_temps(out / name)
    logger.info("mimic[%s]: preparing from %s into %s", variant, root, out)

    version = (10 if variant == "mimiciv_icd10" else 9) if mimic4 else None
    admissions: dict[int, _Admission] = {}
    for role, is_diag in (("diagnoses", True), ("procedures", False)):
        if role in files:
            _read_codes(files[role], specs[role], is_diag=is_diag, version=version,
                        admissions=admissions, chunksize=chunksize)
    wanted = {h for h, a in admissions.items() if a.diagnoses or a.procedures}
    tmp = make_temp(out / "notes.arrow")
    try:
        notes = _read_notes(files["notes"], specs["notes"], mimic3=not mimic4, wanted=wanted, tmp=tmp,
                            chunksize=chunksize)
        codes_of = _targets(admissions, set(notes.subject_of), variant, min_code_count, top50)
        del admissions
        counts: dict[str, Any] = {"notes_read": notes.n_read, "notes_kept": int(len(notes.hadm)),
                                  "admissions_with_note_and_code": len(notes.subject_of),
                                  "admissions": len(codes_of),
                                  "codes": len({c for cs in codes_of.values() for c in cs})}
        split_of = _assign_splits(codes_of, notes.subject_of, split_files, test_size, val_size, seed, counts)
        outputs = _write_splits(out, tmp, notes, codes_of, split_of, mimic4=mimic4,
                                preprocess=text_preprocessing == "edin")
    finally:
        if tmp.exists():
            tmp.unlink()
    manifest = {"params": params, "inputs": inputs, "outputs": outputs, "counts": counts}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info("mimic[%s]: %s", variant, ", ".join(f"{s}={outputs[s]['rows']}" for s in SPLITS))
    return out


def _cache_valid(out: Path, manifest_path: Path, params: dict[str, Any], inputs: dict[str, Any]) -> bool:
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params or manifest.get("inputs") != inputs:
        return False
    outputs = manifest.get("outputs", {})
    for split in SPLITS:
        info = outputs.get(split) or {}
        path = out / f"{split}.arrow"
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return True


def _targets(admissions: dict[int, _Admission], with_note: set[int], variant: str,
             min_code_count: int, top50: str) -> dict[int, list[str]]:
    """hadm -> codes (diagnoses by seq_num, then procedures; de-duplicated), filtered by variant."""
    codes_of: dict[int, list[str]] = {}
    for h in with_note:
        adm = admissions[h]
        codes = [c for _, c in sorted(adm.diagnoses)] + [c for _, c in sorted(adm.procedures)]
        codes_of[h] = list(dict.fromkeys(codes))
    keep: set[str] | None = None
    if variant == "mimiciii_50":
        if top50 == "mullenbach":
            keep = set(MULLENBACH_TOP50)
        else:
            freq = Counter(c for cs in codes_of.values() for c in cs)
            keep = {c for c, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:50]}
    elif min_code_count > 1:
        freq = Counter(c for cs in codes_of.values() for c in cs)
        keep = {c for c, n in freq.items() if n >= min_code_count}
    if keep is not None:
        codes_of = {h: [c for c in cs if c in keep] for h, cs in codes_of.items()}
    return {h: cs for h, cs in codes_of.items() if cs}


def _assign_splits(codes_of: dict[int, list[str]], subject_of: dict[int, int], split_files: Any,
                   test_size: float, val_size: float, seed: int, counts: dict[str, Any]) -> dict[int, str]:
    hadms = sorted(codes_of)
    if split_files is not None:
        given = read_split_files(split_files)
        split_of = {h: given[h] for h in hadms if h in given}
        counts["admissions_not_in_split_files"] = len(hadms) - len(split_of)
        counts["split_file_ids_without_admission"] = len(set(given) - set(codes_of))
        if counts["admissions_not_in_split_files"]:
            logger.info("mimic: %d admissions are not in the split files and are left out",
                        counts["admissions_not_in_split_files"])
        return split_of
    names = stratified_group_split([subject_of[h] for h in hadms], [codes_of[h] for h in hadms],
                                     test_size=test_size, val_size=val_size, seed=seed)
    return dict(zip(hadms, names, strict=True))


def _write_splits(out: Path, tmp: Path, notes: _Notes, codes_of: dict[int, list[str]],
                  split_of: dict[int, str], *, mimic4: bool, preprocess: bool) -> dict[str, Any]:
    """Join each admission's notes (from the memory-mapped temp file) and write the splits."""
    order = np.lexsort((notes.row, notes.seq, notes.hadm))  # by hadm, then note_seq, then file order
    hadm_sorted = notes.hadm[order]
    bounds = np.flatnonzero(np.diff(hadm_sorted)) + 1
    starts = np.concatenate([[0], bounds]) if len(order) else np.zeros(0, dtype=np.int64)
    ends = np.concatenate([bounds, [len(order)]]) if len(order) else np.zeros(0, dtype=np.int64)
    span = {int(hadm_sorted[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
    outputs: dict[str, Any] = {}
    with pa.memory_map(str(tmp), "r") as source:
        reader = pa.ipc.open_file(source)
        texts = [reader.get_batch(i).column(3) for i in range(reader.num_record_batches)]

        def rows(split: str) -> Iterator[tuple[str, str, list[str]]]:
            for h in sorted(h for h, s in split_of.items() if s == split):
                s, e = span[h]
                parts: list[str] = []
                for j in order[s:e]:
                    text = texts[notes.batch[j]][int(notes.offset[j])].as_py()
                    if not (mimic4 and text in parts):
                        parts.append(text)
                text = " ".join(parts)
                yield str(h), (edin_preprocess(text) if preprocess else text), codes_of[h]

        for split in SPLITS:
            path = out / f"{split}.arrow"
            n = _write_split(path, rows(split))
            outputs[split] = {"file": path.name, "rows": n, "size": path.stat().st_size}
    return outputs


def load_mimic(root: str | Path, **options: Any) -> datasets.DatasetDict:
    """A MIMIC variant as a ``DatasetDict`` (train/dev/test of ``{id, text, codes}``),
    memory-mapped from the prepared cache (prepared on first use; see the module docstring).
    ``options`` are :func:`prepare_mimic`'s keywords (``variant``, ``cache_dir``, ...)."""
    folder = prepare_mimic(root, **options)
    info = datasets.DatasetInfo(features=FEATURES)
    return datasets.DatasetDict({
        split: datasets.Dataset.from_file(str(folder / f"{split}.arrow"), info=info) for split in SPLITS
    })
