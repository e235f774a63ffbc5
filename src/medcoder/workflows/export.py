"""Export a trained + calibrated MLflow run as a bundle and as a registered MLflow model.

What ``scripts/export.py`` calls: download the run's model, labels, calibration and metrics ->
write the bundle (staging folder beside the target + rename, manifest with sha256) -> log it as an
``mlflow.pyfunc`` model in the same run -> register a version, tag it, point the ``candidate``
alias at it.

The run's artifacts are downloaded into the same staging folder as the bundle (beside
``output_dir``, not the system temp folder), so an export killed half-way leaves one marked
folder that the next export removes (:func:`medcoder.inference.bundle.remove_stale_staging`).
The bundle holds no code (schema 2): plain transformers loads ``model/`` after
``import medcoder.modeling``, never with ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from omegaconf import DictConfig, OmegaConf

from medcoder.errors import ConfigError
from medcoder.inference.bundle import BUNDLE_ID_TAG, BundleWriter, Manifest
from medcoder.inference.coder import Coder
from medcoder.inference.model_card import render_model_card
from medcoder.tracking import setup_experiment, tracking_uri
from medcoder.tracking.artifacts import OPTIONAL_ARTIFACTS, download_run
from medcoder.tracking.registry import CANDIDATE, CHAMPION, set_alias, tag_version

log = logging.getLogger(__name__)

MLFLOW_MODEL_NAME = "medcoder_model"  # artifact path of the pyfunc model inside the run

# Test metrics copied onto the registered version, so `mlflow ui`'s model page compares versions.
VERSION_METRIC_TAGS = ("test_map", "test_micro_f1", "test_p_at_8", "test_ece_calibrated",
                       "test_auto_accept_precision", "test_auto_accept_coverage", "test_docs_fully_auto")


@dataclass
class ExportResult:
    bundle_dir: Path
    manifest: Manifest
    model_uri: str | None
    registered_name: str | None
    registered_version: str | None


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: undefined values (e.g. precision with nothing accepted) become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(metrics.items())}


def _requirements() -> list[str]:
    """medcoder's runtime dependencies pinned to the versions installed here (no pip inference)."""
    pins = []
    for req in importlib.metadata.requires("medcoder") or []:
        if "extra ==" in req:
            continue
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(req.split(";")[0].strip())
    return pins


def _run_inputs(run_id: str, tmp: Path) -> dict[str, Any]:
    run = download_run(run_id, tmp)
    try:
        cal_path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="calibration.json",
                                                            dst_path=str(tmp)))
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"run {run_id} has no calibration.json, so it has no routing policy to export",
            hint=f"run `python scripts/calibrate.py run_id={run_id}` first",
        ) from exc
    metrics = {k: float(v) for k, v in mlflow.get_run(run_id).data.metrics.items() if not k.startswith("epoch_")}
    return {
        "model_dir": run.model_dir,
        "labels_path": run.labels_path,
        "calibration_path": cal_path,
        "train_config": OmegaConf.to_container(run.config(), resolve=False),
        "metrics": metrics,
    }


