"""Every shipped config composes and resolves (a typo in an interpolation fails here, not on a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ..helpers.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_experiments_compose(experiment: str, tmp_path: Path) -> None:
    cfg = _compose("train", [f"experiment={experiment}", f"paths.root_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert cfg.run_name == experiment
    assert cfg.trainer.encoder_mode in ("cached", "finetune")


@pytest.mark.parametrize("model", _names("model"))
def test_models_compose_with_an_experiment(model: str, tmp_path: Path) -> None:
    cfg = _compose("train", ["experiment=codiesp_d_full", f"model={model}", f"paths.root_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert cfg.model.name == model and cfg.model.chunk_size > 2


@pytest.mark.parametrize("data", [n for n in _names("data") if n.startswith("codiesp")])
def test_codiesp_data_configs(data: str, tmp_path: Path) -> None:
    cfg = _compose("train", [f"data={data}", f"paths.root_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert cfg.data.language in ("en", "es") and cfg.data.code_type in ("D", "P")


@pytest.mark.parametrize("method", _names("calibration"))
def test_calibration_configs(method: str, tmp_path: Path) -> None:
    cfg = _compose("calibrate", ["run_id=x", f"calibration={method}", f"paths.root_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert cfg.calibration.method == method and 0 < cfg.routing.target_precision < 1
