"""Spark's side of batch prediction: reading the notes, checking them and the output paths, and
writing, staging and committing the three outputs of ``scripts/spark_predict.py``.

Why here and not in the workflow: these are the same guarantees as :mod:`medcoder.inference.batch`
gives ``scripts/predict.py`` (checked before anything starts, all or nothing, bounded notes, an
audit without text), built from the same file-safety helpers (:mod:`medcoder.atomic`); the workflow
keeps what needs the config and MLflow (the model, the UDF). pyspark is an optional extra
(``medcoder[spark]``), so it is imported inside the functions that need it, never at module level.

* **Checked before Spark starts:** the input's format and, for Parquet and CSV, that its
  ``id``/``text`` columns exist (a one-line ``ConfigError`` naming the file and the column);
  the output paths: none may be the input, inside it or hold it, nor the local model folder; and
  an existing output is refused unless ``overwrite=true`` *and* this job wrote it (its marker
  file :data:`MARKER` and nothing but Spark's own files in it).
* **All or nothing:** predictions and audit are written by Spark into staging folders beside the
  targets (:func:`medcoder.atomic.make_staging_dir`: ``.<name>.<random>.partial``, marked with
  this process's pid and host) and renamed into place at the end, the summary last
  (:func:`medcoder.atomic.replace_all`): **predictions without their summary are not complete.**
  A failed or interrupted run (exception, Ctrl-C, SIGTERM) removes its staging folders; those of
  a SIGKILLed run are removed by the next run into the same outputs
  (:func:`medcoder.atomic.sweep_stale`).
* **Audit without text:** one JSON line per note (model URI, bundle id, code-set year, policy
  version, sha256 of the scored text, decisions, probabilities rounded to 6 digits), derived from
  the written predictions, not a second scoring pass.
* **Bounded notes:** text is cut in Spark to ``max_note_chars + 1`` characters before it reaches
  Python (:func:`read_notes`).
* **No input values in errors:** a missing column is named with the expected ones, never with the
  file's own header (a headerless CSV's first row is a note); a duplicate id is counted, not
  quoted; Spark's read errors are reduced to their error class (their messages may quote a row).
* **Outputs stay out of MLflow's and medcoder's managed places:** not inside an artifact store,
  a bundle, an MLflow model or the bundle cache (:mod:`medcoder.inference.batch.protect`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcoder.atomic import (
    current_umask,
    existing_ancestor,
    is_inside,
    make_staging_dir,
    replace_all,
    signals_raise,
    sweep_stale,
)
from medcoder.data.tabular import missing_column
from medcoder.errors import ConfigError, DataError
from medcoder.inference.batch.protect import Protected, protected_place, resolve

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "INPUT_FORMATS", "JOB_NAME", "MARKER", "SparkOutputs", "check_ids", "check_input_columns",
    "check_output_paths", "first_line", "input_format", "read_notes", "write_outputs",
]

JOB_NAME = "medcoder.spark_predict"
#: Written into both output folders; Spark and Parquet readers skip files starting with ``_``.
MARKER = "_medcoder_job.json"
INPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
#: Files Spark itself writes into an output folder (part files, checksums, the success flag).
_SPARK_FILE = re.compile(r"^(\.?part-.*|\.?_SUCCESS(\.crc)?)$")


# -- input --------------------------------------------------------------------------------------------
def input_format(path: Path, fmt: str = "auto") -> str:
    """``parquet``, ``csv`` or ``jsonl``: by suffix (``.parquet`` file or folder, ``.csv``,
    ``.jsonl``/``.ndjson``/``.json``), or a folder holding ``*.parquet`` part files."""
    if not path.exists():
        raise DataError(f"input={path}: no such file or folder", hint="a .parquet file/folder, a .csv or a .jsonl file")
    if fmt != "auto":
        return fmt
    found = INPUT_FORMATS.get(path.suffix.lower())
    if found is None and path.is_dir() and any(path.glob("*.parquet")):
        found = "parquet"
    if found is None:
        raise ConfigError(f"input={path}: cannot tell the format from its name",
                          hint=f"use a name ending in one of {sorted(INPUT_FORMATS)} or set input_format")
    if found in ("csv", "jsonl") and not path.is_file():
        raise DataError(f"input={path}: a {found} input must be a file", hint="one file of notes")
    return found


def _missing_column(where: Path | str, fmt: str, column: str, key: str, columns: list[str],
                    expected: tuple[str, str]) -> ConfigError:
    """A ``ConfigError`` naming the expected columns, never the input's own (they may be a note)."""
    hint = f"name the column with {key}=<name>" + ("; the CSV needs a header row" if fmt.lower() == "csv" else "")
    err = missing_column(f"input={where}", column, columns, expected, what=f"{fmt} input", hint=hint)
    return ConfigError(err.message, hint=err.hint)


