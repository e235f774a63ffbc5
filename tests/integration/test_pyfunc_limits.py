"""MedCoderModel (the served pyfunc) called directly: request limits, optional id, no text in errors."""

from __future__ import annotations

import json
import sys
import types

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE

from medcoder.errors import ConfigError
from medcoder.tracking.pyfunc import (
    DEFAULT_MAX_REQUEST_CHARS,
    DEFAULT_MAX_REQUEST_ROWS,
    INPUT_EXAMPLE,
    INPUT_SCHEMA,
    OUTPUT_SCHEMA,
    OUTPUT_SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    MedCoderModel,
    RequestLimits,
    RequestRejected,
    guard_scoring_server,
)

SECRET = "ZEBRA-QUOKKA-unique-note-text"


@pytest.fixture
def loaded_model(tiny_bundle, monkeypatch):
    def load(**env: str) -> MedCoderModel:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        model = MedCoderModel()
        model.load_context(types.SimpleNamespace(artifacts={"bundle": str(tiny_bundle["result"].bundle_dir)}))
        return model
    return load


def _frame(texts: list[str], ids: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"text": texts} if ids is None else {"id": ids, "text": texts})


def test_default_limits_are_documented_values(monkeypatch) -> None:
    for name in ("MEDCODER_MAX_REQUEST_ROWS", "MEDCODER_MAX_REQUEST_CHARS", "MEDCODER_MAX_REQUEST_BYTES"):
        monkeypatch.delenv(name, raising=False)
    limits = RequestLimits.from_env()
    assert (limits.max_rows, limits.max_chars) == (DEFAULT_MAX_REQUEST_ROWS, DEFAULT_MAX_REQUEST_CHARS)
    monkeypatch.setenv("MEDCODER_MAX_REQUEST_ROWS", "0")
    with pytest.raises(ConfigError, match="MEDCODER_MAX_REQUEST_ROWS"):
        RequestLimits.from_env()


def test_too_many_rows_is_a_400_without_text(loaded_model) -> None:
    model = loaded_model(MEDCODER_MAX_REQUEST_ROWS="3")
    assert len(model.predict(None, _frame(["cough fever"] * 3))) == 3
    with pytest.raises(RequestRejected) as info:
        model.predict(None, _frame([SECRET] * 4))
    assert info.value.get_http_status_code() == 400
    assert "4 notes" in info.value.message and "MEDCODER_MAX_REQUEST_ROWS" in info.value.message
    assert SECRET not in info.value.serialize_as_json()


def test_too_many_characters_is_rejected_before_scoring(loaded_model, monkeypatch) -> None:
    model = loaded_model(MEDCODER_MAX_REQUEST_CHARS="1000")
    scored = []
    monkeypatch.setattr(model.coder, "predict", lambda *a, **k: scored.append(a) or [])
    with pytest.raises(RequestRejected, match="1200 characters .* at most 1000 .*MEDCODER_MAX_REQUEST_CHARS"):
        model.predict(None, _frame([SECRET + "x" * 571, "y" * 600]))
    assert scored == []  # nothing reached the tokenizer


def test_scoring_server_rewrite_cannot_put_text_into_our_errors(loaded_model) -> None:
    """MLflow's scoring server does `e.message = f"Failed to predict data '{data}' ..."`."""
    model = loaded_model(MEDCODER_MAX_REQUEST_ROWS="1")
    data = _frame([SECRET, SECRET])
    with pytest.raises(MlflowException) as info:
        model.predict(None, data)
    exc = info.value
    exc.message = f"Failed to predict data '{data}'. \nError: {exc.message}"
    assert SECRET not in exc.message and SECRET not in exc.serialize_as_json()


def test_wrong_column_names_no_text(loaded_model) -> None:
    model = loaded_model()
    with pytest.raises(RequestRejected) as info:
        model.predict(None, pd.DataFrame({"note": [SECRET]}))
    assert "'text' column" in info.value.message and SECRET not in info.value.serialize_as_json()


def test_id_is_optional_and_null_ids_get_row_numbers(loaded_model) -> None:
    model = loaded_model()
    out = model.predict(None, _frame(["cough fever pneumonia", "headache"]))
    assert list(out["id"]) == ["0", "1"]
    out = model.predict(None, _frame(["cough fever pneumonia", "headache"], ids=["a", None]))
    assert list(out["id"]) == ["a", "1"]
    for codes in out["codes"]:  # output schema 2: a list of code objects per note
        assert isinstance(codes, list) and all(isinstance(c["reasons"], list) for c in codes)


def test_per_note_limit_is_configurable(loaded_model) -> None:
    model = loaded_model(MEDCODER_MAX_NOTE_CHARS="40")
    assert model.coder.max_note_chars == 40
    from medcoder.inference.prediction import text_sha256

    note = "pneumonia cough fever consolidation " * 5
    out = model.predict(None, _frame([note]))
    assert out["input_sha256"][0] == text_sha256(note[:40])  # Coder cut the note to 40 characters


