"""Training end to end on a tiny random BERT: MLflow contract, both encoder modes, resume, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from medcoder.errors import ConfigError
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, tiny_overrides
from ..helpers.paths import REPO_ROOT
from ..helpers.training_runs import train_and_kill

METRIC_NAMES = ["map", "micro_f1", "macro_f1", "micro_precision", "micro_recall", "p_at_5", "p_at_8",
                "p_at_15", "r_at_10", "r_at_15", "micro_auc", "macro_auc", "ece", "label_coverage"]


def test_cached_training_logs_the_mlflow_contract(tmp_path, tiny_corpus, tiny_encoder) -> None:
    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "trainer=cached_head",
                                     "trainer.num_train_epochs=3", "model.token_pool_stride=2"))
    result = train(cfg)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "medcoder"
    for split in ("dev", "test"):
        for name in METRIC_NAMES:
            assert f"{split}_{name}" in run.data.metrics, f"{split}_{name}"
    assert 0.0 <= run.data.metrics["test_map"] <= 1.0
    assert run.data.metrics["test_label_coverage"] == pytest.approx(1.0)  # all 6 codes in train
    assert {"medcoder.data", "medcoder.model", "medcoder.codeset_fy", "medcoder.git_sha"} <= set(run.data.tags)
    assert run.data.tags["medcoder.codeset_fy"] == "2026"
    assert run.data.params["trainer.encoder_mode"] == "cached"
    history = client.get_metric_history(result.run_id, "epoch_dev_map")
    assert [m.step for m in history] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "labels.json", "metrics.json", "model", "per_code_f1_vs_frequency.png"} <= artifacts
    # No clinical text anywhere in what MLflow stores (params, config, labels, metrics).
    notes = [json.loads(line)["text"] for line in Path(tiny_corpus["test"]).read_text().splitlines()]
    stored = json.dumps(run.data.params) + json.dumps(run.data.tags)
    local = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(tmp_path / "dl")))
    for f in local.rglob("*"):
        if f.is_file() and f.suffix in {".json", ".yaml", ".txt"}:
            stored += f.read_text(errors="ignore")
    assert not any(note[:40] in stored for note in notes)
    labels = json.loads((local / "labels.json").read_text())
    assert labels["codeset_fy"] == 2026 and sum(labels["frequency"].values()) > 0


def test_finetune_trains_only_the_unfrozen_top_layer(tmp_path, tiny_corpus, tiny_encoder) -> None:
    from transformers import AutoModel

    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "trainer.num_train_epochs=4",
                                     "trainer.train_top_layers=1", "trainer.learning_rate=1e-3",
                                     "trainer.head_learning_rate=1e-2", "trainer.early_stopping_patience=10",
                                     "model.label_init=random",
                                     # the tiny corpus (24 train notes) is too small to carve a tuning
                                     # fifth; this test is about which layers train
                                     "certification.design=none"))
    result = train(cfg)
    trained = AutoModel.from_pretrained(result.model_dir / "model")
    reference = AutoModel.from_pretrained(tiny_encoder).state_dict()
    changed = {n for n, t in trained.encoder.state_dict().items() if not (t == reference[n]).all()}
    assert changed and all(n.startswith("encoder.layer.1.") for n in changed), changed
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    losses = [m.value for m in client.get_metric_history(result.run_id, "train_loss")]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_bad_config_values_raise_config_error(tmp_path, tiny_corpus, tiny_encoder) -> None:
    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "trainer.encoder_mode=sideways"))
    with pytest.raises(ConfigError, match="trainer.encoder_mode"):
        train(cfg)
    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "model.encoder=./no/such/dir"))
    with pytest.raises(ConfigError, match="model.encoder"):
        train(cfg)


def _train_cmd(root: Path, corpus, encoder, *extra: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
            *tiny_overrides(root, corpus, encoder, *extra)]


def test_script_error_is_one_line_and_exit_code_2(tmp_path, tiny_corpus, tiny_encoder) -> None:
    cmd = _train_cmd(tmp_path, tiny_corpus, tiny_encoder, f"data.train={tmp_path / 'missing.jsonl'}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.jsonl" in errors[0]
    assert "Traceback" not in proc.stderr


def test_training_resumes_from_last_checkpoint_after_kill(tmp_path, tiny_corpus, tiny_encoder) -> None:
    extra = ("trainer.num_train_epochs=40", "trainer.early_stopping_patience=100", "run_name=resume")
    cmd = _train_cmd(tmp_path, tiny_corpus, tiny_encoder, *extra)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ckpt_dir = tmp_path / "outputs" / "checkpoints" / "resume"
    killed_at, killed_run = train_and_kill(cmd, ckpt_dir, env=env, timeout=240)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {ckpt_dir / f'checkpoint-{killed_at}'}" in done.stderr + done.stdout
    run_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id=")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run_id == killed_run  # one training = one MLflow run, across the kill
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["medcoder.resumed_from"] == f"checkpoint-{killed_at}"
    # Every epoch's dev metrics are in the run once the resumed process finished.
    steps = {m.step for m in client.get_metric_history(run_id, "epoch_dev_map")}
    assert steps == set(range(1, 41))
    assert not ckpt_dir.exists()  # cleaned after success


def test_zero_epochs_are_refused_before_anything_is_loaded(tmp_path, tiny_corpus, tiny_encoder) -> None:
    """`trainer.num_train_epochs=-1` used to run 0 steps and log a FINISHED run of an untrained model."""
    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "trainer.num_train_epochs=-1"))
    with pytest.raises(ConfigError, match=r"trainer.num_train_epochs=-1 .*>= 1"):
        train(cfg)
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_that_trained_zero_steps_is_failed_not_finished(tmp_path, tiny_corpus, tiny_encoder, monkeypatch) -> None:
    """Behind the config check: should 0 optimizer steps happen anyway, the run is FAILED."""
    import medcoder.workflows.train as run_module

    monkeypatch.setattr(run_module, "check_train_config", lambda cfg: None)
    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "trainer=cached_head",
                                     "trainer.num_train_epochs=-1"))
    with pytest.raises(ConfigError, match="0 optimizer steps"):
        train(cfg)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("medcoder").experiment_id])
    assert runs and all(r.info.status == "FAILED" for r in runs)
