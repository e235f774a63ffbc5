"""The bundle: the one directory an ops team moves around, and its manifest.

Layout (**contract**, ``../shared/DESIGN.md``)::

    bundle/
      model/            HF save_pretrained + tokenizer (no code: schema 2); the neural view
      scorers/<name>/   the other views of a fused bundle (schema 3; JSON/npz)
      stacker.json      the fused bundle's stacker, naming its views (without ``neural``: no model/)
      labels.json       codes, descriptions, training frequency, code-set fiscal year
      calibration.json  calibrator, thresholds, routing policy, guarantee, targets
      metrics.json      dev/test metrics of this exact bundle
      MODEL_CARD.md     data, metrics, intended use, limits
      manifest.json     schema version, medcoder version, sha256 of every other file

Why a manifest with hashes: an auditor must be able to show that the model that made a decision is
byte-for-byte the one that was validated. ``bundle_id`` is derived from the file hashes, so two
bundles with the same id hold the same bytes, and any edit is detected at load time.

Why schema 2 holds no code: schema 1 shipped ``model/modeling_medcoder.py`` and an ``auto_map`` so
``AutoModel.from_pretrained(..., trust_remote_code=True)`` worked without importing medcoder;
that route runs whatever ``.py`` a bundle holds, so a bundle became a way to run code. Schema 2
bundles carry no ``.py`` and no ``auto_map`` (``verify_bundle`` refuses both); plain transformers
loads ``model/`` after ``import medcoder.modeling`` (which registers the classes).

Why a staging folder + rename: an interrupted export must leave nothing that looks like a bundle.
The staging folder (``.<name>.<random>.partial`` beside the target) also holds the downloaded
run artifacts, so a killed export leaves one folder there, marked with the pid that made it, and
the next export into that parent folder removes it once that process is gone.

Why ``quantization`` lives in the manifest (schema 4): it is an inference option, applied by
``Coder.load`` to the stored fp32 weights (no quantised module is stored: that would be a pickle),
and the bundle's ``calibration.json`` was fitted on the quantised scores, so the two must travel
together. The field is part of ``bundle_id`` (a changed field is a mismatch at load time), and a
reader that does not know it cannot load the bundle: it would score with fp32 weights under an int8
calibration, silently.

Why ``overwrite`` replaces only a verified bundle: ``output_dir`` is typed by a person; replacing
"whatever is there" once deleted a project root. A folder is replaced only if it is a bundle: a
``manifest.json`` and no file besides those it lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import medcoder
from medcoder.errors import BundleError

log = logging.getLogger(__name__)

#: 2: no code in the bundle (schema 1 had ``model/modeling_medcoder.py`` + ``auto_map``).
BUNDLE_SCHEMA_VERSION = 3
#: Written instead of :data:`BUNDLE_SCHEMA_VERSION` when the manifest names a ``quantization``
#: (an inference option the reader must apply; see the module docstring). Plain bundles stay 3.
QUANTIZED_SCHEMA_VERSION = 4
#: Schemas this version reads. 2: one neural view (``model/``); 3: adds fused views
#: (``scorers/<name>/``, ``stacker.json``); 4: adds the manifest's ``quantization``. A reader of an
#: older schema must not load a newer bundle: it would ignore the stacker (or the quantisation the
#: calibration was fitted for) and score differently, silently.
READABLE_SCHEMA_VERSIONS = (2, 3, 4)
MANIFEST = "manifest.json"
REQUIRED_FILES = ("labels.json", "calibration.json", "metrics.json", "MODEL_CARD.md", "model/config.json")
#: The neural view's file, required only where the bundle has that view: a fused bundle whose
#: ``stacker.json`` names no ``neural`` view (``fusion.views=[tfidf,dictionary]``) has no ``model/``.
NEURAL_REQUIRED_FILE = "model/config.json"
#: Tag on the registered model version (and on the run) naming the bundle it holds; set by export,
#: compared by ``Coder.load("models:/...")``.
BUNDLE_ID_TAG = "medcoder.bundle_id"
#: Files that are code (or native libraries): never part of a schema-2 bundle.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dylib", ".dll")
#: JSON files of model/ that transformers reads ``auto_map`` (a pointer to code) from.
AUTO_MAP_FILES = ("model/config.json", "model/tokenizer_config.json", "model/processor_config.json",
                  "model/preprocessor_config.json")

STAGING_SUFFIX = ".partial"
STAGING_MARKER = ".medcoder-staging.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _bundle_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest, as sorted POSIX paths."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def bundle_id_from_hashes(files: dict[str, str], quantization: str | None = None) -> str:
    """Content address of a bundle: sha256 over its (path, sha256) list, first 16 hex digits.

    A ``quantization`` (manifest field, schema 4) is appended to the listing: the same files
    scored with other weights are another model, with another id. Without one, ids are unchanged.
    """
    listing = "\n".join(f"{path}\t{digest}" for path, digest in sorted(files.items()))
    if quantization is not None:
        listing += f"\n\tquantization\t{quantization}"
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds; ``files`` maps relative path -> sha256."""

    schema_version: int
    medcoder_version: str
    bundle_id: str
    created: str
    source_run_id: str | None
    files: dict[str, str]
    #: Inference option applied at load time (e.g. ``dynamic-int8``); None: the stored weights as is.
    quantization: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "medcoder_version": self.medcoder_version,
            "bundle_id": self.bundle_id,
            "created": self.created,
            "source_run_id": self.source_run_id,
        }
        if self.quantization is not None:  # plain bundles keep their schema-3 manifest
            d["quantization"] = self.quantization
        d["files"] = dict(sorted(self.files.items()))
        return d


