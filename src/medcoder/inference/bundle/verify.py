"""Verification: a bundle loads only if its files are exactly those its manifest hashes.

Why schema 2 holds no code: schema 1 shipped ``model/modeling_medcoder.py`` and an ``auto_map`` so
``AutoModel.from_pretrained(..., trust_remote_code=True)`` worked without importing medcoder;
that route runs whatever ``.py`` a bundle holds, so a bundle became a way to run code. Schema 2
bundles carry no ``.py`` and no ``auto_map`` (``verify_bundle`` refuses both); plain transformers
loads ``model/`` after ``import medcoder.modeling`` (which registers the classes).

Why no symlinks and only plain relative paths: a bundle is moved around by ops teams and loaded
by others; a symlink (or a manifest path such as ``../x`` or ``/etc/x``) made verification read
and hash files outside the bundle, so the manifest vouched for bytes that were never in it. Such
bundles are refused before any file is opened.
"""


from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from medcoder.errors import BundleError
from medcoder.inference.bundle.manifest import (
    AUTO_MAP_FILES,
    BUNDLE_ID_TAG,
    CODE_SUFFIXES,
    Manifest,
    _bundle_files,
    bundle_id_from_hashes,
    bundle_symlinks,
    read_manifest,
    sha256_file,
)


def refuse_symlinks(root: Path) -> None:
    """A bundle holds no symlink (module docstring): checked before any file is opened."""
    links = bundle_symlinks(root)
    if links:
        raise BundleError(f"{root}: the bundle holds symlinks ({links[:3]}), whose targets are not part of it",
                          hint="copy the bundle with its files (cp -rL) or re-export it with scripts/export.py")


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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleError(f"{root}: {rel} is unreadable ({type(exc).__name__})", hint="re-export the bundle") from exc
        if isinstance(data, dict) and "auto_map" in data:
            raise BundleError(f"{root}: {rel} has an auto_map (a pointer to code to run)", hint=hint)


def verify_bundle(bundle_dir: str | Path) -> Manifest:
    """Refuse a bundle whose files differ from its manifest (missing, changed, or added), that
    holds code (a ``.py``/native file or an ``auto_map``), a symlink, or a manifest path outside it.

    Hashing ~90 MB of MiniLM weights takes well under a second; an auditor's guarantee is worth it.
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)  # refuses absolute, ``..`` and outside-resolving paths
    refuse_symlinks(root)
    for rel, digest in manifest.files.items():
        path = root / rel
        if path.is_symlink() or not path.is_file():
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
