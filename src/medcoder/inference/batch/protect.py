"""Where batch prediction must never write, and which existing files it may replace.

Why this module: ``predict output=<the registry's bundle>/p.jsonl`` was accepted, and every later
fresh load of that registered model failed its hash check; ``summary_path=mlflow.db`` silently
replaced the tracking store. So an output (predictions, audit log, summary) is refused when it lies

* inside an MLflow artifact store (:func:`artifact_stores`: ``mlruns/`` and ``mlartifacts/`` of the
  project, the configured ``tracking.artifact_dir``, a file store's folder, and the artifact
  location of every experiment a local SQLite or file store records), where runs and registered
  models keep their files;
* inside any bundle (a folder with a medcoder ``manifest.json`` above the output) or MLflow model
  (an ``MLmodel`` file above it), whichever bundle this run loads: a bundle is verified by the
  hash of every file, so one more file breaks it;
* inside the cache of bundles downloaded from MLflow (:func:`~medcoder.inference.bundle.cache.bundle_cache_root`);

and an existing output file is replaced only if medcoder wrote it (:func:`is_our_output`: the
predictions/audit/summary formats are recognisable), never another file that happens to have the
name. Everything here reads the file system only (the SQLite store is opened read-only, never
created), so it runs before the bundle loads and without MLflow.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote, unquote, urlparse
from urllib.request import url2pathname

from medcoder.errors import ConfigError, MedcoderError
from medcoder.inference.bundle.cache import bundle_cache_root
from medcoder.inference.bundle.manifest import MANIFEST

#: A protected place: (what it is, for the message; its resolved path).
Protected = tuple[str, Path]

#: Fields every row of a medcoder predictions or audit JSONL/CSV/Parquet file has.
OUTPUT_ROW_KEYS = frozenset({"id", "document_decision", "bundle_id", "input_sha256"})
#: Keys every medcoder batch summary has.
SUMMARY_KEYS = frozenset({"bundle_id", "notes", "predictions", "audit"})
#: A JSONL line / summary longer than this is not read to recognise the file (and so not ours).
_PEEK_BYTES = 16 << 20


def resolve(path: Path, key: str, error: type[MedcoderError] = ConfigError) -> Path:
    """``path.resolve()``, with a symbolic link loop (Python 3.11 raises ``RuntimeError``) or an
    unreadable link as a one-line ``error`` naming the setting, instead of a traceback."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:
        reason = "a symbolic link loop" if isinstance(exc, RuntimeError) else (exc.strerror or type(exc).__name__)
        raise error(f"{key}={path}: cannot be resolved ({reason})", hint="remove or fix the link") from None


# -- artifact stores ---------------------------------------------------------------------------------------
def _local(location: str | None, base: Path) -> Path | None:
    """The folder of a ``file:`` URI or plain path (relative: against ``base``); None for remote
    locations (``s3:``, ``mlflow-artifacts:``, ``http:``...)."""
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        path = Path(url2pathname(unquote(parsed.path)))
    elif parsed.scheme == "" or (len(parsed.scheme) == 1 and location[1:3] in (":\\", ":/")):
        path = Path(location)
    else:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _sqlite_path(uri: str, base: Path) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI (SQLAlchemy: the path follows ``///``)."""
    rest = uri[len("sqlite:///"):].split("?", 1)[0]
    if not uri.startswith("sqlite:///") or not rest or rest == ":memory:":
        return None
    path = Path(rest).expanduser()
    return path if path.is_absolute() else base / path


def _sqlite_locations(db: Path) -> list[str]:
    """Every experiment's artifact location in an MLflow SQLite store, read-only (``mode=ro``: a
    missing file is not created, a running server is not disturbed); nothing if unreadable."""
    if not db.is_file():
        return []
    try:
        con = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return []
    try:
        return [row[0] for row in con.execute("SELECT artifact_location FROM experiments") if row[0]]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def _file_store_locations(store: Path) -> list[str]:
    """The ``artifact_location`` of each experiment of an MLflow file store (``<id>/meta.yaml``)."""
    out = []
    for meta in sorted(store.glob("*/meta.yaml"))[:10_000]:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in meta.read_text("utf-8").splitlines():
                if line.startswith("artifact_location:"):
                    out.append(line.split(":", 1)[1].strip().strip("'\""))
    return out


def artifact_stores(tracking_uri: str | None, root_dir: str | Path,
                    artifact_dir: str | Path | None = None) -> list[Protected]:
    """The local folders where MLflow keeps artifacts for this configuration.

    ``root_dir``'s ``mlruns/`` and ``mlartifacts/`` (MLflow's and this project's defaults), the
    configured ``artifact_dir``, the folder of a file store (``file:`` URI or plain path), and the
    artifact location of every experiment recorded by a local SQLite or file store. Remote stores
    (``http:``, databases, ``s3:``) add nothing: what they hold is not on this disk.
    """
    root = Path(root_dir).expanduser().resolve()
    cwd = Path.cwd()
    found: list[Path] = [root / "mlruns", root / "mlartifacts"]
    if artifact_dir:
        found.append(Path(artifact_dir).expanduser() if Path(artifact_dir).is_absolute() else root / artifact_dir)
    uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith("sqlite:"):
        db = _sqlite_path(uri, cwd)
        locations = _sqlite_locations(db) if db is not None else []
    else:
        store = _local(uri, cwd)
        locations = []
        if store is not None:
            found.append(store)
            locations = _file_store_locations(store)
    for location in locations:
        path = _local(location, cwd)
        if path is not None:
            found.append(path)
    out: list[Protected] = []
    for path in found:
        with contextlib.suppress(RuntimeError, OSError):
            out.append(("an MLflow artifact store", path.resolve()))
    return out


# -- bundles, models, the cache ----------------------------------------------------------------------------
def _is_bundle_manifest(path: Path) -> bool:
    """A medcoder bundle's ``manifest.json`` (its keys, not only its name)."""
    try:
        if not path.is_file() or path.stat().st_size > _PEEK_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"schema_version", "bundle_id", "files"} <= set(data)