# -- permissions ----------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask, read without changing it where Linux allows (no race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_permissions(root: Path) -> None:
    """Give every folder under ``root`` (and ``root``) mode ``0777 & ~umask`` and every file
    ``0666 & ~umask``: what ``mkdir``/``open`` would have made.

    Why: the staging folder comes from ``mkdtemp`` (0700) and copied files keep their source's
    mode, so without this a bundle could be unreadable by the separate, read-only service account
    that serves it. Symbolic links are left alone (their mode means nothing on Linux).
    """
    mask = _umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    os.chmod(root, dir_mode)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, dir_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


# -- staging folders (ours, marked with the pid that made them) ------------------------------------
def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this host). Unknown answers count as alive: keep the folder."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def new_staging_dir(parent: Path, name: str) -> Path:
    """``parent/.<name>.<random>.partial``, marked as this process's (pid + host) so that a later
    run can tell a folder a killed process left behind from one still being written."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=STAGING_SUFFIX))
    marker = {"program": "medcoder", "pid": os.getpid(), "host": socket.gethostname(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (staging / STAGING_MARKER).write_text(json.dumps(marker) + "\n")
    return staging


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove staging folders in ``parent`` that a medcoder process left behind when it was killed.

    A folder qualifies only if all hold: its name is ``.<anything>.partial``, it is a real folder
    (not a link), it holds our marker file, the marker names this host, and the pid in it is no
    longer running. Anything else (a user's folder, another host's export on a shared disk, an
    export still running) is left alone. Returns the folders removed.
    """
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX)):
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
        try:
            marker = json.loads((entry / STAGING_MARKER).read_text())
            pid = int(marker["pid"])
            ours = marker.get("program") == "medcoder" and marker.get("host") == host
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ours and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by an interrupted medcoder process (pid %d)", entry, pid)
            removed.append(entry)
    return removed


# -- where a bundle may be written -----------------------------------------------------------------
def _inside(path: Path, ancestor: Path) -> bool:
    return path == ancestor or ancestor in path.parents


