"""``scripts/spark_predict.py``: batch scoring with Spark, through the registered MLflow model.

Why Spark and why through the MLflow model: a hospital's notes live in a data lake as Parquet,
and ops teams score them where they are, with the model the registry names
(``models:/<name>@<alias>``). ``mlflow.pyfunc.spark_udf`` runs the very ``MedCoderModel`` that
``mlflow models serve`` runs, which calls ``Coder.predict`` (the one inference path), so Spark,
HTTP serving and ``scripts/predict.py`` give the same codes, probabilities and decisions. The UDF
returns the model's structured output schema (:data:`medcoder.tracking.pyfunc.OUTPUT_SCHEMA`) as
real Spark types, so the Parquet output has ``codes`` as an array of structs (evidence as offsets,
never text), not a JSON string.

Guarantees, and why each exists (the same as batch prediction, ``medcoder.inference.batch``):

* **Checked before Spark starts:** every setting; the input's format and, for Parquet and CSV,
  that its ``id``/``text`` columns exist (a one-line ``ConfigError`` naming the file and the
  column, exit 2, nothing written); the output paths: none may be the input, inside it or hold it,
  nor the local model folder; and an existing output is refused unless ``overwrite=true`` *and*
  this job wrote it (its marker file :data:`MARKER` and nothing but Spark's own files in it).
* **The model is checked before scoring:** its MLmodel must record output schema version
  :data:`~medcoder.tracking.pyfunc.OUTPUT_SCHEMA_VERSION` and that schema as its signature; a
  version-1 model (codes as JSON strings) is refused with the command that re-exports it. An alias
  is resolved to a version once, and that version is what the audit names.
* **All or nothing:** predictions and audit are written by Spark into hidden staging folders
  beside the targets (``.<name>.medcoder-<pid>-<rand>.tmp``) and renamed into place at the end,
  the summary last: **predictions without their summary are not complete.** A failed or
  interrupted run (exception, Ctrl-C, SIGTERM) removes its staging folders; those of a SIGKILLed
  run are removed by the next run into the same outputs.
* **Audit without text:** one JSON line per note (model URI, bundle id, code-set year, policy
  version, sha256 of the scored text, decisions, probabilities rounded to 6 digits), derived from
  the written predictions, not a second scoring pass.
* **Bounded notes:** text is cut in Spark to ``max_note_chars + 1`` characters before it reaches
  Python, and ``Coder`` cuts it to ``max_note_chars`` and flags it ``truncated`` (as
  ``scripts/predict.py`` does), so a huge cell cannot exhaust a Python worker's memory.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException

from medcoder.atomic import signals_raise
from medcoder.errors import ConfigError, DataError
from medcoder.inference.batch import check_positive
from medcoder.tracking import tracking_uri
from medcoder.tracking.pyfunc import (
    ENV_MAX_CHARS,
    ENV_MAX_NOTE_CHARS,
    ENV_MAX_ROWS,
    OUTPUT_SCHEMA,
    OUTPUT_SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType as SparkDataType
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

__all__ = [
    "INPUT_FORMATS", "JOB_NAME", "MARKER", "SparkOutputs", "SparkPredictResult", "check_output_paths",
    "check_settings", "input_format", "result_type", "spark_predict", "spark_predict_from_config",
    "spark_session",
]

JOB_NAME = "medcoder.spark_predict"
#: Written into both output folders; Spark and Parquet readers skip files starting with ``_``.
MARKER = "_medcoder_job.json"
INPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
#: Files Spark itself writes into an output folder (part files, checksums, the success flag).
_SPARK_FILE = re.compile(r"^(\.?part-.*|\.?_SUCCESS(\.crc)?)$")
_STAGING = re.compile(r"^\.(?P<name>.+)\.medcoder-(?P<pid>\d+)-[A-Za-z0-9_]+\.(tmp|old)$")
PYSPARK_HINT = "pip install 'medcoder[spark]' (pyspark 4, needs Java 17 or newer)"


# -- settings ---------------------------------------------------------------------------------------
def check_settings(cfg: Any) -> None:
    """Every non-path setting, checked before anything is read or started."""
    for key in ("model_uri", "input", "output"):
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            raise ConfigError(f"{key}={cfg[key]!r} is not valid", hint=f"set {key}=<...> on the command line")
    for key in ("id_column", "text_column"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ConfigError(f"{key}={cfg[key]!r} is not valid", hint="the column name in the input")
    if cfg.id_column == cfg.text_column:
        raise ConfigError(f"id_column and text_column are both {cfg.id_column!r}", hint="two different columns")
    check_positive("batch_size", cfg.batch_size)
    check_positive("max_note_chars", cfg.max_note_chars)
    check_positive("spark.records_per_batch", cfg.spark.records_per_batch)
    check_positive("spark.partitions", cfg.spark.partitions, allow_none=True)
    check_positive("spark.torch_threads", cfg.spark.torch_threads, allow_none=True)
    if not isinstance(cfg.overwrite, bool):
        raise ConfigError(f"overwrite={cfg.overwrite!r} is not valid", hint="true or false")
    if not isinstance(cfg.spark.master, str) or not cfg.spark.master.strip():
        raise ConfigError(f"spark.master={cfg.spark.master!r} is not valid", hint="e.g. local[*], local[2], spark://host:7077")
    if cfg.input_format not in ("auto", "parquet", "csv", "jsonl"):
        raise ConfigError(f"input_format={cfg.input_format!r} is not valid", hint="auto, parquet, csv or jsonl")


def _flat_conf(conf: Mapping[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """``{spark: {local: {dir: x}}}`` and ``{"spark.local.dir": x}`` both -> ``{"spark.local.dir": "x"}``
    (a dotted key typed on the Hydra command line arrives nested)."""
    out: dict[str, str] = {}
    for key, value in (conf or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_conf(value, name + "."))
        else:
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


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


def _missing_column(where: Path | str, fmt: str, column: str, key: str, columns: list[str]) -> ConfigError:
    return ConfigError(f"input={where}: the {fmt} input has no {column!r} column (columns: {columns[:20]})",
                       hint=f"name the column with {key}=<name>")


def check_input_columns(path: Path, fmt: str, id_column: str, text_column: str) -> None:
    """Before Spark starts: a Parquet file (or folder) or CSV header without the id/text column,
    or a Parquet text column that is not a string, is a ``ConfigError`` naming file and column.
    JSON lines are checked once Spark has read them (their schema is inferred from every line)."""
    if fmt == "parquet":
        import pyarrow.dataset as pads

        try:
            schema = pads.dataset(str(path), format="parquet").schema
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise DataError(f"input={path}: not a readable Parquet file ({str(exc).splitlines()[0]})",
                            hint="write the notes with pyarrow, pandas or Spark") from exc
        import pyarrow as pa

        names = list(schema.names)
        for column, key in ((text_column, "text_column"), (id_column, "id_column")):
            if column not in names:
                raise _missing_column(path, "Parquet", column, key, names)
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
            raise DataError(f"input={path}: cannot read the CSV header ({exc})", hint="a UTF-8 CSV with a header row") from exc
        for column, key in ((text_column, "text_column"), (id_column, "id_column")):
            if column not in header:
                raise _missing_column(path, "CSV", column, key, header)


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
        raise DataError(f"input={path}: Spark cannot read it as {fmt} ({_first_line(exc)})",
                        hint="check the file and input_format") from exc
    for column, key in ((text_column, "text_column"), (id_column, "id_column")):
        if column not in columns:
            raise _missing_column(path, fmt, column, key, columns)
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
    if distinct != n:
        dup = notes.groupBy("id").count().where("count > 1").limit(1).collect()[0]
        raise DataError(f"input={path}: duplicate id {dup['id']!r} ({dup['count']} rows)",
                        hint="ids must be unique within the input")
    return n


# -- the model ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # what spark_udf loads: an alias resolved to its version
    requested: str
    local_dir: Path | None


def resolve_model(ref: str, tracking_cfg: Mapping[str, Any], root: Path) -> ResolvedModel:
    """The model to score with, after checking it records output schema version 2 and its signature."""
    local_dir: Path | None = None
    if ref.startswith(MLFLOW_PREFIXES):
        mlflow.set_tracking_uri(tracking_uri(tracking_cfg, root))
        uri = ref
        if ref.startswith("models:/") and "@" in ref:
            name, _, alias = ref[len("models:/"):].rstrip("/").rpartition("@")
            try:
                version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
            except MlflowException as exc:
                raise ConfigError(f"model_uri={ref}: no such registered model or alias in {mlflow.get_tracking_uri()} "
                                  f"({_first_line(exc)})", hint="check the name and alias (scripts/promote.py)") from exc
            uri = f"models:/{name}/{version}"
    else:
        local_dir = Path(ref).expanduser().resolve()
        if not (local_dir / "MLmodel").is_file():
            raise ConfigError(f"model_uri={ref}: not an MLflow model folder (no MLmodel file)",
                              hint="pass models:/<name>@<alias>, runs:/<run_id>/medcoder_model or a logged model "
                                   "folder; a bundle folder is scored by scripts/predict.py")
        uri = str(local_dir)
    try:
        info = mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"model_uri={ref}: cannot read its MLmodel ({_first_line(exc)})",
                          hint="check the URI and the tracking store (tracking.uri)") from exc
    version = (info.metadata or {}).get(SCHEMA_VERSION_KEY, 1)
    outputs = info.signature.outputs if info.signature is not None else None
    if version != OUTPUT_SCHEMA_VERSION or outputs != OUTPUT_SCHEMA:
        raise ConfigError(f"model_uri={ref}: output schema version {version}, this medcoder needs "
                          f"{OUTPUT_SCHEMA_VERSION} (structured codes)",
                          hint="re-export it: python scripts/export.py run_id=<its run>")
    return ResolvedModel(uri, ref, local_dir)


def spark_type(spec: Any) -> SparkDataType:
    """An MLflow schema type (DataType, Array, Object) as a Spark type. Every field is nullable, as
    in MLflow's own conversion: Arrow -> Spark refuses a null in a non-nullable field at runtime."""
    from mlflow.types.schema import Array, DataType, Object
    from pyspark.sql.types import ArrayType, StructField, StructType

    if isinstance(spec, DataType):
        return spec.to_spark()
    if isinstance(spec, Array):
        return ArrayType(spark_type(spec.dtype))
    if isinstance(spec, Object):
        return StructType([StructField(p.name, spark_type(p.dtype), nullable=True) for p in spec.properties])
    raise TypeError(f"no Spark type for {spec!r}")


