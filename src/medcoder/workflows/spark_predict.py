"""``scripts/spark_predict.py``: batch scoring with Spark, through the registered MLflow model.

Why Spark and why through the MLflow model: a hospital's notes live in a data lake as Parquet,
and ops teams score them where they are, with the model the registry names
(``models:/<name>@<alias>``). ``mlflow.pyfunc.spark_udf`` runs the very ``MedCoderModel`` that
``mlflow models serve`` runs, which calls ``Coder.predict`` (the one inference path), so Spark,
HTTP serving and ``scripts/predict.py`` give the same codes, probabilities and decisions. The UDF
returns the model's structured output schema (:data:`medcoder.tracking.pyfunc.OUTPUT_SCHEMA`) as
real Spark types, so the Parquet output has ``codes`` as an array of structs (evidence as offsets,
never text), not a JSON string.

This module reads the config, resolves and checks the model (MLflow) and builds the UDF; the
Spark I/O (reading the notes, checking them and the output paths, writing, staging and committing
the outputs) is :mod:`medcoder.inference.batch.spark`, built on :mod:`medcoder.atomic`.

Guarantees, and why each exists (the same as batch prediction, ``medcoder.inference.batch``):

* **Checked before Spark starts:** every setting; the input's format and, for Parquet and CSV,
  that its ``id``/``text`` columns exist (a one-line ``ConfigError`` naming the file and the
  column, exit 2, nothing written); the output paths: none may be the input, inside it or hold it,
  nor the local model folder, nor inside an MLflow artifact store, bundle, MLflow model or the
  bundle cache; and an existing output is refused unless ``overwrite=true`` *and* this job wrote
  it (its marker file :data:`MARKER` and nothing but Spark's own files in it). Errors name files,
  rows and the expected columns, never an input value (a headerless CSV's header is a note).
* **The model is checked before scoring:** its MLmodel must record output schema version
  :data:`~medcoder.tracking.pyfunc.OUTPUT_SCHEMA_VERSION` and that schema as its signature; a
  version-1 model (codes as JSON strings) is refused with the command that re-exports it. An alias
  is resolved to a version once, and that version is what the audit names.
* **All or nothing:** predictions and audit are written by Spark into hidden staging folders
  beside the targets (``.<name>.<random>.partial``, marked with the pid and host that made them)
  and renamed into place at the end, the summary last: **predictions without their summary are
  not complete.** A failed or interrupted run (exception, Ctrl-C, SIGTERM) removes its staging
  folders; those of a SIGKILLed run are removed by the next run into the same outputs.
* **Audit without text:** one JSON line per note (model URI, bundle id, code-set year, policy
  version, sha256 of the scored text, decisions, probabilities rounded to 6 digits), derived from
  the written predictions, not a second scoring pass.
* **The audit status reaches every executor:** ``MLFLOW_TRACKING_URI`` and
  ``MEDCODER_AUDIT_STATUS_URI=models:/name/N`` (the resolved version) travel with the UDF
  (:func:`udf_env`), so a suspended version routes every code ``audit_alarm`` and a status the
  executor cannot read fails closed (``audit_status_unreadable``), as in ``mlflow models serve``.
* **Bounded notes:** text is cut in Spark to ``max_note_chars + 1`` characters before it reaches
  Python, and ``Coder`` cuts it to ``max_note_chars`` and flags it ``truncated`` (as
  ``scripts/predict.py`` does), so a huge cell cannot exhaust a Python worker's memory.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException

from medcoder.data.tabular import check_column_roles
from medcoder.errors import ConfigError
from medcoder.inference.batch import check_positive
from medcoder.inference.batch.protect import artifact_stores
from medcoder.inference.batch.spark import (
    INPUT_FORMATS,
    JOB_NAME,
    MARKER,
    SparkOutputs,
    check_ids,
    check_input_columns,
    check_output_paths,
    first_line,
    input_format,
    read_notes,
    write_outputs,
)
from medcoder.tracking import TrackingSettings, tracking_uri
from medcoder.tracking.pyfunc import (
    ENV_AUDIT_STATUS_URI,
    ENV_MAX_CHARS,
    ENV_MAX_NOTE_CHARS,
    ENV_MAX_ROWS,
    OUTPUT_SCHEMA,
    OUTPUT_SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
)
from medcoder.workflows.factories import build_tracking

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType as SparkDataType
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

__all__ = [
    "INPUT_FORMATS", "JOB_NAME", "MARKER", "SparkOutputs", "SparkPredictResult", "check_output_paths",
    "check_settings", "input_format", "result_type", "spark_predict", "spark_predict_from_config",
    "spark_session", "udf_env",
]

MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
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
    check_column_roles(cfg.id_column, cfg.text_column)  # an id column that is the text puts notes in the audit
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


# -- the model ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # what spark_udf loads: an alias resolved to its version
    requested: str
    local_dir: Path | None
    #: The tracking store the executors read the audit status from (``tracking.uri``).
    tracking_uri: str | None = None

    @property
    def audit_status_uri(self) -> str | None:
        """The registered version whose status tag the executors obey: ``models:/name/N`` (an alias
        already resolved); None for a ``runs:/`` URI or a folder (the executors then look the bundle's
        versions up by its ``medcoder.bundle_id`` tag, and fail closed where there are none)."""
        rest = self.uri[len("models:/"):] if self.uri.startswith("models:/") else ""
        name, _, version = rest.rstrip("/").rpartition("/")
        return self.uri if name and version.isdigit() else None


def resolve_model(ref: str, tracking: TrackingSettings) -> ResolvedModel:
    """The model to score with, after checking it records output schema version 2 and its signature."""
    local_dir: Path | None = None
    store_uri = tracking_uri(tracking)
    # Also for a local model folder: the UDF points each executor at the driver's tracking URI,
    # where the model's audit status is looked up (udf_env).
    mlflow.set_tracking_uri(store_uri)
    if ref.startswith(MLFLOW_PREFIXES):
        uri = ref
        if ref.startswith("models:/") and "@" in ref:
            name, _, alias = ref[len("models:/"):].rstrip("/").rpartition("@")
            try:
                version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
            except MlflowException as exc:
                raise ConfigError(f"model_uri={ref}: no such registered model or alias in {mlflow.get_tracking_uri()} "
                                  f"({first_line(exc)})", hint="check the name and alias (scripts/promote.py)") from exc
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
        raise ConfigError(f"model_uri={ref}: cannot read its MLmodel ({first_line(exc)})",
                          hint="check the URI and the tracking store (tracking.uri)") from exc
    version = (info.metadata or {}).get(SCHEMA_VERSION_KEY, 1)
    outputs = info.signature.outputs if info.signature is not None else None
    if version != OUTPUT_SCHEMA_VERSION or outputs != OUTPUT_SCHEMA:
        raise ConfigError(f"model_uri={ref}: output schema version {version}, this medcoder needs "
                          f"{OUTPUT_SCHEMA_VERSION} (structured codes)",
                          hint="re-export it: python scripts/export.py run_id=<its run>")
    return ResolvedModel(uri, ref, local_dir, store_uri)


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


def udf_env(model: ResolvedModel, *, records_per_batch: int, max_note_chars: int,
            torch_threads: int | None) -> dict[str, str]:
    """The environment the executors load ``MedCoderModel`` under (``spark_udf(extra_env=...)``).

    * One Arrow batch is one ``MedCoderModel.predict`` call: the serving limits are set to what this
      job sends (the cut notes), so a batch is never refused as an oversize HTTP request would be.
    * The audit status: ``MLFLOW_TRACKING_URI`` (this job's ``tracking.uri``) and
      ``MEDCODER_AUDIT_STATUS_URI`` = the resolved ``models:/name/N``, so every executor obeys the
      status tag of the version this job scores with, and fails closed (``audit_status_unreadable``)
      where it cannot read it. Why explicit: an executor is another process, perhaps another host;
      without them it would look for a registry it was never told about. A
      ``MEDCODER_AUDIT_STATUS_URI`` set in the driver's environment (``none``: the documented opt-out)
      is passed on as it is.
    """
    env = {ENV_MAX_ROWS: str(records_per_batch), ENV_MAX_CHARS: str(records_per_batch * (max_note_chars + 1)),
           ENV_MAX_NOTE_CHARS: str(max_note_chars)}
    if model.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = model.tracking_uri
    own = os.environ.get(ENV_AUDIT_STATUS_URI, "").strip()
    status_uri = own or model.audit_status_uri
    if status_uri:
        env[ENV_AUDIT_STATUS_URI] = status_uri
    if torch_threads is not None:  # Spark runs one Python worker per core: one torch thread each
        env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads))
    return env


def score(spark: SparkSession, notes: DataFrame, model: ResolvedModel, *, batch_size: int, max_note_chars: int,
          records_per_batch: int, partitions: int | None, torch_threads: int | None) -> DataFrame:
    """The predictions DataFrame (lazy): one ``mlflow.pyfunc.spark_udf`` call per Arrow batch of
    ``records_per_batch`` notes, in ``partitions`` tasks (the model loads once per task)."""
    from pyspark.sql import functions as F

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(records_per_batch))
    env = udf_env(model, records_per_batch=records_per_batch, max_note_chars=max_note_chars,
                  torch_threads=torch_threads)
    with _quiet("mlflow.pyfunc", "mlflow.utils.requirements_utils"):  # "env_manager=local" advice
        udf = mlflow.pyfunc.spark_udf(spark, model.uri, result_type=result_type(), env_manager="local",
                                      params={"batch_size": batch_size}, extra_env=env)
    notes = notes.repartition(partitions or spark.sparkContext.defaultParallelism)
    return notes.select(udf(F.struct("id", "text")).alias("prediction")).select("prediction.*")


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
        raise ConfigError(f"spark.master={spark_cfg['master']}: Spark did not start ({first_line(exc)})",
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
    input_path = Path(cfg.input).expanduser()
    fmt = input_format(input_path, cfg.input_format)
    outputs = SparkOutputs.beside(cfg.output, cfg.audit_path, cfg.summary_path)
    local_model = None if cfg.model_uri.startswith(MLFLOW_PREFIXES) else Path(cfg.model_uri).expanduser().resolve()
    tracking = build_tracking(cfg)
    stores = artifact_stores(tracking_uri(tracking), tracking.root_dir, tracking.artifact_dir)
    check_output_paths(outputs, input_path, local_model, overwrite=cfg.overwrite, protected=stores)
    check_input_columns(input_path, fmt, cfg.id_column, cfg.text_column)
    model = resolve_model(cfg.model_uri, tracking)
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
    fields = dict(
        job=JOB_NAME, model=model.uri, requested_model=model.requested,
        output_schema_version=OUTPUT_SCHEMA_VERSION, input=str(input_path.resolve()), input_format=fmt,
        predictions=outputs.predictions.name, audit=outputs.audit.name, created=created,
        max_note_chars=cfg.max_note_chars, spark_master=spark.sparkContext.master,
        partitions=cfg.spark.partitions or spark.sparkContext.defaultParallelism,
        records_per_batch=cfg.spark.records_per_batch, batch_size=cfg.batch_size,
    )
    summary = write_outputs(spark, predictions, outputs, input_path=input_path, n_notes=n_notes, model_uri=model.uri,
                            marker=marker, summary_fields=fields, started=started)
    return SparkPredictResult(outputs.predictions, outputs.audit, outputs.summary, summary)


# -- logging ----------------------------------------------------------------------------------------------
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
