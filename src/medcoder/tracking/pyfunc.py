"""The bundle as an MLflow model: a ``PythonModel`` wrapping :class:`~medcoder.inference.Coder`.

Why a wrapper and not ``mlflow.transformers``: the transformers flavour would serve raw logits;
the product is a *calibrated, routed* prediction with an audit trail, which only ``Coder`` makes.
The bundle travels as the model's ``bundle`` artifact, so ``models:/name@alias`` resolves to the
same verified directory that ``scripts/predict.py`` reads. The model is logged from code
(:data:`MODEL_CODE_PATH`, :mod:`.pyfunc_model`), never as a pickle: loading it from the registry
runs that short file and ``Coder.load``, nothing unpickled.

Output schema (:data:`OUTPUT_SCHEMA`, version :data:`OUTPUT_SCHEMA_VERSION`, recorded in the
MLmodel's ``metadata`` as ``medcoder_output_schema_version`` and as the model's signature): one
row per note with *structured* columns — ``codes`` an array of objects (code, description,
probability, decision, reasons, sources, evidence spans as offsets), ``document_reasons`` an array
of strings. Why structured: ``mlflow.pyfunc.spark_udf`` can then return real Spark types (arrays of
structs, written to Parquet as such) and the HTTP endpoint returns plain JSON arrays, so pyfunc,
serving and Spark give one and the same output. Version 1 (before 2026-11-27) returned ``codes`` as
a JSON string and ``document_reasons`` joined by ``;``; models logged with it still load, but
``scripts/spark_predict.py`` refuses them (re-export with ``scripts/export.py``).

Serving safety (``mlflow models serve``):

* **Request limits**, read from the environment when the model loads (:class:`RequestLimits`):
  ``MEDCODER_MAX_REQUEST_ROWS`` notes per request, ``MEDCODER_MAX_REQUEST_CHARS`` characters of
  note text per request, ``MEDCODER_MAX_REQUEST_BYTES`` bytes of request body (checked by the
  scoring server guard before the body is parsed: HTTP 413), and ``MEDCODER_MAX_NOTE_CHARS``,
  the per-note cut of :class:`Coder` (longer notes are cut and routed to review as
  ``truncated_note``). Why: the scoring server reads any body whole and has no size setting of
  its own (MLflow 3.x: FastAPI + uvicorn; uvicorn limits concurrency, not body size); one 5 MB
  note once left the server ~480 MB larger, mostly tokenizer memory. A rejected request is a
  client error (HTTP 400, ``INVALID_PARAMETER_VALUE``) and nothing of it is scored.
* **No note text in errors.** MLflow's scoring server puts the request into its error messages:
  a body that is not JSON comes back whole (``Input: ...``), and every ``MlflowException`` raised
  while predicting is rewritten to ``Failed to predict data '<the input DataFrame>'`` (the first
  50 characters of every note), including MLflow's own schema-enforcement errors. Our errors
  (:class:`RequestRejected`) keep their own, text-free message, and :func:`guard_scoring_server`
  replaces MLflow's messages by text-free ones.
* **Malformed bodies are client errors.** MLflow's scoring server parses the body with
  ``json.loads`` and catches only ``JSONDecodeError``: a body nested 100,000 deep raised
  ``RecursionError`` (and an integer of 5,000 digits ``ValueError``) out of it, an HTTP 500 with a
  traceback in the log. :func:`guard_scoring_server` turns both into a 400
  (``INVALID_PARAMETER_VALUE``); ``predict`` refuses ids and texts that are not plain values
  (a nested list or object), by row, before any of them reaches ``Coder``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode
from mlflow.types.schema import (
    Array,
    ColSpec,
    DataType,
    Object,
    ParamSchema,
    ParamSpec,
    Property,
    Schema,
)

from medcoder.errors import ConfigError, MedcoderError

log = logging.getLogger(__name__)

#: Invented, not taken from any corpus: MLflow stores the input example as an artifact, and no
#: clinical text may end up in artifacts. The second row has no ``id``: the signature inferred
#: from this example then marks ``id`` optional (``Coder`` numbers notes without one), ``text``
#: required.
INPUT_EXAMPLE = pd.DataFrame({
    "id": ["example-1", None],
    "text": ["Follow-up visit. Known type 2 diabetes mellitus and essential hypertension, both stable.",
             "Emergency visit for community-acquired pneumonia with fever and productive cough."],
})

#: Version of the model's output schema; bumped when a column or field changes meaning or type.
#: 1: ``codes`` a JSON string, ``document_reasons`` ``;``-joined, ``codeset_fy`` -1 when unknown.
#: 2: structured ``codes`` / ``document_reasons`` (arrays), ``truncated`` added, ``codeset_fy`` null
#: when unknown.
OUTPUT_SCHEMA_VERSION = 2
#: Key of :data:`OUTPUT_SCHEMA_VERSION` in the MLmodel's ``metadata`` (``mlflow.pyfunc.log_model``).
SCHEMA_VERSION_KEY = "medcoder_output_schema_version"

_S, _L, _D, _B = DataType.string, DataType.long, DataType.double, DataType.boolean
#: One evidence span: character offsets into the note (never its text), weight, the view that found
#: it, and (dictionary spans) whether the mention was negated.
EVIDENCE_TYPE = Object([Property("start", _L), Property("end", _L), Property("weight", _D),
                        Property("source", _S), Property("negated", _B, required=False)])
#: One predicted code (:class:`medcoder.inference.prediction.CodePrediction`).
CODE_TYPE = Object([
    Property("code", _S), Property("description", _S), Property("probability", _D), Property("decision", _S),
    Property("reasons", Array(_S)), Property("sources", Array(_S)), Property("evidence", Array(EVIDENCE_TYPE)),
])
#: The model's output, one row per note (MLflow sorts an object's properties by name).
OUTPUT_SCHEMA = Schema([
    ColSpec(_S, "id"), ColSpec(_S, "document_decision"), ColSpec(Array(_S), "document_reasons"),
    ColSpec(Array(CODE_TYPE), "codes"), ColSpec(_B, "truncated"), ColSpec(_S, "bundle_id"),
    ColSpec(_L, "codeset_fy", required=False), ColSpec(_S, "policy_version"), ColSpec(_S, "input_sha256"),
    ColSpec(_S, "timestamp"),
])
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.input_names())
#: What the model reads: ``id`` optional (``Coder`` numbers notes without one), ``text`` required.
INPUT_SCHEMA = Schema([ColSpec(_S, "id", required=False), ColSpec(_S, "text")])
PARAMS_SCHEMA = ParamSchema([ParamSpec("batch_size", _L, 8)])


def model_signature() -> ModelSignature:
    """The signature ``scripts/export.py`` logs: written out, not inferred from an example, so it
    does not depend on what a tiny example happens to predict (an empty evidence list, say)."""
    return ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA, params=PARAMS_SCHEMA)


#: The file logged as the model's code (MLflow "models from code"; see :mod:`.pyfunc_model`): it
#: builds :class:`MedCoderModel` with ``mlflow.models.set_model``, so no ``python_model.pkl``
#: (a CloudPickle, unpickled on load) is ever written.
MODEL_CODE_PATH = Path(__file__).with_name("pyfunc_model.py")


def model_metadata() -> dict[str, Any]:
    """The MLmodel ``metadata`` that records the output schema version (read before scoring by
    ``scripts/spark_predict.py``, which needs the structured schema)."""
    return {SCHEMA_VERSION_KEY: OUTPUT_SCHEMA_VERSION}

#: Defaults of the request limits; each can be changed with its environment variable at serve time.
DEFAULT_MAX_REQUEST_ROWS = 256
DEFAULT_MAX_REQUEST_CHARS = 2_000_000  # ~400 typical CodiEsp notes (mean ~5k characters)
DEFAULT_MAX_REQUEST_BYTES = 16_000_000  # JSON escapes a non-ASCII character as up to 6 bytes
ENV_MAX_ROWS = "MEDCODER_MAX_REQUEST_ROWS"
ENV_MAX_CHARS = "MEDCODER_MAX_REQUEST_CHARS"
ENV_MAX_BYTES = "MEDCODER_MAX_REQUEST_BYTES"
ENV_MAX_NOTE_CHARS = "MEDCODER_MAX_NOTE_CHARS"
#: The registered version whose audit status the served model obeys (``models:/name/N`` or
#: ``models:/name@alias``, resolved once at load); ``none`` switches the status off (logged; the only
#: opt-out). Unset: the model finds the registered versions of its bundle by their
#: ``medcoder.bundle_id`` tag, and fails closed (``audit_status_unreadable``) where it finds none or
#: no tracking URI is set (:func:`served_status_source`).
ENV_AUDIT_STATUS_URI = "MEDCODER_AUDIT_STATUS_URI"
#: Seconds a served model trusts a registry status read (``Coder.audit_status_ttl_s``, default 60).
ENV_AUDIT_STATUS_TTL_S = "MEDCODER_AUDIT_STATUS_TTL_S"
#: The same as :data:`ENV_AUDIT_STATUS_URI`, as a ``model_config`` key (``mlflow.pyfunc.load_model(...,
#: model_config={"audit_status_uri": ...})``, ``spark_udf(..., model_config=...)``); it wins over the env.
CONFIG_AUDIT_STATUS_URI = "audit_status_uri"

REQUEST_FORMAT_HINT = (
    'send JSON such as {"dataframe_split": {"columns": ["id", "text"], "data": [["n1", "note text"]]}} '
    "(id optional) with Content-Type: application/json"
)


class RequestRejected(MlflowException):
    """A client error (HTTP 400) whose message never contains request data.

    MLflow's scoring server rewrites ``message`` of any ``MlflowException`` raised in ``predict``
    to quote the whole input DataFrame; this class keeps its first message, so the response and
    the logs say what was wrong without the note text.
    """

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE) -> None:
        super().__init__(message, error_code=error_code)

    @property
    def message(self) -> str:
        return self._safe_message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_safe_message"):
            self._safe_message = value


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={raw!r} is not valid", hint="a positive integer")
    return value


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold; exceeding any of them is a 4xx, never a scoring attempt."""

    max_rows: int = DEFAULT_MAX_REQUEST_ROWS
    max_chars: int = DEFAULT_MAX_REQUEST_CHARS
    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    @classmethod
    def from_env(cls) -> RequestLimits:
        return cls(
            max_rows=_env_int(ENV_MAX_ROWS, DEFAULT_MAX_REQUEST_ROWS),
            max_chars=_env_int(ENV_MAX_CHARS, DEFAULT_MAX_REQUEST_CHARS),
            max_bytes=_env_int(ENV_MAX_BYTES, DEFAULT_MAX_REQUEST_BYTES),
        )

    def check(self, texts: list[str]) -> None:
        """Raise :class:`RequestRejected` (names counts and the variable to raise, never text)."""
        if len(texts) > self.max_rows:
            raise RequestRejected(
                f"request has {len(texts)} notes; at most {self.max_rows} per request "
                f"({ENV_MAX_ROWS}) — split it, or use scripts/predict.py for batches"
            )
        total = sum(len(t) for t in texts)
        if total > self.max_chars:
            raise RequestRejected(
                f"request has {total} characters of note text; at most {self.max_chars} per request "
                f"({ENV_MAX_CHARS}) — split it into smaller requests"
            )