def check_output_dir(out: Path, *, protected: Iterable[Path] = (), protected_trees: Iterable[Path] = ()) -> None:
    """Refuse an ``output_dir`` that would replace or sit inside what the export reads.

    ``protected``: paths ``out`` must neither be nor contain (the project root, the tracking
    database). ``protected_trees``: folders ``out`` must also not lie inside (an artifact store:
    a bundle written into ``mlartifacts/`` would be mixed into MLflow's own files).
    """
    for path in protected:
        p = Path(path).expanduser().resolve()
        if _inside(p, out):
            raise BundleError(f"output_dir={out} is or contains {p}, which the export reads",
                              hint="choose a new folder for the bundle, e.g. output_dir=bundles/<name>")
    for path in protected_trees:
        p = Path(path).expanduser().resolve()
        if _inside(p, out) or _inside(out, p):
            raise BundleError(f"output_dir={out} overlaps {p}, an MLflow store the export reads",
                              hint="write the bundle outside the MLflow store, e.g. output_dir=bundles/<name>")


def check_replaceable(out: Path) -> None:
    """Refuse to replace ``out`` unless it verifies as a medcoder bundle (any schema version): a
    folder with a readable ``manifest.json`` and no file besides those it lists. Empty folders
    are fine; files it lists may be missing (a damaged bundle may be replaced)."""
    hint = "overwrite=true replaces only a bundle; remove the folder yourself or choose another output_dir"
    if out.is_symlink() or not out.is_dir():
        raise BundleError(f"output_dir={out} exists and is not a folder, so not a medcoder bundle", hint=hint)
    manifest = out / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        raise BundleError(f"output_dir={out} exists and has no {MANIFEST}, so it is not a medcoder bundle", hint=hint)
    try:
        listed = json.loads(manifest.read_text())["files"]
        allowed = {str(rel) for rel in dict(listed)} | {MANIFEST}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"output_dir={out}: {MANIFEST} is unreadable ({exc}), so it is not a medcoder bundle",
                          hint=hint) from exc
    extra: list[str] = []
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = Path(dirpath).relative_to(out)
        for name in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))] + filenames:
            rel = (rel_dir / name).as_posix()
            if rel not in allowed:
                extra.append(rel)
    if extra:
        raise BundleError(f"output_dir={out} holds files that are not part of its bundle: {sorted(extra)[:5]}",
                          hint=hint)


def required_files(bundle_dir: Path) -> list[str]:
    """:data:`REQUIRED_FILES`, less ``model/config.json`` where the bundle's views exclude ``neural``."""
    from medcoder.modeling.hybrid import view_names  # the one reader of stacker.json's view list

    if "neural" in view_names(bundle_dir):
        return list(REQUIRED_FILES)
    return [f for f in REQUIRED_FILES if f != NEURAL_REQUIRED_FILE]