def result_type() -> StructType:
    """The UDF's return type: :data:`OUTPUT_SCHEMA`, column by column (codes = array of structs)."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(c.name, spark_type(c.type), nullable=True) for c in OUTPUT_SCHEMA.inputs])


def score(spark: SparkSession, notes: DataFrame, model: ResolvedModel, *, batch_size: int, max_note_chars: int,
          records_per_batch: int, partitions: int | None, torch_threads: int | None) -> DataFrame:
    """The predictions DataFrame (lazy): one ``mlflow.pyfunc.spark_udf`` call per Arrow batch of
    ``records_per_batch`` notes, in ``partitions`` tasks (the model loads once per task)."""
    from pyspark.sql import functions as F

    # One Arrow batch is one MedCoderModel.predict call: the serving limits are set to what this job
    # sends (the cut notes), so a batch is never refused as an oversize HTTP request would be.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(records_per_batch))
    env = {ENV_MAX_ROWS: str(records_per_batch), ENV_MAX_CHARS: str(records_per_batch * (max_note_chars + 1)),
           ENV_MAX_NOTE_CHARS: str(max_note_chars)}
    if torch_threads is not None:  # Spark runs one Python worker per core: one torch thread each
        env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads))
    with _quiet("mlflow.pyfunc", "mlflow.utils.requirements_utils"):  # "env_manager=local" advice
        udf = mlflow.pyfunc.spark_udf(spark, model.uri, result_type=result_type(), env_manager="local",
                                      params={"batch_size": batch_size}, extra_env=env)
    notes = notes.repartition(partitions or spark.sparkContext.defaultParallelism)
    return notes.select(udf(F.struct("id", "text")).alias("prediction")).select("prediction.*")


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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


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


def check_output_paths(outputs: SparkOutputs, input_path: Path, model_dir: Path | None, *, overwrite: bool) -> None:
    """Refuse outputs that would destroy the input, the model or each other, or an earlier result.

    Compared after ``Path.resolve()`` (symlinks followed), in both directions: an output may not
    be the input, inside it, or hold it (replacing a folder deletes what is inside). An existing
    output is replaced only with ``overwrite=true`` and only if this job wrote it.
    """
    inp = input_path.expanduser().resolve()
    seen: dict[Path, str] = {}
    for key, path in outputs.named():
        resolved = path.resolve()
        where = f"{key}={path}"
        for other, other_key in seen.items():
            if _inside(resolved, other) or _inside(other, resolved):
                raise ConfigError(f"{where} overlaps {other_key}", hint="predictions, audit and summary need three separate paths")
        seen[resolved] = where
        if _inside(resolved, inp) or _inside(inp, resolved):
            raise ConfigError(f"{where} would overwrite the input ({input_path})",
                              hint="write outputs outside the input file/folder")
        if model_dir is not None and (_inside(resolved, model_dir) or _inside(model_dir, resolved)):
            raise ConfigError(f"{where} overlaps the model folder ({model_dir})", hint="write outputs elsewhere")
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
        parent = resolved.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: cannot write into {parent}", hint="choose a folder you can write to")


def _staging(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.medcoder-{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def _remove_stale_staging(target: Path) -> None:
    """Staging folders of this target left by a run that no longer exists (SIGKILL, power loss)."""
    if not target.parent.is_dir():
        return
    for p in target.parent.glob(f".{target.name}.medcoder-*"):
        m = _STAGING.match(p.name)
        if not m or m["name"] != target.name or int(m["pid"]) == os.getpid():
            continue
        try:
            os.kill(int(m["pid"]), 0)
            continue  # alive (or not ours to judge): keep
        except ProcessLookupError:
            pass
        except OSError:
            continue
        _remove(p)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def _commit(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each staged path onto its target (the last pair is the completion marker); earlier
    targets are moved aside first and deleted only once every rename succeeded (else restored)."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for staged, target in pairs:
            old = None
            if target.exists() or target.is_symlink():
                old = _staging(target, "old")
                os.replace(target, old)
            done.append((target, old))
            os.replace(staged, target)
    except BaseException:
        for target, old in reversed(done):
            if target.exists():
                _remove(target)
            if old is not None:
                os.replace(old, target)
        raise
    for _, old in done:
        if old is not None:
            _remove(old)


# -- the job ------------------------------------------------------------------------------------------------
@dataclass
class SparkPredictResult:
    output: Path
    audit: Path
    summary_path: Path
    summary: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        s = self.summary
        share = "n/a" if s["share_auto_accepted"] is None else f"{s['share_auto_accepted']:.1%}"
        rate = "n/a" if s["notes_per_second"] is None else f"{s['notes_per_second']:.2f}"
        return (f"{s['notes']} notes, {s['codes']} codes predicted, {share} of codes auto-accepted, "
                f"{s['notes_fully_auto']} notes fully auto-coded, {s['empty_notes']} empty, "
                f"{s['truncated_notes']} truncated; {s['wall_seconds']:.1f} s "
                f"({rate} notes/s, Spark {s['spark_master']})")


def spark_session(spark_cfg: Mapping[str, Any]) -> SparkSession:
    """A Spark session for this job (``spark.master``, driver memory, extra ``spark.conf``).

    The Python workers run this interpreter (``spark.pyspark.python``), so they import the same
    medcoder and torch; the Spark UI and its console progress bar are off unless ``spark.conf``
    turns them on (the script prints one summary line).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("pyspark is not installed", hint=PYSPARK_HINT) from exc
    from pyspark.errors import PySparkException

    # PySpark starts its Python workers with $PYSPARK_PYTHON, else ``python3`` from PATH (the
    # ``spark.pyspark.python`` setting below is read by spark-submit only): without this a run
    # from an unactivated venv scores with the system Python, which lacks medcoder's packages.
    # A user's own PYSPARK_PYTHON (a cluster's interpreter) is kept.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.sql.session.timeZone": "UTC",
            "spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
            "spark.driver.memory": str(spark_cfg.get("driver_memory") or "4g"),
            **_flat_conf(spark_cfg.get("conf"))}
    builder = SparkSession.builder.master(str(spark_cfg["master"])).appName(str(spark_cfg.get("app_name") or JOB_NAME))
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except (PySparkException, OSError) as exc:
        raise ConfigError(f"spark.master={spark_cfg['master']}: Spark did not start ({_first_line(exc)})",
                          hint="Spark needs Java 17+ on PATH or JAVA_HOME") from exc
    spark.sparkContext.setLogLevel(str(spark_cfg.get("log_level") or "ERROR"))
    return spark


