"""Model registry: register exported bundles, tag versions, move aliases.

Aliases (``candidate``, ``champion``) rather than deprecated stages: ops deploy
``models:/<name>@champion`` and promotion is one alias move, reversible and recorded by MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from medcoder.errors import ConfigError

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"


def tag_version(name: str, version: str | int, tags: Mapping[str, Any]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, "" if value is None else str(value))


def set_alias(name: str, alias: str, version: str | int) -> None:
    MlflowClient().set_registered_model_alias(name, alias, str(version))
    log.info("models:/%s@%s -> version %s", name, alias, version)


def resolve_version(name: str, *, version: str | int | None = None, alias: str | None = None) -> str:
    """The version number behind ``version`` or ``alias``; a clear ConfigError if either is unknown."""
    client = MlflowClient()
    try:
        if version is not None:
            return str(client.get_model_version(name, str(version)).version)
        if alias is not None:
            return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        what = f"version={version}" if version is not None else f"alias={alias!r}"
        raise ConfigError(f"registered model {name!r} has no {what}",
                          hint="list versions with `mlflow ui` or export one with scripts/export.py") from exc
    raise ConfigError("give a version or an alias to promote", hint="e.g. version=3 or from_alias=candidate")


def promote(name: str, *, version: str | int | None = None, from_alias: str | None = CANDIDATE,
            to_alias: str = CHAMPION) -> str:
    """Point ``to_alias`` at ``version`` (or at whatever ``from_alias`` points to); returns the version."""
    resolved = resolve_version(name, version=version, alias=None if version is not None else from_alias)
    set_alias(name, to_alias, resolved)
    return resolved
