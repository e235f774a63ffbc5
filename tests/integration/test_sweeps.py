"""Hydra --multirun sweeps become one MLflow parent with a child per job; seeds aggregate; a tiny
configuration trained twice gives identical metrics and logs its package set."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ..helpers.configs import tiny_overrides
from ..helpers.paths import REPO_ROOT

_TINY = ("trainer=cached_head", "trainer.num_train_epochs=2", "trainer.early_stopping_patience=5")


def _train(root: Path, corpus, encoder, *extra: str, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *(["-m"] if multirun else []),
           *tiny_overrides(root, corpus, encoder, *_TINY, *extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_2x2_sweep_is_one_parent_with_four_children_and_seed_means(tmp_path, tiny_corpus, tiny_encoder) -> None:
    _train(tmp_path, tiny_corpus, tiny_encoder, "model.token_pool_stride=1,2", "seed=1,2", multirun=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("medcoder.sweep_parent") == "true"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_children_finished"] == 4
    children = [client.get_run(c.info.run_id) for c in children]  # group tags are set by the last summary
    groups = {c.data.tags["medcoder.sweep_group"] for c in children}
    assert groups == {"model.token_pool_stride=1", "model.token_pool_stride=2"}
    summary = json.loads((Path(client.download_artifacts(parent.info.run_id, "sweep_summary.json", str(tmp_path)))).read_text())
    assert [row["n"] for row in summary] == [2, 2]
    for row in summary:
        maps = [c.data.metrics["test_map"] for c in children if c.info.run_id in row["run_ids"]]
        assert math.isclose(row["test_map"]["mean"], sum(maps) / 2)
        assert math.isclose(row["test_map"]["sd"], abs(maps[0] - maps[1]) / math.sqrt(2), abs_tol=1e-12)


def test_same_tiny_configuration_twice_gives_identical_metrics_and_logs_its_environment(
        tmp_path, tiny_corpus, tiny_encoder) -> None:
    for name in ("a", "b"):
        _train(tmp_path / name, tiny_corpus, tiny_encoder, "seed=7")
    metrics, envs = [], []
    for name in ("a", "b"):
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
        metrics.append({k: v for k, v in run.data.metrics.items() if "seconds" not in k})
        env = Path(MlflowClient().download_artifacts(run.info.run_id, "environment/requirements.txt",
                                                     str(tmp_path / name)))
        envs.append(env.read_text())
        assert run.data.params["seed"] == "7" and run.data.tags["medcoder.git_sha"]
    assert metrics[0] == metrics[1]
    assert "torch==" in envs[0] and "mlflow==" in envs[0]
