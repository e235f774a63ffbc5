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

One module per job, each with its own why:

* :mod:`~medcoder.inference.bundle.manifest`: schema versions, required files, hashing and the
  content address (``bundle_id``), reading ``manifest.json``;
* :mod:`~medcoder.inference.bundle.staging`: where a bundle may be written, the staging folder,
  permissions and the rename into place (:class:`BundleWriter`, :func:`write_bundle`);
* :mod:`~medcoder.inference.bundle.verify`: a bundle loads only if its files are exactly those
  its manifest hashes, and it holds no code, no symlink and no manifest path outside itself;
* :mod:`~medcoder.inference.bundle.cache`: bundles downloaded from MLflow, kept and reused.
"""

from medcoder.inference.bundle.cache import (
    CACHE_GRACE_S,
    DEFAULT_CACHE_ENTRIES,
    bundle_cache_root,
    cache_key_part,
    cached_bundle,
    prune_bundle_cache,
)
from medcoder.inference.bundle.manifest import (
    AUTO_MAP_FILES,
    BUNDLE_ID_TAG,
    BUNDLE_SCHEMA_VERSION,
    CODE_SUFFIXES,
    MANIFEST,
    NEURAL_REQUIRED_FILE,
    QUANTIZED_SCHEMA_VERSION,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_FILES,
    Manifest,
    bundle_id_from_hashes,
    bundle_symlinks,
    check_listed_path,
    read_manifest,
    required_files,
    sha256_file,
)
from medcoder.inference.bundle.staging import (
    STAGING_MARKER,
    STAGING_SUFFIX,
    BundleWriter,
    apply_default_permissions,
    check_output_dir,
    check_replaceable,
    new_staging_dir,
    remove_stale_staging,
    write_bundle,
)
from medcoder.inference.bundle.verify import check_bundle_id, refuse_symlinks, verify_bundle

__all__ = [
    "AUTO_MAP_FILES",
    "BUNDLE_ID_TAG",
    "BUNDLE_SCHEMA_VERSION",
    "CACHE_GRACE_S",
    "CODE_SUFFIXES",
    "DEFAULT_CACHE_ENTRIES",
    "MANIFEST",
    "NEURAL_REQUIRED_FILE",
    "QUANTIZED_SCHEMA_VERSION",
    "READABLE_SCHEMA_VERSIONS",
    "REQUIRED_FILES",
    "STAGING_MARKER",
    "STAGING_SUFFIX",
    "BundleWriter",
    "Manifest",
    "apply_default_permissions",
    "bundle_cache_root",
    "bundle_id_from_hashes",
    "bundle_symlinks",
    "cache_key_part",
    "cached_bundle",
    "check_bundle_id",
    "check_listed_path",
    "check_output_dir",
    "check_replaceable",
    "new_staging_dir",
    "prune_bundle_cache",
    "read_manifest",
    "refuse_symlinks",
    "remove_stale_staging",
    "required_files",
    "sha256_file",
    "verify_bundle",
    "write_bundle",
]