class BundleWriter:
    """Write a bundle into a staging folder beside ``output_dir``, then rename it into place.

    Use as a context manager: ``scratch`` is a folder for inputs (downloaded run artifacts),
    ``bundle_dir`` the bundle being written; :meth:`commit` checks, hashes, validates and renames.
    On leaving the block the staging folder is removed, whatever happened. Both live beside the
    target (same file system: the rename is atomic; nothing in the system temp folder).

    Checks happen before anything is read or written: ``output_dir`` must not overlap what the
    export reads (:func:`check_output_dir`), and an existing ``output_dir`` is replaced only with
    ``overwrite`` and only if it is a bundle (:func:`check_replaceable`, checked again just
    before the rename). Stale staging folders of killed exports in the same parent are removed.
    """

    def __init__(self, output_dir: str | Path, *, overwrite: bool = False, protected: Sequence[Path] = (),
                 protected_trees: Sequence[Path] = ()) -> None:
        self.out = Path(output_dir).expanduser().resolve()
        self.overwrite = overwrite
        self.protected = list(protected)
        self.protected_trees = list(protected_trees)
        self.staging: Path | None = None

    def _check_target(self) -> None:
        if self.out.exists() or self.out.is_symlink():
            if not self.overwrite:
                raise BundleError(f"output_dir={self.out} already exists",
                                  hint="choose a new output_dir or pass overwrite=true")
            check_replaceable(self.out)

    def __enter__(self) -> BundleWriter:
        check_output_dir(self.out, protected=self.protected, protected_trees=self.protected_trees)
        self._check_target()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.out.parent)
        self.staging = new_staging_dir(self.out.parent, self.out.name)
        self.bundle_dir.mkdir()
        self.scratch.mkdir()
        return self

    @property
    def bundle_dir(self) -> Path:
        assert self.staging is not None, "use BundleWriter as a context manager"
        return self.staging / "bundle"

    @property
    def scratch(self) -> Path:
        assert self.staging is not None, "use BundleWriter as a context manager"
        return self.staging / "downloads"

    def commit(self, *, source_run_id: str | None, validate: Callable[[Path], None] | None = None,
               quantization: str | None = None) -> Manifest:
        """Check the files, write the manifest, ``validate(bundle_dir)`` (e.g. a full
        ``Coder.load``), then rename into place: a bundle that exists is a bundle that loads.
        ``quantization`` is recorded in the manifest (schema 4) for ``Coder.load`` to apply."""
        tmp = self.bundle_dir
        missing = [f for f in required_files(tmp) if not (tmp / f).is_file()]
        if missing:
            raise BundleError(f"bundle for {self.out} is incomplete: missing {missing}")
        files = {rel: sha256_file(tmp / rel) for rel in _bundle_files(tmp)}
        manifest = Manifest(
            schema_version=BUNDLE_SCHEMA_VERSION if quantization is None else QUANTIZED_SCHEMA_VERSION,
            medcoder_version=medcoder.__version__,
            bundle_id=bundle_id_from_hashes(files, quantization),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source_run_id=source_run_id,
            files=files,
            quantization=quantization,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        apply_default_permissions(tmp)
        if validate is not None:
            validate(tmp)
        self._check_target()  # again: the folder may have changed while the export ran
        if self.out.exists():
            previous = self.staging / "previous"
            os.replace(self.out, previous)
            try:
                os.replace(tmp, self.out)
            except OSError:
                os.replace(previous, self.out)
                raise
        else:
            os.replace(tmp, self.out)
        return manifest

    def __exit__(self, *exc: object) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def write_bundle(output_dir: str | Path, fill: Callable[[Path], None], *, source_run_id: str | None,
                 overwrite: bool = False, validate: Callable[[Path], None] | None = None,
                 protected: Sequence[Path] = (), protected_trees: Sequence[Path] = ()) -> Manifest:
    """Create a bundle at ``output_dir``: ``fill(tmp)`` writes the files, then the manifest is
    computed, ``validate(tmp)`` must pass, and only then is the staging folder renamed into
    place. See :class:`BundleWriter` for the checks (overwrite replaces only a bundle)."""
    with BundleWriter(output_dir, overwrite=overwrite, protected=protected, protected_trees=protected_trees) as w:
        fill(w.bundle_dir)
        return w.commit(source_run_id=source_run_id, validate=validate)


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and version-check ``manifest.json`` (no hashing; see :func:`verify_bundle`)."""
    root = Path(bundle_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle={root}: not a directory", hint="pass the folder written by scripts/export.py")
    if not path.is_file():
        raise BundleError(f"{path}: no manifest.json, so this is not a medcoder bundle",
                          hint="export one with scripts/export.py run_id=<id> output_dir=<dir>")
    try:
        data = json.loads(path.read_text())
        version = data["schema_version"]
        files = data["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})", hint="re-export the bundle") from exc
    if version == 1:
        run = data.get("source_run_id") if isinstance(data, dict) else None
        raise BundleError(
            f"{path}: schema_version=1 bundles carry a trust_remote_code loader (model/modeling_medcoder.py) "
            f"and are no longer loaded",
            hint=f"re-export it with scripts/export.py run_id={run or '<run id>'} output_dir=<new dir>",
        )
    if version not in READABLE_SCHEMA_VERSIONS:
        raise BundleError(
            f"{path}: schema_version={version!r} is not supported (this medcoder reads {list(READABLE_SCHEMA_VERSIONS)})",
            hint="re-export the bundle with scripts/export.py, or install the medcoder version that wrote it",
        )
    quantization = data.get("quantization")
    if quantization is not None and (version < QUANTIZED_SCHEMA_VERSION or not isinstance(quantization, str)):
        raise BundleError(f"{path}: quantization={quantization!r} is not valid in a schema-{version} manifest",
                          hint="re-export the bundle with scripts/export.py")
    return Manifest(
        schema_version=version,
        medcoder_version=str(data.get("medcoder_version", "?")),
        bundle_id=str(data.get("bundle_id", "")),
        created=str(data.get("created", "")),
        source_run_id=data.get("source_run_id"),
        files=dict(files),
        quantization=quantization,
    )


def _refuse_code(root: Path, files: Iterable[str]) -> None:
    """A schema-2 bundle holds no code and no ``auto_map`` pointing at code (module docstring)."""
    hint = "medcoder bundles hold no code; re-export it with scripts/export.py"
    code = sorted(rel for rel in files if rel.lower().endswith(CODE_SUFFIXES))
    if code:
        raise BundleError(f"{root}: the bundle holds code ({code[:3]})", hint=hint)
    for rel in AUTO_MAP_FILES:
        path = root / rel
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{root}: {rel} is unreadable ({exc})", hint="re-export the bundle") from exc
        if isinstance(data, dict) and "auto_map" in data:
            raise BundleError(f"{root}: {rel} has an auto_map (a pointer to code to run)", hint=hint)


def verify_bundle(bundle_dir: str | Path) -> Manifest:
    """Refuse a bundle whose files differ from its manifest (missing, changed, or added) or that
    holds code (a ``.py``/native file or an ``auto_map``).

    Hashing ~90 MB of MiniLM weights takes well under a second; an auditor's guarantee is worth it.
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    for rel, digest in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{root}: file {rel!r} listed in the manifest is missing",
                              hint="the bundle is incomplete; copy it again or re-export it")
        if sha256_file(path) != digest:
            raise BundleError(f"{root}: file {rel!r} does not match its sha256 in the manifest (tampered or corrupt)",
                              hint="re-export the bundle; never edit a bundle in place")
    extra = sorted(set(_bundle_files(root)) - set(manifest.files))
    if extra:
        raise BundleError(f"{root}: files not in the manifest: {extra[:5]}",
                          hint="remove them or re-export the bundle")
    if bundle_id_from_hashes(manifest.files, manifest.quantization) != manifest.bundle_id:
        raise BundleError(f"{root}: bundle_id {manifest.bundle_id!r} does not match the file hashes"
                          + (" and quantization" if manifest.quantization else ""),
                          hint="re-export the bundle")
    _refuse_code(root, manifest.files)
    return manifest