def check_input_columns(path: Path, fmt: str, id_column: str, text_column: str) -> None:
    """Before Spark starts: a Parquet file (or folder) or CSV header without the id/text column,
    or a Parquet text column that is not a string, is a ``ConfigError`` naming file and column.
    JSON lines are checked once Spark has read them (their schema is inferred from every line)."""
    if fmt == "parquet":
        import pyarrow.dataset as pads

        try:
            schema = pads.dataset(str(path), format="parquet").schema
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise DataError(f"input={path}: not a readable Parquet file ({type(exc).__name__})",
                            hint="write the notes with pyarrow, pandas or Spark") from exc
        import pyarrow as pa

        names = list(schema.names)
        for column, key in ((text_column, "text_column"), (id_column, "id_column")):
            if column not in names:
                raise _missing_column(path, "Parquet", column, key, names, (id_column, text_column))
        kind = schema.field(text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
            raise ConfigError(f"input={path}: column {text_column!r} is {kind}, not a string",
                              hint="the note text must be a string column")
    elif fmt == "csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            reason = f"not valid UTF-8 at byte {exc.start}" if isinstance(exc, UnicodeDecodeError) else (
                getattr(exc, "strerror", None) or type(exc).__name__)
            raise DataError(f"input={path}: cannot read the CSV header ({reason})",
                            hint="a UTF-8 CSV with a header row") from None
        for column, key in ((text_column, "text_column"), (id_column, "id_column")):
            if column not in header:
                raise _missing_column(path, "CSV", column, key, header, (id_column, text_column))