def _span(span: dict[str, Any]) -> dict[str, Any]:
    """An evidence span with every field of :data:`EVIDENCE_TYPE` (``negated`` None where the
    view does not say) and plain Python types, so JSON, pandas and Spark read it alike."""
    negated = span.get("negated")
    return {"start": int(span["start"]), "end": int(span["end"]), "weight": float(span["weight"]),
            "source": str(span.get("source") or ""), "negated": None if negated is None else bool(negated)}


def _code(c: Any) -> dict[str, Any]:
    return {"code": str(c.code), "description": str(c.description or ""), "probability": float(c.probability),
            "decision": str(c.decision), "reasons": [str(r) for r in c.reasons],
            "sources": [str(s) for s in c.sources], "evidence": [_span(sp) for sp in c.evidence]}


def predictions_frame(preds: list[Any]) -> pd.DataFrame:
    """DataFrame of :class:`DocumentPrediction` rows in :data:`OUTPUT_SCHEMA` (version 2):
    ``codes`` a list of dicts per note, ``document_reasons`` a list of strings.

    Every nested field is always present (see :func:`_span`): Spark's struct conversion looks each
    field up by name, and a consumer of the JSON answer should not have to guess absent keys.
    """
    rows = []
    for p in preds:
        rows.append({
            "id": str(p.id), "document_decision": str(p.document_decision),
            "document_reasons": [str(r) for r in p.document_reasons], "codes": [_code(c) for c in p.codes],
            "truncated": bool(p.truncated), "bundle_id": str(p.bundle_id),
            "codeset_fy": None if p.codeset_fy is None else int(p.codeset_fy),
            "policy_version": str(p.policy_version), "input_sha256": str(p.input_sha256), "timestamp": str(p.timestamp),
        })
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


