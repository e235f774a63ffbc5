"""``scripts/promote.py``: point an alias (default ``@champion``) of a registered model at a version."""

from __future__ import annotations

from omegaconf import DictConfig

from medcoder.tracking import setup_experiment
from medcoder.tracking.registry import promote
from medcoder.workflows.factories import build_tracking

__all__ = ["promote_from_config"]


def promote_from_config(cfg: DictConfig) -> str:
    """Move ``cfg.to_alias`` to ``cfg.version`` (or to the version behind ``cfg.from_alias``)."""
    setup_experiment(build_tracking(cfg))
    return promote(cfg.registered_model_name, version=cfg.version, from_alias=cfg.from_alias,
                   to_alias=cfg.to_alias)
