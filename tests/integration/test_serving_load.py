"""`mlflow models serve` under a little concurrent load and abuse, with the default request limits.

Why beside ``test_serving.py``: that module checks answers and limits one request at a time with
small limits; this one checks what a deployment meets: several requests in flight at once (the
scoring server runs ``invocations`` in a thread pool, so they score concurrently in one worker),
then a ~5 MB note and malformed JSON at the *default* limits, each a 4xx that leaves the server
answering. No timing assertions: ``benchmarks/serve_load.py`` measures speed.

Self-contained on purpose (stdlib HTTP, threads): test modules do not import each other, and the
benchmark script is not an importable package.
"""

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..helpers.paths import TINY_MODEL_NAME

#: Starts the abusive note, so a response or log that echoes note text is caught.
MARKER = "WOMBAT-SERVE-LOAD-note-text"
NOTES = [
    "pneumonia cough fever consolidation", "type 2 diabetes mellitus hypertension", "headache migraine aura",
    "acute appendicitis abdominal pain", "chronic kidney disease anaemia", "asthma wheeze dyspnoea",
    "urinary tract infection dysuria", "atrial fibrillation palpitations",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def _post(url: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _split(rows: list[list[str]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["id", "text"], "data": rows}}).encode()


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """`mlflow models serve` of the registered tiny model (@candidate, 1 worker), default limits."""
    tmp_path = tmp_path_factory.mktemp("serve_load")
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # `mlflow models serve` execs uvicorn from PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCODER_MAX_")}  # the defaults
    env.update({"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
                "MLFLOW_TRACKING_URI": tiny_bundle["tracking_uri"], "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(Path(bindir) / "mlflow"), "models", "serve", "-m", f"models:/{TINY_MODEL_NAME}@candidate",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while _get(f"{base}/ping") != 200:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "server did not come up in 180 s"
            time.sleep(0.5)
        yield {"base": base, "url": f"{base}/invocations", "log": log_path, "proc": proc}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker, by process group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _answers_normally(served: dict) -> None:
    """Health endpoints and one ordinary prediction still work, and the server process is alive."""
    assert served["proc"].poll() is None, served["log"].read_text()[-3000:]
    assert _get(f"{served['base']}/ping") == 200
    assert _get(f"{served['base']}/health") == 200
    status, body = _post(served["url"], _split([["after", "pneumonia cough fever"]]))
    assert status == 200, body
    assert [row["id"] for row in json.loads(body)["predictions"]] == ["after"]


def test_concurrent_requests_are_all_answered(served) -> None:
    """8 one-note requests from 4 threads at once: every one 200, each with its own note's id."""
    bodies = [(f"n{i}", _split([[f"n{i}", NOTES[i]]])) for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda item: (item[0], *_post(served["url"], item[1])), bodies))
    for note_id, status, body in answers:
        assert status == 200, body
        assert [row["id"] for row in json.loads(body)["predictions"]] == [note_id]


def test_five_megabyte_note_is_a_client_error_and_the_server_keeps_serving(served) -> None:
    """A ~5 MB note is above MEDCODER_MAX_REQUEST_CHARS (2,000,000) and below the body-size guard
    (16 MB): parsed, refused with 400 before anything is tokenised, no note text in the answer."""
    big = MARKER + " fever cough" * (5_000_000 // 12)
    status, body = _post(served["url"], _split([["big", big]]))
    assert 400 <= status < 500, (status, body[:500])
    assert "MEDCODER_MAX_REQUEST_CHARS" in body and MARKER not in body, body[:500]
    _answers_normally(served)


@pytest.mark.parametrize("body", [
    b'{"dataframe_split": {"columns": ["id", "text"], "data": [["n1", "' + MARKER.encode() + b" fever",  # cut
    b"{not json at all " + MARKER.encode(),
    b'{"dataframe_split": {"columns": ["id", "text"], "data": [["n1", "fi\xe8vre ' + MARKER.encode() + b'"]]}}',
])
def test_malformed_json_is_a_client_error_and_the_server_keeps_serving(served, body: bytes) -> None:
    status, answer = _post(served["url"], body)
    assert 400 <= status < 500, (status, answer[:500])
    assert MARKER not in answer, answer[:500]
    _answers_normally(served)
    assert MARKER not in served["log"].read_text(errors="ignore")