class MedCoderModel(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[id?, text]) -> DataFrame`` of routed predictions (see OUTPUT_SCHEMA)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from medcoder.inference.coder import Coder

        self.limits = RequestLimits.from_env()
        self.coder = Coder.load(context.artifacts["bundle"])
        self.coder.status_source = served_status_source(self.coder.bundle_id, getattr(context, "model_config", None))
        ttl = os.environ.get(ENV_AUDIT_STATUS_TTL_S, "").strip()
        if ttl:
            try:
                self.coder.audit_status_ttl_s = float(ttl)
            except ValueError:
                raise ConfigError(f"{ENV_AUDIT_STATUS_TTL_S}={ttl!r} is not valid", hint="seconds >= 0") from None
        note_limit = _env_int(ENV_MAX_NOTE_CHARS, None)
        if note_limit is not None:
            self.coder.max_note_chars = note_limit
        guard_scoring_server(self.limits)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            raise RequestRejected(f"input must be a table with a 'text' column; got {type(model_input).__name__}")
        if "text" not in model_input.columns:
            # Column names only, never values: a misnamed column may still be note text.
            raise RequestRejected(f"input needs a 'text' column (and optionally 'id'); got "
                                  f"{len(model_input.columns)} other column(s) — {REQUEST_FORMAT_HINT}")
        column = model_input["text"]
        bad = [i for i, t in enumerate(column) if not (isinstance(t, str) or _is_null(t))]
        if bad:
            raise RequestRejected(f"'text' must be a string in every row; row {bad[0]} is not "
                                  f"({len(bad)} row(s) in all)")
        texts = ["" if pd.isna(t) else t for t in column]
        (getattr(self, "limits", None) or RequestLimits.from_env()).check(texts)
        ids = None
        if "id" in model_input.columns:
            _check_ids(model_input["id"])
            # A missing id (null in JSON) gets the row number, as Coder does when no ids are given.
            ids = [str(row) if _is_null(i) else str(i) for row, i in enumerate(model_input["id"])]
        batch_size = (params or {}).get("batch_size", 8)
        try:
            preds = self.coder.predict(texts, ids, batch_size=batch_size, progress=False)
        except MedcoderError as exc:  # e.g. batch_size=0, an unpaired surrogate: named by row, no text
            raise RequestRejected(str(exc)) from None
        return predictions_frame(preds)


