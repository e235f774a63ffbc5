"""Writing a bundle: where it may go, the staging folder, and the rename into place.

Why a staging folder + rename: an interrupted export must leave nothing that looks like a bundle.
The staging folder (``.<name>.<random>.partial`` beside the target) also holds the downloaded
run artifacts, so a killed export leaves one folder there, marked with the pid that made it, and
the next export into that parent folder removes it once that process is gone
(:func:`medcoder.atomic.sweep_stale`, the project's one rule for that).

Why ``overwrite`` replaces only a verified bundle: ``output_dir`` is typed by a person; replacing
"whatever is there" once deleted a project root. A folder is replaced only if it is a bundle: a
``manifest.json`` and no file besides those it lists.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import medcoder
from medcoder.atomic import (
    STAGING_MARKER,
    STAGING_SUFFIX,
    apply_default_permissions,
    is_inside,
    replace_all,
    sweep_stale,
)
from medcoder.atomic import make_staging_dir as new_staging_dir
from medcoder.errors import BundleError
from medcoder.inference.bundle.manifest import (
    BUNDLE_SCHEMA_VERSION,
    MANIFEST,
    QUANTIZED_SCHEMA_VERSION,
    Manifest,
    _bundle_files,
    bundle_id_from_hashes,
    bundle_symlinks,
    required_files,
    sha256_file,
)

__all__ = [
    "STAGING_MARKER", "STAGING_SUFFIX", "BundleWriter", "apply_default_permissions", "check_output_dir",
    "check_replaceable", "new_staging_dir", "remove_stale_staging", "write_bundle",
]


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in ``parent`` that medcoder processes left when they were killed
    (:func:`medcoder.atomic.sweep_stale`: only folders marked as ours, made on this host, whose
    pid is no longer running). Returns the folders removed."""
    return sweep_stale(parent)


# -- where a bundle may be written -----------------------------------------------------------------
def check_output_dir(out: Path, *, protected: Iterable[Path] = (), protected_trees: Iterable[Path] = ()) -> None:
    """Refuse an ``output_dir`` that would replace or sit inside what the export reads.

    ``protected``: paths ``out`` must neither be nor contain (the project root, the tracking
    database). ``protected_trees``: folders ``out`` must also not lie inside (an artifact store:
    a bundle written into ``mlartifacts/`` would be mixed into MLflow's own files).
    """
    for path in protected:
        p = Path(path).expanduser().resolve()
        if is_inside(p, out):
            raise BundleError(f"output_dir={out} is or contains {p}, which the export reads",
                              hint="choose a new folder for the bundle, e.g. output_dir=bundles/<name>")
    for path in protected_trees:
        p = Path(path).expanduser().resolve()
        if is_inside(p, out) or is_inside(out, p):
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
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
        links = bundle_symlinks(tmp)
        if links:  # verify_bundle refuses them; never hash what a link points at into a manifest
            raise BundleError(f"bundle for {self.out} holds symlinks ({links[:3]})",
                              hint="write files, not links, into the bundle")
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
        replace_all([(tmp, self.out)])  # a previous bundle is moved aside, restored if the rename fails
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
