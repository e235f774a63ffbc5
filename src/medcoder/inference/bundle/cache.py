"""A local cache of bundles downloaded from MLflow (``Coder.load("models:/name@alias")``).

Why a cache: loading ``models:/name@alias`` used to download ~94 MB into a fresh system temp
folder on *every* load and never remove it. Now the bundle of one registered version (or one
run's artifact) is downloaded once, through a staging folder beside its cache entry, verified,
renamed into place and reused; the cache is bounded (least recently used entries go first).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from medcoder.atomic import make_staging_dir, sweep_stale
from medcoder.errors import BundleError
from medcoder.inference.bundle.manifest import BUNDLE_ID_TAG, MANIFEST, Manifest
from medcoder.inference.bundle.verify import check_bundle_id, verify_bundle

log = logging.getLogger(__name__)

#: Default number of cached bundles kept (least recently used go first); env MEDCODER_BUNDLE_CACHE_MAX.
DEFAULT_CACHE_ENTRIES = 4
#: A cached bundle used this recently is never pruned (another process may be loading it).
CACHE_GRACE_S = 600.0


def bundle_cache_root() -> Path:
    """Where bundles downloaded from MLflow are kept: ``$MEDCODER_CACHE_DIR/mlflow-bundles``, else
    ``$XDG_CACHE_HOME/medcoder/mlflow-bundles``, else ``~/.cache/medcoder/mlflow-bundles``."""
    base = os.environ.get("MEDCODER_CACHE_DIR")
    if base:
        return Path(base).expanduser() / "mlflow-bundles"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medcoder" / "mlflow-bundles"


def cache_key_part(text: str) -> str:
    """``text`` as one safe folder name (a model name may hold any character)."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80]
    if clean != text or not clean or clean.startswith("."):
        clean = f"{clean.lstrip('.')[:60]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return clean


def _cache_max_entries() -> int:
    try:
        return max(1, int(os.environ.get("MEDCODER_BUNDLE_CACHE_MAX", DEFAULT_CACHE_ENTRIES)))
    except ValueError:
        return DEFAULT_CACHE_ENTRIES


def _discard(path: Path) -> None:
    """Remove a cache entry: first renamed to a staging name, so no reader sees half of it (a
    symlink put in its place is moved and unlinked, never followed)."""
    if not (path.is_symlink() or path.exists()):
        return
    trash = make_staging_dir(path.parent, path.name)
    with contextlib.suppress(OSError):
        os.replace(path, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def prune_bundle_cache(root: Path, *, keep: int, current: Path | None = None) -> list[Path]:
    """Keep the ``keep`` most recently used cache entries (plus ``current`` and any used in the
    last :data:`CACHE_GRACE_S` seconds); remove the rest. Entries sit at depth 4 under ``root``."""
    # Entries are folders this module renamed into place: a symlink in the cache (or on the way to
    # an entry) is never followed to prune what it points at.
    found = [p.parent for p in root.glob("*/*/*/*/" + MANIFEST)]
    entries = sorted((e for e in found if not any(q.is_symlink() for q in (e, *e.parents) if root in q.parents)),
                     key=lambda p: p.lstat().st_mtime, reverse=True)
    now = time.time()
    removed = []
    for entry in entries[keep:]:
        if entry == current or now - entry.lstat().st_mtime < CACHE_GRACE_S:
            continue
        _discard(entry)
        removed.append(entry)
    return removed


def cached_bundle(key: Sequence[str], download: Callable[[Path], Path], *, source: str,
                  expected_bundle_id: str | None = None, strict: bool = True, reuse: bool = True,
                  root: Path | None = None) -> tuple[Path, Manifest]:
    """A verified bundle for ``key`` from the local cache, downloading it on a miss.

    Why a cache: loading ``models:/name@alias`` used to download ~94 MB into a fresh system temp
    folder on *every* load and never remove it. Now the bundle of one registered version (or one
    run's artifact) is downloaded once into ``<bundle_cache_root()>/<key...>``, through a staging
    folder beside it that is renamed into place, and reused.

    * Every use verifies the cached copy against its manifest (hashes, no extra files, no code);
      a copy that fails, or whose id differs from ``expected_bundle_id``, is downloaded again.
    * A fresh download whose id differs from ``expected_bundle_id`` is a ``BundleError`` when
      ``strict`` (a registered version's tag), else a warning (a run's tag names its latest export).
    * ``reuse=False`` (URIs that name no fixed version, e.g. a stage) always downloads, replacing
      the one entry kept for that URI.
    * Bounded: at most ``$MEDCODER_BUNDLE_CACHE_MAX`` (default 4) entries, least recently used
      removed first (never one used in the last 10 minutes); delete the folder to empty it.
    * ``download(dst)`` must download into ``dst`` and return the bundle folder inside it.
    """
    cache = (root or bundle_cache_root()).expanduser()
    entry = cache.joinpath(*(cache_key_part(k) for k in key))
    entry.parent.mkdir(parents=True, exist_ok=True)
    if reuse and not entry.is_symlink() and (entry / MANIFEST).is_file():  # a link is not our entry
        try:
            manifest = verify_bundle(entry)
        except BundleError as exc:
            log.warning("cached bundle %s failed verification (%s); downloading it again", entry, exc.message)
        else:
            if not expected_bundle_id or manifest.bundle_id == expected_bundle_id:
                os.utime(entry)
                prune_bundle_cache(cache, keep=_cache_max_entries(), current=entry)
                return entry, manifest
            log.info("cached bundle %s is %s, the registry names %s; downloading again", entry,
                     manifest.bundle_id, expected_bundle_id)
    sweep_stale(entry.parent)  # staging folders of killed downloads
    staging = make_staging_dir(entry.parent, entry.name)
    try:
        found = download(staging / "download")
        manifest = verify_bundle(found)
        if strict:
            check_bundle_id(manifest, expected_bundle_id, source=source)
        elif expected_bundle_id and manifest.bundle_id != expected_bundle_id:
            log.warning("bundle=%s has bundle_id %s; the run's tag %s names %s (a later export)", source,
                        manifest.bundle_id, BUNDLE_ID_TAG, expected_bundle_id)
        _discard(entry)
        try:
            os.replace(found, entry)
        except OSError:  # another process put the same entry there meanwhile: use it if it verifies
            manifest = verify_bundle(entry)
            if strict:
                check_bundle_id(manifest, expected_bundle_id, source=source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    os.utime(entry)
    prune_bundle_cache(cache, keep=_cache_max_entries(), current=entry)
    return entry, manifest