def served_status_source(bundle_id: str, model_config: dict[str, Any] | None = None) -> Any:
    """The audit status source of a model loaded from its artifacts (served, Spark, ``load_model``).

    Why not the status file: the model's bundle is a downloaded copy, with nothing beside it. So a
    served model obeys the registry tag of its version: the one named by ``model_config``'s
    :data:`CONFIG_AUDIT_STATUS_URI` or :data:`ENV_AUDIT_STATUS_URI`, else every registered version
    whose ``medcoder.bundle_id`` tag is this bundle's (found again at each read, so a version
    registered later counts; suspended if any of them is).

    **Fails closed** (every code ``audit_status_unreadable``, one warning) whenever the status cannot
    be known: the registry cannot be asked, no MLflow tracking URI is set (no registry at all), or no
    registered version carries this bundle's id (a model served from ``runs:/`` or a folder that was
    never registered). Why: "no status found" must not read as "active", or a suspended bundle served
    from a place that cannot see its tag would keep auto-accepting. The only way to serve without a
    status is to say so: ``MEDCODER_AUDIT_STATUS_URI=none`` (or ``model_config={"audit_status_uri":
    "none"}``), logged as a warning at load.
    """
    from medcoder.inference.audit_status import (
        AuditStatusError,
        CachedStatusSource,
        registry_status_source,
    )
    from medcoder.tracking.audit_status import bundle_status_reader, find_versions_of_bundle

    uri = str((model_config or {}).get(CONFIG_AUDIT_STATUS_URI) or os.environ.get(ENV_AUDIT_STATUS_URI, "")).strip()
    if uri.lower() == "none":
        log.warning("bundle %s: audit status switched off (%s=none): a suspension will not be seen",
                    bundle_id, ENV_AUDIT_STATUS_URI)
        return None
    if uri:
        return registry_status_source(uri, bundle_id)
    hint = (f"set MLFLOW_TRACKING_URI and {ENV_AUDIT_STATUS_URI}=models:/<name>/<version>, or "
            f"{ENV_AUDIT_STATUS_URI}=none to serve without an audit status")
    where = f"registry versions tagged medcoder.bundle_id={bundle_id}"
    if not (mlflow.tracking._tracking_service.utils.is_tracking_uri_set() or os.environ.get("MLFLOW_REGISTRY_URI")):

        def unreadable() -> Any:
            raise AuditStatusError("audit status unreadable (no MLflow tracking URI, so no registry to read it "
                                   "from)", hint=hint)

        return CachedStatusSource(unreadable, bundle_id, where="no MLflow tracking URI")

    def read() -> Any:
        versions = find_versions_of_bundle(bundle_id)
        if not versions:
            raise AuditStatusError(f"audit status unreadable (no registered model version is tagged "
                                   f"medcoder.bundle_id={bundle_id} in {mlflow.get_tracking_uri()})", hint=hint)
        return bundle_status_reader(bundle_id, versions)()

    return CachedStatusSource(read, bundle_id, where=where)


