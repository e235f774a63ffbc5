"""The bundle: the one directory an ops team moves around, and its manifest.

Layout (**contract**, ``../shared/DESIGN.md``)::

    bundle/
      model/            HF save_pretrained + tokenizer
      labels.json       codes, descriptions, training frequency, code-set fiscal year
      calibration.json  calibrator, thresholds, routing policy, guarantee, targets
      metrics.json      dev/test metrics of this exact bundle
      MODEL_CARD.md     data, metrics, intended use, limits
      manifest.json     schema version, medcoder version, sha256 of every other file

Why a manifest with hashes: an auditor must be able to show that the model that made a decision is
byte-for-byte the one that was validated. ``bundle_id`` is derived from the file hashes, so two
bundles with the same id hold the same bytes, and any edit is detected at load time.

Why temp dir + rename: an interrupted export must leave nothing that looks like a bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import medcoder
from medcoder.errors import BundleError

BUNDLE_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("labels.json", "calibration.json", "metrics.json", "MODEL_CARD.md", "model/config.json")


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


def bundle_id_from_hashes(files: dict[str, str]) -> str:
    """Content address of a bundle: sha256 over its (path, sha256) list, first 16 hex digits."""
    listing = "\n".join(f"{path}\t{digest}" for path, digest in sorted(files.items()))
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "medcoder_version": self.medcoder_version,
            "bundle_id": self.bundle_id,
            "created": self.created,
            "source_run_id": self.source_run_id,
            "files": dict(sorted(self.files.items())),
        }


def write_bundle(output_dir: str | Path, fill: Callable[[Path], None], *, source_run_id: str | None,
                 overwrite: bool = False, validate: Callable[[Path], None] | None = None) -> Manifest:
    """Create a bundle at ``output_dir``: ``fill(tmp)`` writes the files, then the manifest is
    computed, ``validate(tmp)`` (e.g. a full ``Coder.load``) must pass, and only then is the
    temp directory renamed into place: a bundle that exists is a bundle that loads.

    The temp directory is a sibling of ``output_dir`` (same file system, so the rename is atomic)
    and is removed if anything fails. An existing bundle is replaced only with ``overwrite``.
    """
    out = Path(output_dir).resolve()
    if out.exists() and not overwrite:
        raise BundleError(f"output_dir={out} already exists", hint="choose a new output_dir or pass overwrite=true")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        fill(tmp)
        missing = [f for f in REQUIRED_FILES if not (tmp / f).is_file()]
        if missing:
            raise BundleError(f"bundle for {out} is incomplete: missing {missing}")
        files = {rel: sha256_file(tmp / rel) for rel in _bundle_files(tmp)}
        manifest = Manifest(
            schema_version=BUNDLE_SCHEMA_VERSION,
            medcoder_version=medcoder.__version__,
            bundle_id=bundle_id_from_hashes(files),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source_run_id=source_run_id,
            files=files,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        if validate is not None:
            validate(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    if version != BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version={version!r} is not supported (this medcoder reads {BUNDLE_SCHEMA_VERSION})",
            hint="re-export the bundle with this medcoder version, or install the version that wrote it",
        )
    return Manifest(
        schema_version=version,
        medcoder_version=str(data.get("medcoder_version", "?")),
        bundle_id=str(data.get("bundle_id", "")),
        created=str(data.get("created", "")),
        source_run_id=data.get("source_run_id"),
        files=dict(files),
    )


def verify_bundle(bundle_dir: str | Path) -> Manifest:
    """Refuse a bundle whose files differ from its manifest (missing, changed, or added).

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
    if bundle_id_from_hashes(manifest.files) != manifest.bundle_id:
        raise BundleError(f"{root}: bundle_id {manifest.bundle_id!r} does not match the file hashes",
                          hint="re-export the bundle")
    return manifest
