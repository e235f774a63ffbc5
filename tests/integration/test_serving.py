"""A real `mlflow models serve` of the registered tiny bundle: answers, limits, no note text in errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from ..helpers.paths import TINY_MODEL_NAME


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


SECRET = "ZEBRA-QUOKKA-unique-note-text"
#: Small limits for the served model, so the oversize cases are cheap to send.
LIMITS = {"MEDCODER_MAX_REQUEST_ROWS": "8", "MEDCODER_MAX_REQUEST_CHARS": "20000",
          "MEDCODER_MAX_REQUEST_BYTES": "200000"}


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    """One real `mlflow models serve` of the registered tiny bundle for this module; stopped by PID."""
    from medcoder.tracking.registry import promote

    tmp_path = tmp_path_factory.mktemp("serve")
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    promote(TINY_MODEL_NAME)  # @champion <- @candidate, as ops would before deploying
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # `mlflow models serve` execs uvicorn from PATH
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tiny_bundle["tracking_uri"], "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **LIMITS}
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", f"models:/{TINY_MODEL_NAME}@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while _get(f"http://127.0.0.1:{port}/ping") != 200:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "server did not come up in 180 s"
            time.sleep(1)
        yield {"url": f"http://127.0.0.1:{port}/invocations", "log": log_path, "bundle": tiny_bundle}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # stop the server (and its workers) by PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.poll() is not None


def _post(url: str, body: bytes | str, content_type: str = "application/json") -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _split(columns: list[str], rows: list[list]) -> str:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}})


def _assert_answers_normally(url: str) -> None:
    status, body = _post(url, _split(["id", "text"], [["ok", "pneumonia cough fever"]]))
    assert status == 200, body
    assert [row["id"] for row in json.loads(body)["predictions"]] == ["ok"]


def test_mlflow_models_serve_answers_invocations(server) -> None:
    status, body = _post(server["url"], _split(["id", "text"], [["n1", "pneumonia cough fever consolidation"],
                                                                ["n2", ""]]))
    assert status == 200, body
    rows = json.loads(body)["predictions"]
    assert [row["id"] for row in rows] == ["n1", "n2"]
    assert rows[1]["document_decision"] == "human_review" and rows[1]["document_reasons"] == ["empty_note"]
    assert rows[1]["codes"] == [] and rows[0]["truncated"] is False
    assert rows[0]["bundle_id"] == server["bundle"]["result"].manifest.bundle_id
    assert rows[0]["codes"], "the tiny model predicts something for a pneumonia note"
    for code in rows[0]["codes"]:  # output schema 2: structured codes, not a JSON string
        assert code["decision"] in ("auto_accept", "human_review") and isinstance(code["reasons"], list)
        assert set(code) == {"code", "description", "probability", "decision", "reasons", "sources", "evidence"}
        for span in code["evidence"]:
            assert set(span) == {"start", "end", "weight", "source", "negated"}


def test_served_rows_equal_the_pyfunc_rows(server) -> None:
    """HTTP serving and the pyfunc model (hence Spark, tests/integration/test_spark_predict.py) answer
    the same rows for the same notes; only the timestamp differs."""
    from medcoder.inference.coder import Coder
    from medcoder.tracking.pyfunc import predictions_frame

    ids = ["a", "b", "c"]
    texts = ["pneumonia cough fever consolidation", "headache migraine nausea", "chest pain dyspnea " * 20]
    status, body = _post(server["url"], _split(["id", "text"], [list(r) for r in zip(ids, texts, strict=True)]))
    assert status == 200, body
    served = json.loads(body)["predictions"]
    want = predictions_frame(Coder.load(server["bundle"]["result"].bundle_dir).predict(texts, ids))
    for got, row in zip(served, want.to_dict(orient="records"), strict=True):
        assert {k: v for k, v in got.items() if k != "timestamp"} == {k: v for k, v in row.items() if k != "timestamp"}


def test_request_without_id_is_served(server) -> None:
    status, body = _post(server["url"], _split(["text"], [["pneumonia cough fever"], ["headache migraine"]]))
    assert status == 200, body
    assert [row["id"] for row in json.loads(body)["predictions"]] == ["0", "1"]


def test_oversize_requests_are_client_errors_and_the_server_keeps_serving(server) -> None:
    too_long = _split(["id", "text"], [["big", SECRET + " cough" * 5000]])  # 30k chars > 20k, 30 kB < 200 kB
    status, body = _post(server["url"], too_long)
    assert status == 400 and "MEDCODER_MAX_REQUEST_CHARS" in body and SECRET not in body, body
    too_many = _split(["text"], [["cough"]] * 9)
    status, body = _post(server["url"], too_many)
    assert status == 400 and "MEDCODER_MAX_REQUEST_ROWS" in body, body
    too_big = _split(["text"], [[SECRET + " x" * 150_000]])  # 300 kB body: refused before parsing
    status, body = _post(server["url"], too_big)
    assert status == 413 and "MEDCODER_MAX_REQUEST_BYTES" in body and SECRET not in body, body
    _assert_answers_normally(server["url"])


@pytest.mark.parametrize("body", [
    '{"dataframe_split": {"columns": ["id", "text"], "data": [["n1", "' + SECRET + '"]]',  # cut JSON
    _split(["id", "note"], [["n1", SECRET]]),  # wrong column name
    _split(["id", "text"], [["n1", SECRET, "extra"]]),  # wrong row width
    json.dumps({"instances_typo": [{"text": SECRET}]}),  # unknown top-level key
])
def test_malformed_requests_never_echo_note_text(server, body) -> None:
    status, answer = _post(server["url"], body)
    assert 400 <= status < 500, answer
    assert SECRET not in answer, answer
    _assert_answers_normally(server["url"])
    assert SECRET not in server["log"].read_text(errors="ignore")


@pytest.mark.parametrize("body, match", [
    ("[" * 90_000 + "]" * 90_000, "nested too deeply"),  # issue 22: was HTTP 500 + RecursionError traceback
    ('{"dataframe_split": {"columns": ["text"], "data": ' + "[" * 90_000 + "]" * 90_000 + "}}", "nested too deeply"),
    ('{"dataframe_split": {"columns": ["id", "text"], "data": [[' + "9" * 5000 + ', "' + SECRET + '"]]}}',
     "integer too long"),
])
def test_deeply_nested_or_unparseable_json_is_a_400_not_a_500(server, body, match) -> None:
    start = server["log"].stat().st_size
    status, answer = _post(server["url"], body)
    assert status == 400 and match in answer and SECRET not in answer, (status, answer[:500])
    _assert_answers_normally(server["url"])
    with server["log"].open(errors="ignore") as fh:
        fh.seek(start)
        log = fh.read()
    assert "Traceback" not in log and "RecursionError" not in log and SECRET not in log, log[-2000:]