def _local_path(uri: str | None) -> Path | None:
    """The local folder/file behind a ``file:`` or ``sqlite:`` URI (None for remote stores)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:///"):
        # sqlite:////abs/mlflow.db (absolute) or sqlite:///rel/mlflow.db (relative to the cwd)
        return Path(unquote(uri[len("sqlite:///"):].split("?")[0]))
    if not parsed.scheme and uri:
        return Path(uri)
    return None


def _protected_inputs(cfg: DictConfig, root: Path, run_id: str) -> tuple[list[Path], list[Path]]:
    """What ``output_dir`` must not be or contain (project root, tracking database) and the MLflow
    stores it must not overlap (``mlruns``/``mlartifacts``, the run's and experiment's artifact
    locations): an export must never replace, or write into, what it reads."""
    protected = [root]
    trees = [root / "mlruns", root / "mlartifacts"]
    store = _local_path(tracking_uri(cfg.tracking, root))
    if store is not None:  # a sqlite file must not be replaced; a file store (folder) not entered either
        (trees if store.is_dir() else protected).append(store)
    if cfg.tracking.get("artifact_dir"):
        trees.append(Path(cfg.tracking.artifact_dir))
    try:
        run = mlflow.get_run(run_id)
        trees.append(_local_path(run.info.artifact_uri))
        experiment = mlflow.get_experiment(run.info.experiment_id)
        trees.append(_local_path(experiment.artifact_location))
    except MlflowException:
        pass  # an unknown run id is reported by the download, with its own message
    return protected, [t for t in trees if t is not None]


def export_run(cfg: DictConfig) -> ExportResult:
    """Write the bundle of ``cfg.run_id`` to ``cfg.output_dir`` and (optionally) register it.

    ``overwrite=true`` replaces ``output_dir`` only if it is a medcoder bundle, and ``output_dir``
    may not overlap the project root or the MLflow store (:class:`BundleWriter`); both are checked
    before anything is downloaded.
    """
    root = Path(cfg.paths.root_dir).resolve()
    setup_experiment(cfg.tracking, root)
    run_id = str(cfg.run_id)
    protected, trees = _protected_inputs(cfg, root, run_id)
    # The bundle must load through the one inference path before it is renamed into place; the
    # Coder loaded for that check then computes the MLflow signature (no second load).
    loaded: list[Coder] = []
    with BundleWriter(cfg.output_dir, overwrite=bool(cfg.overwrite), protected=protected,
                      protected_trees=trees) as writer:
        src = _run_inputs(run_id, writer.scratch)
        labels = json.loads(src["labels_path"].read_text())
        calibration = json.loads(src["calibration_path"].read_text())
        dst = writer.bundle_dir
        shutil.copytree(src["model_dir"], dst / "model")
        stacker_path = src["model_dir"].parent / "stacker.json"
        for optional in OPTIONAL_ARTIFACTS:  # a fused run's other views and stacker
            found = src["model_dir"].parent / optional
            if found.is_dir():
                shutil.copytree(found, dst / optional)
            elif found.is_file():
                shutil.copyfile(found, dst / optional)
        shutil.copyfile(src["labels_path"], dst / "labels.json")
        shutil.copyfile(src["calibration_path"], dst / "calibration.json")
        (dst / "metrics.json").write_text(json.dumps(_finite(src["metrics"]), indent=2) + "\n")
        (dst / "MODEL_CARD.md").write_text(render_model_card(
            run_id=run_id, train_config=src["train_config"], labels=labels,
            calibration=calibration, metrics=src["metrics"],
            stacker=json.loads(stacker_path.read_text()) if stacker_path.is_file() else None,
        ))
        manifest = writer.commit(source_run_id=run_id, validate=lambda tmp: loaded.append(Coder.load(tmp)))
    bundle_dir = writer.out
    log.info("bundle %s written to %s", manifest.bundle_id, bundle_dir)
    if not cfg.mlflow_model.log:
        return ExportResult(bundle_dir, manifest, None, None, None)
    loaded[0].bundle_dir = bundle_dir
    return _log_and_register(cfg, run_id, bundle_dir, manifest, labels, calibration, src["metrics"], loaded[0])


def _log_and_register(cfg: DictConfig, run_id: str, bundle_dir: Path, manifest: Manifest,
                      labels: dict, calibration: dict, metrics: dict[str, float], coder: Coder) -> ExportResult:
    from medcoder.tracking.pyfunc import INPUT_EXAMPLE, MedCoderModel, predictions_frame

    example_out = predictions_frame(coder.predict(list(INPUT_EXAMPLE["text"]), list(INPUT_EXAMPLE["id"])))
    with warnings.catch_warnings():
        # MLflow warns that int columns cannot hold missing values; codeset_fy never is missing.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(INPUT_EXAMPLE, example_out, params={"batch_size": 8})
    name = cfg.mlflow_model.registered_model_name or None
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MLFLOW_MODEL_NAME,
            python_model=MedCoderModel(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            input_example=INPUT_EXAMPLE,
            pip_requirements=_requirements(),
            registered_model_name=name,
        )
        mlflow.set_tags({BUNDLE_ID_TAG: manifest.bundle_id, "medcoder.bundle_dir": str(bundle_dir)})
    version = None
    if name:
        version = str(info.registered_model_version)
        tag_version(name, version, {
            BUNDLE_ID_TAG: manifest.bundle_id,  # Coder.load("models:/...") checks it
            "medcoder.codeset_fy": labels.get("codeset_fy"),
            "medcoder.target_precision": calibration.get("targets", {}).get("target_precision"),
            "medcoder.tau_accept": calibration.get("policy", {}).get("tau_accept"),
            "medcoder.source_run_id": run_id,
            **{k: f"{metrics[k]:.4f}" for k in VERSION_METRIC_TAGS if k in metrics},
        })
        set_alias(name, cfg.mlflow_model.alias, version)
        if cfg.mlflow_model.promote and cfg.mlflow_model.alias != CHAMPION:
            set_alias(name, CHAMPION, version)
    return ExportResult(bundle_dir, manifest, info.model_uri, name, version)


__all__ = ["CANDIDATE", "CHAMPION", "ExportResult", "export_run"]