def check_bundle_id(manifest: Manifest, expected: str | None, *, source: str) -> None:
    """Refuse a bundle whose id differs from the one its registry entry records (``expected``:
    the version's ``medcoder.bundle_id`` tag; None when the version has no such tag)."""
    if expected and manifest.bundle_id != expected:
        raise BundleError(
            f"bundle={source}: the bundle's manifest has bundle_id={manifest.bundle_id!r} but the registered "
            f"version's tag {BUNDLE_ID_TAG} is {expected!r}",
            hint="the registry entry does not hold the bundle that was exported; re-export and register it "
                 "with scripts/export.py",
        )


# -- local cache of bundles downloaded from MLflow ---------------------------------------------------
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
    """Remove a cache entry: first renamed to a staging name, so no reader sees half of it."""
    if not path.exists():
        return
    trash = new_staging_dir(path.parent, path.name)
    with contextlib.suppress(OSError):
        os.replace(path, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def prune_bundle_cache(root: Path, *, keep: int, current: Path | None = None) -> list[Path]:
    """Keep the ``keep`` most recently used cache entries (plus ``current`` and any used in the
    last :data:`CACHE_GRACE_S` seconds); remove the rest. Entries sit at depth 4 under ``root``."""
    entries = sorted((p.parent for p in root.glob("*/*/*/*/" + MANIFEST)), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    now = time.time()
    removed = []
    for entry in entries[keep:]:
        if entry == current or now - entry.stat().st_mtime < CACHE_GRACE_S:
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
    if reuse and (entry / MANIFEST).is_file():
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
    remove_stale_staging(entry.parent)
    staging = new_staging_dir(entry.parent, entry.name)
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
