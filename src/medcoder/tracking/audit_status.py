"""A bundle's audit status in the MLflow registry: the model version's tag ``medcoder.audit_status``.

Why here: only the tracking layer talks to MLflow. ``Coder.load("models:/…")`` finds
:func:`registry_status_reader` through the ``medcoder.audit_status_readers`` entry point
(``medcoder.inference.audit_status.READER_GROUP``), and the review workflow publishes a status with
:func:`publish_status` without caring whether the bundle is a folder or a registered version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from medcoder.errors import BundleError
from medcoder.inference.audit_status import (
    AUDIT_STATUS_TAG,
    AuditStatus,
    AuditStatusError,
    read_status_file,
    write_status_file,
)
from medcoder.inference.bundle import BUNDLE_ID_TAG, read_manifest
from medcoder.tracking.bundles import registered_version

log = logging.getLogger(__name__)

__all__ = [
    "find_versions_of_bundle",
    "pin_version",
    "publish_status",
    "read_registry_status",
    "read_status",
    "registry_status_reader",
    "write_registry_status",
]

HINT = "recompute it: python scripts/review.py action=audit_status"


def _version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def _resolve(uri: str) -> tuple[str, str]:
    """``(name, version)`` of ``models:/name@alias`` or ``models:/name/N`` (alias resolved now)."""
    try:
        name, version = registered_version(MlflowClient(), uri)
    except MlflowException as exc:
        raise AuditStatusError(f"bundle={uri}: cannot resolve the model version ({str(exc).splitlines()[0]})",
                               hint="check the model name, the alias and the tracking URI") from None
    if version is None:
        raise AuditStatusError(f"bundle={uri}: an audit status needs models:/<name>@<alias> or models:/<name>/<n>",
                               hint="name a registered version")
    return name, version


def pin_version(uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<the version the alias names now>``; a
    ``models:/name/N`` as is. Why: a status recorded against an alias would follow the alias when it
    moves, and the old bundle's verdicts would be published onto the new bundle's version (refused
    there, so the old bundle's status would stop being published at all). Raises
    :class:`AuditStatusError` (one line) when the registry cannot resolve it."""
    return _version_uri(*_resolve(uri))


def read_registry_status(name: str, version: str | int, *, bundle_id: str | None = None) -> AuditStatus | None:
    """The version's status tag (None: no tag, the bundle is active).

    Raises :class:`AuditStatusError` (the caller fails closed) when the registry cannot be asked,
    the tag is corrupt, or it (or the version's ``medcoder.bundle_id`` tag) names another bundle
    than ``bundle_id``.
    """
    where = f"{_version_uri(name, str(version))} tag {AUDIT_STATUS_TAG}"
    try:
        mv = MlflowClient().get_model_version(name, str(version))
    except MlflowException as exc:
        raise AuditStatusError(f"{where}: audit status unreadable (registry: {str(exc).splitlines()[0][:200]})",
                               hint="check the tracking URI and that the registry is reachable") from None
    tags = mv.tags or {}
    if bundle_id is not None and tags.get(BUNDLE_ID_TAG) not in (None, "", bundle_id):
        raise AuditStatusError(f"{_version_uri(name, str(version))}: tag {BUNDLE_ID_TAG}="
                               f"{tags.get(BUNDLE_ID_TAG)!r} is not the loaded bundle {bundle_id!r}",
                               hint="reload the model (its alias moved meanwhile)")
    raw = tags.get(AUDIT_STATUS_TAG)
    if raw is None:
        return None
    status = AuditStatus.from_json(raw, where=where)
    return status if bundle_id is None else status.check_bundle(bundle_id, where=where)