def read_notes(spark: SparkSession, path: Path, fmt: str, id_column: str, text_column: str,
               max_note_chars: int) -> DataFrame:
    """``(id string, text string)`` rows; text cut to ``max_note_chars + 1`` characters (Coder
    cuts it to the limit and flags it truncated, as batch prediction does)."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    try:
        if fmt == "parquet":
            df = spark.read.parquet(str(path))
        elif fmt == "csv":
            # multiLine + escape='"': notes span lines and quote quotes, as Python's csv writes them.
            df = spark.read.csv(str(path), header=True, multiLine=True, escape='"', mode="FAILFAST", encoding="UTF-8")
            df = df.toDF(*[c.lstrip("\ufeff") for c in df.columns])  # a UTF-8 BOM sticks to the first name
        else:
            df = spark.read.json(str(path), mode="FAILFAST", multiLine=False)
        columns = df.columns
    except PySparkException as exc:
        _raise_data_error(exc, path)
        raise DataError(f"input={path}: Spark cannot read it as {fmt} ({_error_class(exc)})",
                        hint="check the file and input_format") from None
    for column, key in ((text_column, "text_column"), (id_column, "id_column")):
        if column not in columns:
            raise _missing_column(path, fmt, column, key, columns, (id_column, text_column))
    kind = df.schema[text_column].dataType
    if not isinstance(kind, StringType):
        raise ConfigError(f"input={path}: column {text_column!r} is {kind.simpleString()}, not a string",
                          hint="the note text must be a string column")
    return df.select(F.col(id_column).cast("string").alias("id"),
                     F.substring(F.col(text_column), 1, max_note_chars + 1).alias("text"))


def check_ids(notes: DataFrame, path: Path) -> int:
    """The number of notes; no note, a null id or a duplicate id is a ``DataError`` (ids are what
    the audit and any join back to the notes rely on). One cheap pass over the input."""
    from pyspark.sql import functions as F

    try:
        row = notes.agg(F.count(F.lit(1)).alias("n"), F.count_distinct("id").alias("distinct"),
                        F.sum(F.col("id").isNull().cast("long")).alias("null")).collect()[0]
    except Exception as exc:  # FAILFAST parse errors surface here, on the first action
        _raise_data_error(exc, path)
        raise
    n, distinct, null = int(row["n"]), int(row["distinct"] or 0), int(row["null"] or 0)
    if n == 0:
        raise DataError(f"input={path}: no notes in input", hint="one note per row")
    if null:
        raise DataError(f"input={path}: {null} note(s) without an id", hint="every note needs a unique id")
    if distinct != n:  # counted, not quoted: the id column's values stay out of messages
        raise DataError(f"input={path}: duplicate ids ({n - distinct} of {n} rows repeat an id of another row)",
                        hint="ids must be unique within the input; find them with "
                             "df.groupBy(<id column>).count().where('count > 1')")
    return n


# -- outputs ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SparkOutputs:
    """Predictions (Parquet folder), audit (JSON-lines folder), summary (file, committed last)."""

    predictions: Path
    audit: Path
    summary: Path

    @classmethod
    def beside(cls, output: str | Path, audit: str | Path | None = None,
               summary: str | Path | None = None) -> SparkOutputs:
        """Defaults: ``<output without .parquet>.audit`` and ``<output without .parquet>.summary.json``."""
        out = Path(output).expanduser()
        stem = out.with_suffix("") if out.suffix.lower() == ".parquet" else out
        return cls(out, Path(audit).expanduser() if audit else stem.with_name(stem.name + ".audit"),
                   Path(summary).expanduser() if summary else stem.with_name(stem.name + ".summary.json"))

    def named(self) -> list[tuple[str, Path]]:
        return [("output", self.predictions), ("audit_path", self.audit), ("summary_path", self.summary)]


def _ours(folder: Path) -> bool:
    """A folder this job wrote: its marker names the job, and it holds only Spark's own files."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        names = [p.name for p in folder.iterdir()]
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("job") != JOB_NAME:
        return False
    return all(n == MARKER or _SPARK_FILE.match(n) for n in names) and all(
        (folder / n).is_file() and not (folder / n).is_symlink() for n in names)


