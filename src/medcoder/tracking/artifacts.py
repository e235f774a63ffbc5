"""Fetch what a training run stored: its model folder, label space and composed config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from medcoder.errors import ConfigError
from medcoder.modeling import NEURAL
from medcoder.modeling.hybrid import TUNING_MODEL_DIR, view_names


@dataclass
class RunArtifacts:
    run_id: str
    root: Path

    @property
    def model_dir(self) -> Path:
        """The neural view's folder (absent for a fused run without the neural view)."""
        return self.root / "model"

    @property
    def has_model(self) -> bool:
        return self.model_dir.is_dir()

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.json"

    def config(self) -> DictConfig:
        return OmegaConf.load(self.root / "config.yaml")


def download_run(run_id: str, dst: Path) -> RunArtifacts:
    """Download labels.json, config.yaml, model/ and (a fused run) scorers/ + stacker.json of
    ``run_id`` (tracking URI must be set). ``model/`` is required unless the run's ``stacker.json``
    names no ``neural`` view (``fusion.views=[tfidf,dictionary]``: no encoder was trained)."""
    try:
        mlflow.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(
            f"run_id={run_id!r}: no such run in {mlflow.get_tracking_uri()}",
            hint="copy the id printed by scripts/train.py (run_id=...) or see `mlflow ui`",
        ) from exc
    dst.mkdir(parents=True, exist_ok=True)
    # A fused (hybrid) run also has its other views and the stacker (medcoder.modeling.hybrid).
    present = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    for path in (*OPTIONAL_ARTIFACTS, *CALIBRATION_ARTIFACTS):
        if path in present:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))
    needs_model = NEURAL in view_names(dst)
    for path in ("model", "labels.json", "config.yaml") if needs_model else ("labels.json", "config.yaml"):
        try:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))
        except (MlflowException, OSError) as exc:
            raise ConfigError(
                f"run {run_id} has no artifact {path!r}",
                hint="train with tracking.log_model=true (the default)",
            ) from exc
    return RunArtifacts(run_id, dst)


#: Written only by fused runs: the non-neural views and the stacker (what a bundle carries).
OPTIONAL_ARTIFACTS = ("scorers", "stacker.json")
#: Read by calibration only, never bundled: a refitted run's model that scored its tuning notes.
CALIBRATION_ARTIFACTS = (TUNING_MODEL_DIR,)
