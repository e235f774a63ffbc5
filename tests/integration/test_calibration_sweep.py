"""`scripts/calibrate.py -m run_id=<id> routing.target_precision=a,b` is a sweep: one parent, a child
run per target with its own calibration, and the trained run's calibration (what export reads) is
left as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ..helpers.paths import REPO_ROOT


def test_calibration_targets_sweep_into_child_runs(tiny_bundle, tmp_path) -> None:
    root, run_id = tiny_bundle["root"], tiny_bundle["run"].run_id
    client = MlflowClient(tiny_bundle["tracking_uri"])
    before = client.get_run(run_id)
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "calibrate.py"), "-m", f"run_id={run_id}",
           f"paths.root_dir={root}", "routing.min_train_count=1", "routing.check_validity=false",
           "routing.target_precision=0.6,0.99", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]

    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    children = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                if r.data.tags.get("medcoder.calibrated_run") == run_id]
    assert len(children) == 2
    parents = {c.data.tags["mlflow.parentRunId"] for c in children}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.data.tags["medcoder.kind"] == "calibrate_sweep" and parent.info.status == "FINISHED"
    targets = sorted(float(c.data.params["routing.target_precision"]) for c in children)
    assert targets == [0.6, 0.99]
    for c in children:
        local = Path(client.download_artifacts(c.info.run_id, "calibration.json", str(tmp_path / c.info.run_id)))
        assert json.loads(local.read_text())["targets"]["target_precision"] == float(c.data.params["routing.target_precision"])
    summary = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.json", str(tmp_path)))
    assert {row["group"] for row in json.loads(summary.read_text())} == {"routing.target_precision=0.6",
                                                                        "routing.target_precision=0.99"}
    after = client.get_run(run_id)  # the trained run's own calibration is untouched
    assert before.data.metrics["tau_accept"] > 0  # certified (a NaN would compare unequal to itself)
    assert after.data.metrics["tau_accept"] == before.data.metrics["tau_accept"]
    assert after.data.tags.get("medcoder.routing_message") == before.data.tags.get("medcoder.routing_message")