def _is_null(value: Any) -> bool:
    """A missing value (None, NaN, NA). ``pd.isna`` of a list or dict is an array, not a bool: a
    nested value is never null (it is refused by the caller instead of crashing here)."""
    if isinstance(value, str | list | tuple | dict | set | np.ndarray):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _check_ids(column: pd.Series) -> None:
    """Ids are plain values (a string or a number, or null): a nested list or object
    (``{"id": [[[...]]]}``) would otherwise be turned into a string, deep recursion included.
    Numbers stay accepted (an id column of integers and nulls arrives as floats). Named by row,
    never quoted."""
    bad = [row for row, i in enumerate(column) if isinstance(i, list | tuple | dict | set | np.ndarray)]
    if bad:
        raise RequestRejected(f"'id' must be a string or a number in every row, not a list or object; row {bad[0]} "
                              f"is not ({len(bad)} row(s) in all) — {REQUEST_FORMAT_HINT}")


def _body_error(exc: RecursionError | ValueError, data: Any) -> RequestRejected | None:
    """A 400 for a body that ``json.loads`` itself cannot take (MLflow catches only
    ``JSONDecodeError``): nested too deeply, or an integer too long for Python. None when the
    error did not come from parsing the body (then it is a bug and keeps its traceback)."""
    if isinstance(exc, RecursionError):
        return RequestRejected(f"request body is nested too deeply to parse (more than "
                               f"{sys.getrecursionlimit()} levels) — {REQUEST_FORMAT_HINT}")
    if not isinstance(data, bytes | str):
        return None
    try:
        json.loads(data)
    except RecursionError:
        return _body_error(RecursionError(), data)
    except ValueError as err:
        reason = "an integer too long" if "digits" in str(err) else type(err).__name__
        return RequestRejected(f"request body is not valid JSON for Python ({reason}) — {REQUEST_FORMAT_HINT}")
    return None


