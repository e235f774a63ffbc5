"""``scripts/promote.py``: point an alias (default ``@champion``) of a registered model at a version."""

from __future__ import annotations

from omegaconf import DictConfig

from medcoder.tracking import setup_experiment
from medcoder.tracking.registry import check_promote_names, promote
from medcoder.workflows.factories import build_tracking

__all__ = ["check_promote_config", "promote_from_config"]


def check_promote_config(cfg: DictConfig) -> None:
    """The model name and aliases, checked before the tracking store is opened (one line):
    ``to_alias=../../etc`` used to reach MLflow, and a traceback, after the store was set up."""
    check_promote_names(cfg.registered_model_name, version=cfg.version, from_alias=cfg.from_alias,
                        to_alias=cfg.to_alias)


def promote_from_config(cfg: DictConfig) -> str:
    """Move ``cfg.to_alias`` to ``cfg.version`` (or to the version behind ``cfg.from_alias``)."""
    check_promote_config(cfg)
    setup_experiment(build_tracking(cfg))
    return promote(cfg.registered_model_name, version=cfg.version, from_alias=cfg.from_alias,
                   to_alias=cfg.to_alias)
