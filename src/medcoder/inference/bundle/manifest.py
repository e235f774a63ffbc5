"""The manifest: schema versions, the files a bundle must hold, and their content address.

Why a manifest with hashes: an auditor must be able to show that the model that made a decision is
byte-for-byte the one that was validated. ``bundle_id`` is derived from the file hashes, so two
bundles with the same id hold the same bytes, and any edit is detected at load time.

Why ``quantization`` lives in the manifest (schema 4): it is an inference option, applied by
``Coder.load`` to the stored fp32 weights (no quantised module is stored: that would be a pickle),
and the bundle's ``calibration.json`` was fitted on the quantised scores, so the two must travel
together. The field is part of ``bundle_id`` (a changed field is a mismatch at load time), and a
reader that does not know it cannot load the bundle: it would score with fp32 weights under an int8
calibration, silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

from medcoder.errors import BundleError

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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _bundle_files(root: Path) -> list[str]:
    """Every entry under ``root`` that is not a real folder (files, symlinks, anything else) except
    the top-level manifest, as sorted POSIX paths.

    Why ``os.walk`` without following links: ``rglob`` + ``is_file`` followed a symlink to a file
    outside the bundle (listing, then hashing, whatever it pointed at) and silently skipped
    links that point nowhere; a bundle's content is what lies *in* its folder.
    """
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in linked]  # never descend through a link
        out.extend((rel_dir / name).as_posix() for name in [*linked, *filenames])
    return sorted(rel for rel in out if rel != MANIFEST)


def bundle_symlinks(root: Path) -> list[str]:
    """Symlinks inside the bundle folder ``root`` (files or folders), as sorted POSIX paths.

    Why a bundle may hold none: a link's target is not part of the bundle's bytes, so the
    manifest's hashes would vouch for whatever the link points at when it is read (another
    user's file, ``/dev/zero``, a folder that changes after verification).
    """
    return sorted(rel for rel in _bundle_files(root) if (root / rel).is_symlink()) + (
        [MANIFEST] if (root / MANIFEST).is_symlink() else [])


#: What a path listed in ``files`` may look like: relative POSIX parts, none empty, ``.`` or ``..``.
_PLAIN_PART = re.compile(r"[^/\\\x00]+")


def check_listed_path(root: Path, rel: Any, *, source: Path) -> str:
    """``rel`` (a key of the manifest's ``files``), refused unless it names a file inside ``root``.

    Why: ``verify_bundle`` opens ``root / rel``; ``../../etc/passwd`` or ``/etc/passwd`` (``/``
    replaces ``root`` in a join) made it read and hash files outside the bundle, and a bundle
    listing them verified wherever those files matched. Refused: non-strings, absolute paths
    (POSIX or Windows), empty, ``.`` or ``..`` parts, backslashes, NUL, the manifest itself, and
    anything that resolves outside ``root`` (through a symlinked folder).
    """
    hint = "a manifest lists relative paths inside its bundle only; re-export the bundle with scripts/export.py"
    if not isinstance(rel, str):
        raise BundleError(f"{source}: files has a key {rel!r} that is not a path", hint=hint)
    parts = rel.split("/")
    plain = (bool(rel) and not PureWindowsPath(rel).drive and rel != MANIFEST
             and all(_PLAIN_PART.fullmatch(p) and p not in (".", "..") for p in parts))
    if not plain:
        raise BundleError(f"{source}: files lists {rel!r}, which is not a relative path inside the bundle",
                          hint=hint)
    try:
        inside = root.resolve() in (root / rel).resolve().parents
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise BundleError(f"{source}: files lists {rel!r}, which cannot be resolved ({type(exc).__name__})",
                          hint=hint) from exc
    if not inside:
        raise BundleError(f"{source}: files lists {rel!r}, which resolves outside the bundle", hint=hint)
    return rel


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


def required_files(bundle_dir: Path) -> list[str]:
    """:data:`REQUIRED_FILES`, less ``model/config.json`` where the bundle's views exclude ``neural``."""
    from medcoder.modeling import NEURAL
    from medcoder.modeling.hybrid import view_names  # the one reader of stacker.json's view list

    if NEURAL in view_names(bundle_dir):
        return list(REQUIRED_FILES)
    return [f for f in REQUIRED_FILES if f != NEURAL_REQUIRED_FILE]


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and version-check ``manifest.json`` (no hashing; see :func:`verify_bundle`)."""
    root = Path(bundle_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle={root}: not a directory", hint="pass the folder written by scripts/export.py")
    if not path.is_file():
        raise BundleError(f"{path}: no manifest.json, so this is not a medcoder bundle",
                          hint="export one with scripts/export.py run_id=<id> output_dir=<dir>")
    if path.is_symlink():
        raise BundleError(f"{path}: manifest.json is a symlink, and a bundle holds none",
                          hint="copy the bundle with its files (cp -rL) or re-export it")
    data = _parse_manifest(path)
    version = data["schema_version"]
    if version == 1:
        run = data.get("source_run_id")
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
    files = data["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{path}: files is a {type(files).__name__}, expected an object of path -> sha256",
                          hint="re-export the bundle with scripts/export.py")
    for rel, digest in files.items():
        check_listed_path(root, rel, source=path)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{path}: files[{rel!r}] is {digest!r}, not a sha256 (64 lowercase hex digits)",
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


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _parse_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` as a dict with ``schema_version`` and ``files``; any other content (not
    UTF-8, not JSON, nested too deep, not an object, keys missing) is one :class:`BundleError`
    line, never a ``UnicodeDecodeError`` or ``RecursionError`` traceback."""
    hint = "re-export the bundle with scripts/export.py"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: unreadable manifest (not UTF-8: byte {exc.start})", hint=hint) from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: unreadable manifest (not JSON: {exc.msg} at line {exc.lineno} column "
                          f"{exc.colno})", hint=hint) from exc
    except RecursionError as exc:
        raise BundleError(f"{path}: unreadable manifest (nested too deep)", hint=hint) from exc
    except OSError as exc:
        raise BundleError(f"{path}: unreadable manifest ({type(exc).__name__}: {exc.strerror})", hint=hint) from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: unreadable manifest (a JSON {type(data).__name__}, expected an object)",
                          hint=hint)
    missing = [key for key in ("schema_version", "files") if key not in data]
    if missing:
        raise BundleError(f"{path}: unreadable manifest (no {', '.join(missing)})", hint=hint)
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise BundleError(f"{path}: schema_version={version!r} is not an integer", hint=hint)
    return data