def _safe_error(exc: MlflowException, data: Any, content_type: str | None) -> RequestRejected:
    """A text-free stand-in for one of MLflow's own request errors (which quote the request)."""
    if isinstance(exc, RequestRejected):
        return exc
    if isinstance(data, bytes | str) and "json" in (content_type or ""):
        try:
            json.loads(data)
        except UnicodeDecodeError as err:
            return RequestRejected(f"request body is not valid UTF-8 (byte {err.start})")
        except json.JSONDecodeError as err:
            return RequestRejected(f"request body is not valid JSON: {err.msg} at line {err.lineno} "
                                   f"column {err.colno} — {REQUEST_FORMAT_HINT}")
    return RequestRejected(
        f"request could not be scored ({exc.error_code}); MLflow's message is withheld because it "
        f"quotes the request — {REQUEST_FORMAT_HINT}",
        error_code=ErrorCode.Value(exc.error_code),
    )


def guard_scoring_server(limits: RequestLimits) -> bool:
    """Wrap the scoring server's ``invocations`` (when it is what loaded us): body size -> 413
    before parsing, and MLflow's own error messages (which quote the request) -> text-free ones.

    ``mlflow models serve`` imports ``mlflow.pyfunc.scoring_server`` and then loads the model, so
    ``load_context`` runs before the first request; ``invocations`` is looked up by name on each
    request. Anywhere else (``mlflow.pyfunc.load_model`` in a notebook, a Spark UDF) the module is
    not loaded and nothing is changed. Idempotent. Returns whether the guard is in place.
    """
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    original = getattr(server, "invocations", None)
    response_type = getattr(server, "InvocationsResponse", None)
    if original is None or response_type is None:
        return False
    if getattr(original, "_medcoder_guard", False):
        original._medcoder_limits = limits  # type: ignore[attr-defined]
        return True

    def invocations(data, content_type, model, input_schema):
        lim = invocations._medcoder_limits
        if isinstance(data, bytes | str) and len(data) > lim.max_bytes:
            body = RequestRejected(f"request body has {len(data)} bytes; at most {lim.max_bytes} "
                                   f"({ENV_MAX_BYTES}) — split it into smaller requests")
            return response_type(response=body.serialize_as_json(), status=413, mimetype="application/json")
        try:
            return original(data, content_type, model, input_schema)
        except MlflowException as exc:
            safe = _safe_error(exc, data, content_type)
            if safe is not exc:
                # Frames only (file, line, function), not the exception text that quotes the input.
                log.warning("rejected a request: %s (MLflow's message withheld; raised at %s)", safe.message,
                            "".join(traceback.format_tb(exc.__traceback__)[-1:]).strip().replace("\n", " "))
            raise safe from None
        except (RecursionError, ValueError) as exc:
            body_error = _body_error(exc, data)
            if body_error is None:
                raise
            log.warning("rejected a request: %s", body_error.message)
            raise body_error from None

    invocations._medcoder_guard = True  # type: ignore[attr-defined]
    invocations._medcoder_limits = limits  # type: ignore[attr-defined]
    server.invocations = invocations
    return True


__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES", "DEFAULT_MAX_REQUEST_CHARS", "DEFAULT_MAX_REQUEST_ROWS", "INPUT_EXAMPLE",
    "INPUT_SCHEMA", "MODEL_CODE_PATH", "OUTPUT_COLUMNS", "OUTPUT_SCHEMA", "OUTPUT_SCHEMA_VERSION", "SCHEMA_VERSION_KEY",
    "MedCoderModel", "RequestLimits", "RequestRejected", "guard_scoring_server", "model_metadata",
    "model_signature", "predictions_frame", "served_status_source", "ENV_AUDIT_STATUS_URI", "ENV_AUDIT_STATUS_TTL_S",
    "CONFIG_AUDIT_STATUS_URI",
]
