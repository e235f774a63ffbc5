"""Real integration: the shipped MiniLM on CodiEsp (a slice) and on the synthetic corpus.

Slow-ish (tens of seconds each) but CPU-only and offline; they exercise the exact code path of the
README main job: train (cached encoder states) -> calibrate, logged to MLflow.
"""

from __future__ import annotations

import math

import mlflow
import pytest
from hydra import compose, initialize_config_dir

from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.train import train

from ..helpers.paths import CODIESP_DIR, REPO_ROOT

pytestmark = pytest.mark.integration


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")
def test_quickstart_chain_on_a_codiesp_slice(tmp_path) -> None:
    cfg = _compose("train", [
        "experiment=quickstart", f"paths.root_dir={tmp_path}", f"data.root={CODIESP_DIR}",
        "max_samples_per_split=40", "model.max_chunks=2", "trainer.num_train_epochs=2",
        "trainer.disable_tqdm=true",
    ])
    result = train(cfg)
    m = result.metrics
    assert 0.0 < m["test_map"] <= 1.0 and 0.0 < m["test_label_coverage"] < 1.0
    # 2 chunks of 128 tokens cannot hold an average CodiEsp note (~480 tokens): flagged truncated.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.data.metrics["test_truncated_share"] > 0.5
    assert run.data.tags["medcoder.data"] == "codiesp_d_en" and run.data.tags["medcoder.model"] == "minilm"

    cal = calibrate(_compose("calibrate", [f"run_id={result.run_id}", f"paths.root_dir={tmp_path}"]))
    run = client.get_run(result.run_id)
    for key in ("test_auto_accept_precision", "test_auto_accept_coverage", "test_docs_fully_auto",
                "test_ece_calibrated"):
        assert key in run.data.metrics
    # Every predicted code of a truncated note goes to review, so truncated notes are never fully auto.
    assert cal.metrics["test_reason_truncated_note"] > 0
    assert math.isfinite(cal.metrics["test_ece_calibrated"])


def test_minilm_head_learns_the_synthetic_task(tmp_path, tiny_corpus) -> None:
    cfg = _compose("train", [
        "experiment=quickstart", "data=jsonl", f"data.train={tiny_corpus['train']}",
        f"data.dev={tiny_corpus['dev']}", f"data.test={tiny_corpus['test']}", f"paths.root_dir={tmp_path}",
        "model.token_pool_stride=1", "trainer.num_train_epochs=15", "trainer.learning_rate=3e-3",
        "trainer.per_device_train_batch_size=4", "trainer.early_stopping_patience=15", "trainer.disable_tqdm=true",
    ])
    result = train(cfg)
    # Ranking codes by training frequency alone gives test MAP ~0.53 on this corpus; reading the
    # notes' trigger words must do much better.
    assert result.metrics["test_map"] > 0.8, result.metrics
