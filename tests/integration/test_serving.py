"""A real `mlflow models serve` of the registered tiny bundle answers one HTTP request."""

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

from ..conftest import TINY_MODEL_NAME


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


def test_mlflow_models_serve_answers_invocations(tiny_bundle, tmp_path) -> None:
    from medcoder.tracking.registry import promote

    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    promote(TINY_MODEL_NAME)  # @champion <- @candidate, as ops would before deploying
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # `mlflow models serve` execs uvicorn from PATH
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tiny_bundle["tracking_uri"], "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", f"models:/{TINY_MODEL_NAME}@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while _get(f"http://127.0.0.1:{port}/ping") != 200:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "server did not come up in 180 s"
            time.sleep(1)
        body = json.dumps({"dataframe_split": {"columns": ["id", "text"],
                                               "data": [["n1", "pneumonia cough fever consolidation"], ["n2", ""]]}})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        rows = answer["predictions"]
        assert [row["id"] for row in rows] == ["n1", "n2"]
        assert rows[1]["document_decision"] == "human_review" and rows[1]["document_reasons"] == "empty_note"
        assert rows[0]["bundle_id"] == tiny_bundle["result"].manifest.bundle_id
        for code in json.loads(rows[0]["codes"]):
            assert code["decision"] in ("auto_accept", "human_review")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # stop the server (and its workers) by PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.poll() is not None
