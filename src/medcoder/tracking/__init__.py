"""medcoder.tracking: MLflow helpers (store set-up, config logging, per-epoch metrics)."""

from medcoder.tracking.mlflow_utils import (
    EpochMetricsCallback,
    config_container,
    flatten,
    git_sha,
    log_config,
    log_environment,
    setup_experiment,
    tracking_uri,
)

__all__ = [
    "EpochMetricsCallback",
    "config_container",
    "flatten",
    "git_sha",
    "log_config",
    "log_environment",
    "setup_experiment",
    "tracking_uri",
]
