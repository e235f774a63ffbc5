"""The bundle as an MLflow model: a ``PythonModel`` wrapping :class:`~medcoder.inference.Coder`.

Why a wrapper and not ``mlflow.transformers``: the transformers flavour would serve raw logits;
the product is a *calibrated, routed* prediction with an audit trail, which only ``Coder`` makes.
The bundle travels as the model's ``bundle`` artifact, so ``models:/name@alias`` resolves to the
same verified directory that ``scripts/predict.py`` reads.

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
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

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
OUTPUT_COLUMNS = ("id", "document_decision", "document_reasons", "codes", "bundle_id", "codeset_fy",
                  "policy_version", "input_sha256", "timestamp")

#: Defaults of the request limits; each can be changed with its environment variable at serve time.
DEFAULT_MAX_REQUEST_ROWS = 256
DEFAULT_MAX_REQUEST_CHARS = 2_000_000  # ~400 typical CodiEsp notes (mean ~5k characters)
DEFAULT_MAX_REQUEST_BYTES = 16_000_000  # JSON escapes a non-ASCII character as up to 6 bytes
ENV_MAX_ROWS = "MEDCODER_MAX_REQUEST_ROWS"
ENV_MAX_CHARS = "MEDCODER_MAX_REQUEST_CHARS"
ENV_MAX_BYTES = "MEDCODER_MAX_REQUEST_BYTES"
ENV_MAX_NOTE_CHARS = "MEDCODER_MAX_NOTE_CHARS"

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


def predictions_frame(preds: list[Any]) -> pd.DataFrame:
    """DataFrame of :class:`DocumentPrediction` rows; ``codes`` is a JSON string per note.

    JSON strings rather than nested objects: the signature stays a flat table that every MLflow
    serving path (REST, Spark UDF, batch) handles the same way.
    """
    rows = []
    for p in preds:
        d = p.to_dict()
        rows.append({
            **{k: d[k] for k in OUTPUT_COLUMNS if k not in ("codes", "document_reasons", "codeset_fy")},
            "document_reasons": ";".join(d["document_reasons"]),
            "codes": json.dumps(d["codes"], ensure_ascii=False),
            "codeset_fy": -1 if d["codeset_fy"] is None else int(d["codeset_fy"]),
        })
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


class MedCoderModel(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[id?, text]) -> DataFrame`` of routed predictions (see OUTPUT_COLUMNS)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from medcoder.inference.coder import Coder

        self.limits = RequestLimits.from_env()
        self.coder = Coder.load(context.artifacts["bundle"])
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
        bad = [i for i, t in enumerate(column) if not (isinstance(t, str) or pd.isna(t))]
        if bad:
            raise RequestRejected(f"'text' must be a string in every row; row {bad[0]} is not "
                                  f"({len(bad)} row(s) in all)")
        texts = ["" if pd.isna(t) else t for t in column]
        (getattr(self, "limits", None) or RequestLimits.from_env()).check(texts)
        ids = None
        if "id" in model_input.columns:
            # A missing id (null in JSON) gets the row number, as Coder does when no ids are given.
            ids = [str(row) if pd.isna(i) else str(i) for row, i in enumerate(model_input["id"])]
        batch_size = (params or {}).get("batch_size", 8)
        try:
            preds = self.coder.predict(texts, ids, batch_size=batch_size, progress=False)
        except MedcoderError as exc:  # e.g. batch_size=0, an unpaired surrogate: named by row, no text
            raise RequestRejected(str(exc)) from None
        return predictions_frame(preds)


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

    invocations._medcoder_guard = True  # type: ignore[attr-defined]
    invocations._medcoder_limits = limits  # type: ignore[attr-defined]
    server.invocations = invocations
    return True


__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES", "DEFAULT_MAX_REQUEST_CHARS", "DEFAULT_MAX_REQUEST_ROWS", "INPUT_EXAMPLE",
    "MedCoderModel", "RequestLimits", "RequestRejected", "guard_scoring_server", "predictions_frame",
]