def registry_status_reader(uri: str, *, bundle_id: str | None = None) -> Callable[[], AuditStatus | None]:
    """A reader of the status of the version ``uri`` names *now* (entry point
    ``medcoder.audit_status_readers``): an alias is resolved once, here, so a later alias move
    cannot make a loaded model read another version's status. With ``bundle_id`` (what
    ``Coder.load`` passes) every read also checks the version is that bundle's."""
    name, version = _resolve(uri)

    def read() -> AuditStatus | None:
        return read_registry_status(name, version, bundle_id=bundle_id)

    read.where = f"{_version_uri(name, version)} tag {AUDIT_STATUS_TAG}"  # type: ignore[attr-defined]
    return read


def find_versions_of_bundle(bundle_id: str) -> list[tuple[str, str]]:
    """Every registered ``(name, version)`` whose ``medcoder.bundle_id`` tag is ``bundle_id``
    (how a served model, loaded from its artifacts, finds the version(s) it is)."""
    client = MlflowClient()
    found = client.search_model_versions(f"tags.`{BUNDLE_ID_TAG}` = '{bundle_id}'")
    return sorted({(mv.name, str(mv.version)) for mv in found})


def bundle_status_reader(bundle_id: str, versions: list[tuple[str, str]]) -> Callable[[], AuditStatus | None]:
    """A reader over every registered version of one bundle: suspended if any of them is
    (a suspension is about the bundle's auto-accepts, whichever version audited it); an error on any
    of them fails closed; else the first status found (or None)."""

    def read() -> AuditStatus | None:
        statuses = [read_registry_status(n, v, bundle_id=bundle_id) for n, v in versions]
        present = [s for s in statuses if s is not None]
        suspended = [s for s in present if s.suspended]
        return (suspended or present or [None])[0]

    read.where = ", ".join(f"{_version_uri(n, v)} tag {AUDIT_STATUS_TAG}" for n, v in versions)  # type: ignore[attr-defined]
    return read


def write_registry_status(name: str, version: str | int, status: AuditStatus) -> str:
    """Set the version's status tag; refuses a status of another bundle than the version's
    ``medcoder.bundle_id``. Returns where it was written (``models:/name/N tag …``)."""
    client = MlflowClient()
    where = f"{_version_uri(name, str(version))} tag {AUDIT_STATUS_TAG}"
    try:
        mv = client.get_model_version(name, str(version))
        expected = (mv.tags or {}).get(BUNDLE_ID_TAG)
        if expected and expected != status.bundle_id:
            raise BundleError(f"{where}: status names bundle {status.bundle_id!r}, the version is {expected!r}",
                              hint="publish the status of this version's bundle")
        client.set_model_version_tag(name, str(version), AUDIT_STATUS_TAG, status.to_json())
    except MlflowException as exc:
        raise BundleError(f"{where}: cannot write the audit status ({str(exc).splitlines()[0][:200]})",
                          hint="check the tracking URI and your registry permissions") from None
    log.info("audit status %s -> %s", status.state, where)
    return where


def publish_status(ref: str | Path, status: AuditStatus) -> str:
    """Write ``status`` where the bundle ``ref`` keeps it: the file beside a bundle folder, or the
    tag of the version a ``models:/`` URI names now. Returns where (a path or ``models:/name/N tag …``)."""
    text = str(ref)
    if text.startswith("models:/"):
        return write_registry_status(*_resolve(text), status)
    folder = Path(text).expanduser()
    bundle_id = read_manifest(folder).bundle_id
    if status.bundle_id != bundle_id:
        raise BundleError(f"{folder}: status names bundle {status.bundle_id!r}, the folder holds {bundle_id!r}",
                          hint="publish the status of this folder's bundle")
    return str(write_status_file(folder, status))


def read_status(ref: str | Path) -> AuditStatus | None:
    """The status of the bundle ``ref`` (folder or ``models:/`` URI); None: none, the bundle is
    active. Raises :class:`AuditStatusError` where serving would fail closed."""
    text = str(ref)
    if text.startswith("models:/"):
        return read_registry_status(*_resolve(text))
    folder = Path(text).expanduser()
    return read_status_file(folder, read_manifest(folder).bundle_id)