def test_signature_example_makes_id_optional() -> None:
    from mlflow.models import infer_signature

    inputs = {c.name: c.required for c in infer_signature(INPUT_EXAMPLE).inputs.inputs}
    assert inputs == {"id": False, "text": True}
    assert {c.name: c.required for c in INPUT_SCHEMA.inputs} == inputs


def test_logged_model_records_output_schema_2(tiny_bundle) -> None:
    """The registered model carries the structured signature and its version (what spark_predict checks)."""
    import mlflow

    from ..helpers.paths import TINY_MODEL_NAME

    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    info = mlflow.models.get_model_info(f"models:/{TINY_MODEL_NAME}/{tiny_bundle['result'].registered_version}")
    assert info.metadata[SCHEMA_VERSION_KEY] == OUTPUT_SCHEMA_VERSION == 2
    assert info.signature.outputs == OUTPUT_SCHEMA and info.signature.inputs == INPUT_SCHEMA
    codes = {c.name: c for c in OUTPUT_SCHEMA.inputs}["codes"].type
    assert {p.name for p in codes.dtype.properties} == {"code", "description", "probability", "decision", "reasons",
                                                         "sources", "evidence"}


def test_guard_returns_413_and_withholds_mlflow_messages(monkeypatch) -> None:
    """The guard wraps the scoring server's invocations (only when that module is loaded)."""
    server = types.ModuleType("mlflow.pyfunc.scoring_server")
    server.InvocationsResponse = lambda response, status, mimetype: (status, response)  # type: ignore[attr-defined]

    def invocations(data, content_type, model, input_schema):
        # What MLflow 3 does: both errors quote the request.
        try:
            json.loads(data)
        except ValueError:
            raise MlflowException(f"Ensure that input is a valid JSON. Input: \n{data}",
                                  error_code=BAD_REQUEST) from None
        raise MlflowException(f"Failed to predict data '{data}'", error_code=INVALID_PARAMETER_VALUE)

    server.invocations = invocations  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow.pyfunc.scoring_server", server)
    assert guard_scoring_server(RequestLimits(max_bytes=100))
    status, body = server.invocations(b"x" * 101, "application/json", None, None)
    assert status == 413 and "MEDCODER_MAX_REQUEST_BYTES" in body
    for data in (f'{{"text": "{SECRET}"'.encode(), json.dumps({"text": SECRET}).encode()):
        with pytest.raises(MlflowException) as info:
            server.invocations(data, "application/json", None, None)
        assert SECRET not in info.value.serialize_as_json()
        assert info.value.get_http_status_code() == 400


def test_guard_turns_unparseable_bodies_into_400s(monkeypatch) -> None:
    """Issue 22: MLflow parses the body with json.loads and catches only JSONDecodeError, so a body
    nested 100,000 deep (RecursionError) or with a 5,000-digit integer (ValueError) was a 500."""
    server = types.ModuleType("mlflow.pyfunc.scoring_server")
    server.InvocationsResponse = lambda response, status, mimetype: (status, response)  # type: ignore[attr-defined]

    def invocations(data, content_type, model, input_schema):
        json.loads(data)  # what MLflow 3 does first; the errors below escape it
        raise ValueError("a bug after parsing")

    server.invocations = invocations  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow.pyfunc.scoring_server", server)
    assert guard_scoring_server(RequestLimits(max_bytes=10_000_000))
    for body, match in ((b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
                        (b'{"id": ' + b"9" * 5000 + b', "text": "' + SECRET.encode() + b'"}', "integer too long")):
        with pytest.raises(RequestRejected, match=match) as info:
            server.invocations(body, "application/json", None, None)
        assert info.value.get_http_status_code() == 400 and SECRET not in info.value.serialize_as_json()
    with pytest.raises(ValueError, match="a bug after parsing"):  # not from the body: keeps its traceback
        server.invocations(b'{"text": "x"}', "application/json", None, None)


def test_nested_ids_and_texts_are_refused_by_row(loaded_model) -> None:
    model = loaded_model()
    nested = [[[[SECRET]]]]
    for frame, match in ((pd.DataFrame({"id": [nested, "b"], "text": ["cough", "fever"]}), "'id' must be a string"),
                         (pd.DataFrame({"id": [{"a": SECRET}], "text": ["cough"]}), "'id' must be a string"),
                         (pd.DataFrame({"text": ["cough", {"a": nested}]}), "'text' must be a string")):
        with pytest.raises(RequestRejected, match=match) as info:
            model.predict(None, frame)
        assert "row " in info.value.message and SECRET not in info.value.serialize_as_json()
    ids = [7, None, "c"]  # plain values (numbers, nulls) are still served as before
    assert list(model.predict(None, pd.DataFrame({"id": ids, "text": ["cough", "fever", "x"]}))["id"]) == ["7", "1", "c"]