def spark_predict_from_config(cfg: Any, spark: SparkSession | None = None) -> SparkPredictResult:
    """``scripts/spark_predict.py``: check settings, input columns and output paths (cheap, before
    Spark starts), check the model's schema, then score, write and commit.

    ``spark``: an existing session to use (and leave running); by default one is started from
    ``cfg.spark`` and stopped at the end.
    """
    check_settings(cfg)
    root = Path(cfg.paths.root_dir).resolve()
    input_path = Path(cfg.input).expanduser()
    fmt = input_format(input_path, cfg.input_format)
    outputs = SparkOutputs.beside(cfg.output, cfg.audit_path, cfg.summary_path)
    local_model = None if cfg.model_uri.startswith(MLFLOW_PREFIXES) else Path(cfg.model_uri).expanduser().resolve()
    check_output_paths(outputs, input_path, local_model, overwrite=cfg.overwrite)
    check_input_columns(input_path, fmt, cfg.id_column, cfg.text_column)
    model = resolve_model(cfg.model_uri, cfg.tracking, root)
    own = spark is None
    session = spark_session(cfg.spark) if spark is None else spark
    try:
        return spark_predict(session, model, input_path, fmt, outputs, cfg)
    finally:
        if own:
            session.stop()


def spark_predict(spark: SparkSession, model: ResolvedModel, input_path: Path, fmt: str,
                  outputs: SparkOutputs, cfg: Any) -> SparkPredictResult:
    """Score ``input_path`` into staging folders, derive audit and summary from the written
    predictions, and commit the three outputs (summary last)."""
    started = time.perf_counter()
    notes = read_notes(spark, input_path, fmt, cfg.id_column, cfg.text_column, cfg.max_note_chars)
    n_notes = check_ids(notes, input_path)
    predictions = score(spark, notes, model, batch_size=cfg.batch_size, max_note_chars=cfg.max_note_chars,
                        records_per_batch=cfg.spark.records_per_batch, partitions=cfg.spark.partitions,
                        torch_threads=cfg.spark.torch_threads)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    marker = {"job": JOB_NAME, "model": model.uri, "requested_model": model.requested,
              "input": str(input_path.resolve()), "created": created,
              "output_schema_version": OUTPUT_SCHEMA_VERSION}
    staged = {key: _staging(path) for key, path in outputs.named()}
    for _, path in outputs.named():
        _remove_stale_staging(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with signals_raise():
            try:
                predictions.write.parquet(str(staged["output"]))
            except Exception as exc:
                _raise_data_error(exc, input_path)
                raise
            (staged["output"] / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            written = spark.read.parquet(str(staged["output"]))
            _audit_frame(written, model.uri).write.option("ignoreNullFields", "false").json(str(staged["audit_path"]))
            (staged["audit_path"] / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            summary = _summary(written)
            if summary["notes"] != n_notes:  # never expected: a lost or duplicated row is a bug
                raise RuntimeError(f"{n_notes} notes read but {summary['notes']} predictions written")
            wall = time.perf_counter() - started
            summary.update(
                job=JOB_NAME, model=model.uri, requested_model=model.requested,
                output_schema_version=OUTPUT_SCHEMA_VERSION, input=str(input_path.resolve()), input_format=fmt,
                predictions=outputs.predictions.name, audit=outputs.audit.name, created=created,
                max_note_chars=cfg.max_note_chars, spark_master=spark.sparkContext.master,
                partitions=cfg.spark.partitions or spark.sparkContext.defaultParallelism,
                records_per_batch=cfg.spark.records_per_batch, batch_size=cfg.batch_size,
                wall_seconds=round(wall, 3), notes_per_second=round(n_notes / wall, 4) if wall > 0 else None,
            )
            staged["summary_path"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
            _commit([(staged[key], path) for key, path in outputs.named()])
    finally:
        for path in staged.values():
            _remove(path)
    return SparkPredictResult(outputs.predictions, outputs.audit, outputs.summary, summary)


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


# -- errors and logging ----------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


#: Only our own errors are shown: their messages name notes by id and never quote text (MLflow's
#: schema errors may quote the input, so they keep Spark's traceback instead of becoming one line).
_MEDCODER_ERROR = re.compile(r"(medcoder\.errors\.\w+|RequestRejected): (.+)")


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


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