def _our_summary(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return path.is_file() and not path.is_symlink() and isinstance(data, dict) and data.get("job") == JOB_NAME


def check_output_paths(outputs: SparkOutputs, input_path: Path, model_dir: Path | None, *, overwrite: bool,
                       protected: Sequence[Protected] = ()) -> None:
    """Refuse outputs that would destroy the input, the model or each other, or an earlier result.

    Compared after ``Path.resolve()`` (symlinks followed; a loop is a ``ConfigError``), in both
    directions: an output may not be the input, inside it, or hold it (replacing a folder deletes
    what is inside). Nor may it lie inside an MLflow artifact store (``protected``), a bundle, an
    MLflow model or the bundle cache, or hold one of the ``protected`` stores. An existing output
    is replaced only with ``overwrite=true`` and only if this job wrote it.
    """
    inp = resolve(input_path.expanduser(), "input")
    seen: dict[Path, str] = {}
    for key, path in outputs.named():
        resolved = resolve(path, key)
        where = f"{key}={path}"
        for other, other_key in seen.items():
            if is_inside(resolved, other) or is_inside(other, resolved):
                raise ConfigError(f"{where} overlaps {other_key}", hint="predictions, audit and summary need three separate paths")
        seen[resolved] = where
        if is_inside(resolved, inp) or is_inside(inp, resolved):
            raise ConfigError(f"{where} would overwrite the input ({input_path})",
                              hint="write outputs outside the input file/folder")
        if model_dir is not None and (is_inside(resolved, model_dir) or is_inside(model_dir, resolved)):
            raise ConfigError(f"{where} overlaps the model folder ({model_dir})", hint="write outputs elsewhere")
        place = protected_place(resolved, protected)
        held = [folder for _, folder in protected if is_inside(folder, resolved)]
        if place is not None or held:
            raise ConfigError(f"{where} is {place or f'a folder holding an MLflow artifact store ({held[0]})'}",
                              hint="bundles, MLflow models and artifact stores are managed by MLflow and medcoder: "
                                   "write outputs elsewhere")
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise ConfigError(f"{where} already exists",
                                  hint="choose a new path, or overwrite=true to replace the result of an earlier "
                                       "spark_predict run")
            mine = _our_summary(path) if key == "summary_path" else (path.is_dir() and not path.is_symlink()
                                                                     and _ours(path))
            if not mine:
                raise ConfigError(f"{where} exists and was not written by spark_predict",
                                  hint="overwrite=true replaces only this job's own outputs; choose another path")
        parent = existing_ancestor(resolved)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: cannot write into {parent}", hint="choose a folder you can write to")


def write_outputs(spark: SparkSession, predictions: DataFrame, outputs: SparkOutputs, *, input_path: Path,
                  n_notes: int, model_uri: str, marker: dict[str, Any], summary_fields: dict[str, Any],
                  started: float) -> dict[str, Any]:
    """Write the predictions (Parquet) into a staging folder beside their target, derive the audit
    (JSON lines) and the summary from what was written, and commit the three, summary last.

    ``marker`` is written into both output folders as :data:`MARKER` (what made them:
    :func:`check_output_paths` replaces only such folders); ``summary_fields`` are added to the
    counts, then ``wall_seconds`` since ``started`` (``time.perf_counter()``) and
    ``notes_per_second``. Returns the summary written.
    """
    for _, path in outputs.named():
        sweep_stale(path.parent, path.name)  # staging folders of a run that was SIGKILLed
        path.parent.mkdir(parents=True, exist_ok=True)
    stages: list[Path] = []
    try:
        with signals_raise():
            staged: dict[str, Path] = {}
            for key, path in outputs.named():
                stages.append(make_staging_dir(path.parent, path.name))
                os.chmod(stages[-1], 0o777 & ~current_umask())  # mkdtemp's 0700: Spark's workers write here
                staged[key] = stages[-1] / path.name
            try:
                predictions.write.parquet(str(staged["output"]))
            except Exception as exc:
                _raise_data_error(exc, input_path)
                raise
            (staged["output"] / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            written = spark.read.parquet(str(staged["output"]))
            _audit_frame(written, model_uri).write.option("ignoreNullFields", "false").json(str(staged["audit_path"]))
            (staged["audit_path"] / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            summary = _summary(written)
            if summary["notes"] != n_notes:  # never expected: a lost or duplicated row is a bug
                raise RuntimeError(f"{n_notes} notes read but {summary['notes']} predictions written")
            wall = time.perf_counter() - started
            summary.update(summary_fields)
            summary.update(wall_seconds=round(wall, 3), notes_per_second=round(n_notes / wall, 4) if wall > 0 else None)
            staged["summary_path"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
            replace_all([(staged[key], path) for key, path in outputs.named()])
    finally:
        for stage in stages:
            shutil.rmtree(stage, ignore_errors=True)
    return summary


def _audit_frame(predictions: DataFrame, model_uri: str) -> DataFrame:
    """One audit line per note: :meth:`DocumentPrediction.audit_record`'s fields plus the model
    URI (an alias resolved to its version); never the text."""
    from pyspark.sql import functions as F

    codes = F.transform("codes", lambda c: F.struct(
        c["code"].alias("code"), F.round(c["probability"], 6).alias("probability"),
        c["decision"].alias("decision"), c["reasons"].alias("reasons")))
    return predictions.select(
        "id", F.lit(model_uri).alias("model_uri"), "bundle_id", "codeset_fy", "policy_version", "input_sha256",
        "timestamp", "document_decision", "document_reasons", "truncated", codes.alias("codes"))


def _summary(predictions: DataFrame) -> dict[str, Any]:
    """Counts only (no text), in :class:`medcoder.inference.batch.BatchSummary`'s terms."""
    from pyspark.sql import functions as F

    accepted = F.size(F.filter("codes", lambda c: c["decision"] == "auto_accept"))
    row = predictions.agg(
        F.count(F.lit(1)).alias("notes"), F.sum(F.size("codes")).alias("codes"),
        F.sum(accepted).alias("auto_accepted"),
        F.sum((F.col("document_decision") == "auto_accept").cast("long")).alias("notes_fully_auto"),
        F.sum(F.array_contains("document_reasons", "empty_note").cast("long")).alias("empty_notes"),
        F.sum(F.col("truncated").cast("long")).alias("truncated_notes"),
        F.sort_array(F.collect_set("bundle_id")).alias("bundle_ids"),
        F.sort_array(F.collect_set("codeset_fy")).alias("codeset_fys"),
        F.sort_array(F.collect_set("policy_version")).alias("policy_versions"),
    ).collect()[0].asDict()
    reasons = (predictions.select(F.explode("codes").alias("c")).select(F.explode("c.reasons").alias("r"))
               .groupBy("r").count().collect())
    out = dict(row)
    for key in ("notes", "codes", "auto_accepted", "notes_fully_auto", "empty_notes", "truncated_notes"):
        out[key] = int(out[key] or 0)  # a sum over no rows is null
    out["reasons"] = {r["r"]: int(r["count"]) for r in sorted(reasons, key=lambda r: r["r"])}
    out["share_auto_accepted"] = out["auto_accepted"] / out["codes"] if out["codes"] else None
    out["share_notes_fully_auto"] = out["notes_fully_auto"] / out["notes"] if out["notes"] else None
    return out


# -- errors -----------------------------------------------------------------------------------------------
def first_line(exc: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), for a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


#: Only our own errors are shown: their messages name notes by id and never quote text (MLflow's
#: schema errors may quote the input, so they keep Spark's traceback instead of becoming one line).
_MEDCODER_ERROR = re.compile(r"(medcoder\.errors\.\w+|RequestRejected): (.+)")


def _error_class(exc: BaseException) -> str:
    """Spark's error class (``PATH_NOT_FOUND``, ``UNABLE_TO_INFER_SCHEMA`` ...), not its message,
    which may quote a row of the input."""
    for name in ("getCondition", "getErrorClass"):
        with contextlib.suppress(Exception):
            found = getattr(exc, name)()
            if found:
                return str(found)
    match = re.match(r"\s*\[([A-Z0-9_.]+)\]", str(exc))
    return match.group(1) if match else type(exc).__name__


def _raise_data_error(exc: BaseException, path: Path) -> None:
    """Raise ``DataError`` for a failed Spark job whose Python side raised a medcoder error (a bad
    note, named by id, never by text) or that met a malformed input row; return for anything else
    (the caller re-raises it: a bug keeps its traceback). Spark's own message for a malformed row
    is withheld: it may quote the parsed note."""
    text = str(exc)
    found = _MEDCODER_ERROR.findall(text)
    if found:
        raise DataError(f"input={path}: {found[-1][1].strip()[:300]}", hint="fix or drop that note") from None
    if "Malformed records" in text or "MALFORMED_RECORD" in text:
        raise DataError(f"input={path}: a malformed row (Spark's message is withheld: it may quote the note)",
                        hint="check the file and input_format; CSV needs a header and RFC 4180 quoting") from None
