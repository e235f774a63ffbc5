"""MLflow helpers: where runs go, what each run records (config, params, tags), per-epoch logging.

Default store: ``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts`` (DESIGN.md).
Nothing here logs note text: configs and metrics only.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import yaml
from transformers import TrainerCallback

MAX_PARAM_CHARS = 500
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs go (the ``tracking`` group, built once by the workflow that reads the config):
    ``uri`` None = the embedded SQLite file ``<root_dir>/mlflow.db``; ``artifact_dir`` None =
    ``<root_dir>/mlartifacts``. A plain value object, so nothing below the workflows sees a config."""

    root_dir: Path
    uri: str | None = None
    experiment_name: str = "medcoder"
    artifact_dir: Path | None = None
    log_model: bool = True

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], root_dir: str | Path) -> TrackingSettings:
        """From the ``tracking`` group's keys (unknown keys are the caller's to refuse)."""
        artifact_dir = values.get("artifact_dir")
        return cls(root_dir=Path(root_dir).resolve(), uri=str(values["uri"]) if values.get("uri") else None,
                   experiment_name=str(values.get("experiment_name") or "medcoder"),
                   artifact_dir=Path(artifact_dir) if artifact_dir else None,
                   log_model=bool(values.get("log_model", True)))


def tracking_uri(settings: TrackingSettings) -> str:
    """The configured URI, else the embedded SQLite file in the project root."""
    if settings.uri:
        return settings.uri
    return f"sqlite:///{settings.root_dir / 'mlflow.db'}"


def setup_experiment(settings: TrackingSettings) -> str:
    """Point MLflow at the store and return the experiment id (created with local artifacts)."""
    mlflow.set_tracking_uri(tracking_uri(settings))
    name = settings.experiment_name
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        artifacts = Path(settings.artifact_dir or settings.root_dir / "mlartifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    else:
        experiment_id = exp.experiment_id
        if not settings.uri:
            warn_if_artifacts_elsewhere(exp.artifact_location, settings.root_dir, settings.artifact_dir)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _local_path(location: str) -> Path | None:
    """The folder of a ``file:`` URI or plain path; None for remote stores (s3:, dbfs:, http:)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and location[1:3] in (":\\", ":/")):  # Windows drive
        return Path(location)
    return None


def warn_if_artifacts_elsewhere(artifact_location: str, root_dir: str | Path,
                                artifact_dir: str | Path | None = None) -> bool:
    """Warn (one line) when the default store's experiment keeps artifacts outside this project.

    Why: MLflow stores an experiment's artifact location as an absolute path (a relative one is
    resolved at creation), so a copied checkout's ``mlflow.db`` still points at the *original*
    checkout's ``mlartifacts`` and every new run writes there. Returns whether it warned.
    """
    path = _local_path(artifact_location)
    if path is None:
        return False
    path = path.resolve()
    allowed = [Path(root_dir).resolve()] + ([Path(artifact_dir).resolve()] if artifact_dir else [])
    if any(path == a or a in path.parents for a in allowed):
        return False
    log.warning(
        "MLflow experiment stores artifacts in %s, outside this project (%s): runs will write there "
        "(a copied mlflow.db keeps the original's paths); use a fresh tracking.experiment_name=... "
        "or delete/move mlflow.db to start a store of this project", path, Path(root_dir).resolve(),
    )
    return True


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


def log_config(config: Mapping[str, Any]) -> None:
    """``config.yaml`` artifact + flattened params, from the composed config as plain Python
    (the workflow resolves it: ``medcoder.workflows.factories.config_dict``)."""
    data = dict(config)
    mlflow.log_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "config.yaml")
    params = flatten(data)
    items = list(params.items())
    for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[start : start + 100]))


def environment_lock() -> str:
    """``name==version`` of every installed distribution, sorted: what ``pip freeze`` would list.

    Read through :mod:`importlib.metadata` rather than a ``pip`` subprocess: no dependency on pip
    being importable in the run's interpreter, and it is what was actually imported from.
    """
    import importlib.metadata as md
    import platform

    seen: dict[str, str] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    header = f"# python {platform.python_version()} on {platform.platform()}\n"
    return header + "\n".join(seen[k] for k in sorted(seen)) + "\n"


def log_environment() -> None:
    """``environment/requirements.txt`` artifact: the exact package set that produced the run."""
    mlflow.log_text(environment_lock(), "environment/requirements.txt")


def git_sha(cwd: str | Path | None = None) -> str:
    """The commit of the code that ran ("unknown" outside a git checkout), "+dirty" if modified."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class EpochMetricsCallback(TrainerCallback):
    """Logs each epoch's dev metrics as ``epoch_dev_<name>`` (step = epoch), so the final
    ``dev_<name>`` keys keep the best checkpoint's values."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: D102
        if not metrics or mlflow.active_run() is None:
            return
        step = round(state.epoch or 0)
        values = {
            f"epoch_dev_{k.removeprefix('eval_')}": float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not k.endswith(("_runtime", "_per_second"))
        }
        mlflow.log_metrics(values, step=step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
        if logs and "loss" in logs and mlflow.active_run() is not None:
            mlflow.log_metric("train_loss", float(logs["loss"]), step=state.global_step)