def protected_place(resolved: Path, stores: Iterable[Protected] = ()) -> str | None:
    """What protected place ``resolved`` (an output path, resolved) lies in, or None.

    ``stores``: folders the caller knows of (:func:`artifact_stores`); bundles, MLflow models and
    the bundle cache are found here, by walking up from the output's folder.
    """
    for what, folder in stores:
        if resolved == folder or folder in resolved.parents:
            return f"inside {what} ({folder})"
    with contextlib.suppress(RuntimeError, OSError):
        cache = bundle_cache_root().resolve()
        if resolved == cache or cache in resolved.parents:
            return f"inside the cache of bundles downloaded from MLflow ({cache})"
    for folder in resolved.parents:
        if _is_bundle_manifest(folder / MANIFEST):
            return f"inside a bundle ({folder})"
        if (folder / "MLmodel").is_file():
            return f"inside an MLflow model ({folder})"
    return None


# -- existing outputs --------------------------------------------------------------------------------------
def _first_line(path: Path) -> bytes:
    with open(path, "rb") as fh:
        while line := fh.readline(_PEEK_BYTES):
            if line.strip():
                return line
    return b""


def _looks_like_rows(path: Path, fmt: str) -> bool:
    """A predictions or audit file in medcoder's format: the first JSONL row, the CSV header or
    the Parquet schema has :data:`OUTPUT_ROW_KEYS`."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return set(pq.read_schema(path).names) >= OUTPUT_ROW_KEYS
        line = _first_line(path)
        if fmt == "csv":
            header = next(csv.reader([line.decode("utf-8-sig")]), [])
            return set(header) >= OUTPUT_ROW_KEYS
        row = json.loads(line)
        return isinstance(row, dict) and set(row) >= OUTPUT_ROW_KEYS
    except Exception:  # noqa: BLE001 - any failure to read it means: not recognisably ours
        return False


def _looks_like_summary(path: Path) -> bool:
    try:
        if path.stat().st_size > _PEEK_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and set(data) >= SUMMARY_KEYS


def is_our_output(path: Path, role: str, fmt: str) -> bool:
    """Whether the existing file ``path`` is one medcoder's batch prediction wrote for ``role``
    (``output``, ``audit.path`` or ``summary_path``) in format ``fmt``: a regular file (not a
    link, folder or device) in that output's recognisable format."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if role == "summary_path":
        return _looks_like_summary(path)
    return _looks_like_rows(path, fmt if role == "output" else "jsonl")


def check_replaceable(named: Sequence[tuple[str, Path]], fmt: str) -> None:
    """Refuse to replace an existing output file that medcoder did not write (one line, naming it)."""
    for role, path in named:
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_symlink():
            raise ConfigError(f"{role}={path} is an existing symbolic link; predict replaces only files it wrote",
                              hint="choose another path, or remove the link")
        if not is_our_output(path, role, fmt):
            raise ConfigError(f"{role}={path} exists and is not a medcoder {_ROLE_NAMES[role]} file; "
                              "predict replaces only files it wrote",
                              hint="choose another path, or move that file away first "
                                   "(predict has no overwrite setting for other files)")


_ROLE_NAMES = {"output": "predictions", "audit.path": "audit log", "summary_path": "summary"}
