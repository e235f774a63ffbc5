"""medcoder.tracking: MLflow helpers (store set-up, config logging, per-epoch metrics)."""

from medcoder.tracking.mlflow_utils import (
    EpochMetricsCallback,
    TrackingSettings,
    flatten,
    git_sha,
    log_config,
    log_environment,
    setup_experiment,
    tracking_uri,
)

__all__ = [
    "EpochMetricsCallback",
    "flatten",
    "git_sha",
    "log_config",
    "log_environment",
    "TrackingSettings",
    "setup_experiment",
    "tracking_uri",
]
