"""Model registry: register exported bundles, tag versions, move aliases.

Aliases (``candidate``, ``champion``) rather than deprecated stages: ops deploy
``models:/<name>@champion`` and promotion is one alias move, reversible and recorded by MLflow.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from medcoder.constraints import check_path_part
from medcoder.errors import ConfigError

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"

#: MLflow's own alias rule (``mlflow.utils.validation._validate_model_alias_name`` and
#: ``_validate_model_alias_name_reserved``, MLflow 3): word characters and dashes, at most 255,
#: not ``latest`` (any case) and not ``v<digits>`` (version aliases).
_ALIAS_RE = re.compile(r"[\w\-]+")
_VERSION_ALIAS_RE = re.compile(r"[vV]\d+")
MAX_ALIAS_CHARS = 255


def check_alias(key: str, value: Any) -> str:
    """``value`` as an MLflow alias, or a one-line ``ConfigError`` naming ``key``.

    Why here and first: MLflow checked the alias only when it was set, after export had written the
    bundle and registered a version (``export mlflow_model.alias=../../x`` was a traceback after
    half the work), and in a file store an alias is a file name. MLflow's own rule, plus
    :func:`~medcoder.constraints.check_path_part`.
    """
    text = check_path_part(key, value)
    if not _ALIAS_RE.fullmatch(text) or len(text) > MAX_ALIAS_CHARS:
        raise ConfigError(f"{key}={ascii(value)} is not a valid MLflow alias: only letters, digits, '_' and '-'",
                          hint=f"e.g. {key}={CANDIDATE}")
    if text.lower() == "latest" or _VERSION_ALIAS_RE.fullmatch(text):
        raise ConfigError(f"{key}={ascii(value)} is reserved by MLflow ('latest' and v<number> name versions)",
                          hint=f"e.g. {key}={CHAMPION}")
    return text


def check_registered_model_name(key: str, value: Any) -> str:
    """``value`` as a registered model name, or a one-line ``ConfigError`` naming ``key``.

    MLflow's rule (non-blank, no ``/`` or ``:``, not a path that normalises to another name) plus
    :func:`~medcoder.constraints.check_path_part` (a file store makes it a folder name)."""
    text = check_path_part(key, value)
    if ":" in text:
        raise ConfigError(f"{key}={ascii(value)} is not a valid registered model name: it holds ':'",
                          hint=f"e.g. {key}=medcoder-icd10")
    return text


def tag_version(name: str, version: str | int, tags: Mapping[str, Any]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, "" if value is None else str(value))


def set_alias(name: str, alias: str, version: str | int) -> None:
    check_registered_model_name("registered_model_name", name)
    check_alias("alias", alias)
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
    """Point ``to_alias`` at ``version`` (or at whatever ``from_alias`` points to); returns the version.

    Every name is checked (one line) before the registry is asked anything."""
    check_promote_names(name, version=version, from_alias=from_alias, to_alias=to_alias)
    resolved = resolve_version(name, version=version, alias=None if version is not None else from_alias)
    set_alias(name, to_alias, resolved)
    return resolved


def check_promote_names(name: Any, *, version: Any = None, from_alias: Any = CANDIDATE, to_alias: Any = CHAMPION) -> None:
    """The names a promotion uses, checked without touching the registry (one line)."""
    check_registered_model_name("registered_model_name", name)
    if version is None and from_alias is not None:
        check_alias("from_alias", from_alias)
    check_alias("to_alias", to_alias)
