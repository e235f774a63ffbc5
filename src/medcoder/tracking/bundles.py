"""Bundles behind MLflow URIs (``models:/name@alias``, ``runs:/…``): the resolver that
``Coder.load`` finds through the ``medcoder.bundle_resolvers`` entry point.

Why here: only the tracking layer talks to MLflow; inference asks for "a verified bundle folder for
this URI" without knowing MLflow exists (see ``medcoder.inference.coder.RESOLVER_GROUP``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from medcoder.errors import BundleError
from medcoder.inference.bundle import (
    BUNDLE_ID_TAG,
    Manifest,
    cached_bundle,
    check_bundle_id,
    verify_bundle,
)

log = logging.getLogger(__name__)

__all__ = ["registered_version", "resolve_mlflow_bundle"]


def resolve_mlflow_bundle(uri: str, download_dir: str | Path | None = None) -> tuple[Path, Manifest]:
    """Download (or reuse from the cache) the bundle behind an MLflow URI.

    ``models:/name@alias`` and ``models:/name/<n>`` are resolved to a version number first and
    that exact version is downloaded (an alias moved meanwhile cannot mix versions); the cache
    key is (tracking + registry URI, name, version). ``runs:/<id>/<path>`` is keyed by run and
    path. Other URIs (stages, ``mlflow-artifacts:/``) are downloaded on every load into one
    cache folder per URI.
    """
    def fail(exc: Exception) -> BundleError:
        return BundleError(
            f"bundle={uri}: cannot download it from {mlflow.get_tracking_uri()} ({str(exc).splitlines()[0]})",
            hint="check the model name and alias (scripts/promote.py) and the tracking URI",
        )

    store = hashlib.sha256(f"{mlflow.get_tracking_uri()}\n{mlflow.get_registry_uri()}".encode()).hexdigest()[:16]
    source, expected, strict, reuse = uri, None, True, True
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    key: tuple[str, ...] = (store, "uris", digest, "latest")
    try:
        client = mlflow.MlflowClient()
        if uri.startswith("models:/"):
            name, version = registered_version(client, uri)
            if version is None:
                reuse = False
            else:
                mv = client.get_model_version(name, version)
                expected = (mv.tags or {}).get(BUNDLE_ID_TAG) or None
                if expected is None:
                    log.warning("bundle=%s: version %s has no %s tag; only the manifest is checked", uri,
                                version, BUNDLE_ID_TAG)
                source, key = f"models:/{name}/{version}", (store, "models", name, version)
        elif uri.startswith("runs:/"):
            run_id, _, artifact_path = uri[len("runs:/"):].partition("/")
            run = client.get_run(run_id)
            # The run's tag names its latest export; an older runs:/ path may hold an earlier one.
            expected, strict = run.data.tags.get(BUNDLE_ID_TAG) or None, False
            key = (store, "runs", run_id, hashlib.sha256(artifact_path.encode()).hexdigest()[:16])
        else:
            reuse = False
    except MlflowException as exc:
        raise fail(exc) from exc

    def download(dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst)))
        except (MlflowException, OSError) as exc:
            raise fail(exc) from exc
        # The pyfunc model keeps the bundle as artifacts/<bundle folder name>/ (one bundle per model).
        found = sorted(p.parent for p in (local / "artifacts").glob("*/manifest.json"))
        if (local / "manifest.json").is_file():
            found.append(local)
        if len(found) == 1:
            return found[0]
        raise BundleError(f"bundle={uri}: the MLflow model holds no medcoder bundle",
                          hint="register models with scripts/export.py")

    if download_dir is not None:
        root = download(Path(download_dir))
        manifest = verify_bundle(root)
        if strict:
            check_bundle_id(manifest, expected, source=uri)
        return root, manifest
    return cached_bundle(key, download, source=uri, expected_bundle_id=expected, strict=strict, reuse=reuse)


def registered_version(client: Any, uri: str) -> tuple[str, str | None]:
    """``(name, version)`` of ``models:/name@alias`` or ``models:/name/<n>``; version None for
    other forms (a stage such as ``models:/name/Production``, a logged-model id)."""
    rest = uri[len("models:/"):].rstrip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.rpartition("/")
    if name and version.isdigit():
        return name, version
    return rest, None
