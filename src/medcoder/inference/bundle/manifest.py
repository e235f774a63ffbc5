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
from dataclasses import dataclass
from pathlib import Path
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
