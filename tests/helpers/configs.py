"""Hydra config composition for tests (the real configs/, tiny overrides)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from .paths import REPO_ROOT


def tiny_overrides(root: Path, corpus: dict[str, str], encoder: str, *extra: str) -> list[str]:
    return [
        "data=jsonl",
        f"data.train={corpus['train']}",
        f"data.dev={corpus['dev']}",
        f"data.test={corpus['test']}",
        f"model.encoder={encoder}",
        "model.chunk_size=16",
        "model.max_chunks=3",
        "model.encoder_overrides={}",
        f"paths.root_dir={root}",
        "trainer.per_device_train_batch_size=4",
        "trainer.disable_tqdm=true",
        "trainer.use_cpu=true",
        *extra,
    ]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def compose_named(name: str, overrides: list[str]):
    """Compose any primary config (calibrate, export, predict, ...) with overrides."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


#: Calibrate overrides that let a small CodiEsp slice certify some codes (a lax target, no coverage
#: floor, no rare-code bar): the end-to-end tests need auto-accepted codes to check, not a real τ.
LAX_ROUTING = ("routing.min_train_count=1", "routing.target_precision=0.5", "routing.delta=0.5",
               "routing.min_coverage=0")
