"""Find the CodiEsp corpus on disk, or fetch the official release once into a cache.

Why an explicit search order: the same config must work on a laptop, in CI and on a fresh cloud
machine, and when nothing is found the user needs one message that says where we looked.

Order (first hit wins):

1. ``explicit`` (``data.root`` in the config) — must exist, else ``DataError``;
2. the ``MEDCODER_CODIESP_DIR`` environment variable — if set it must hold the release, else
   ``DataError`` (a stale variable should not be silently ignored);
3. ``../shared/data/codiesp`` relative to the current directory, then relative to the repository
   root (``Path(__file__).parents[3]``);
4. a previous download under ``cache_dir`` (default ``~/.cache/medcoder/codiesp``);
5. if ``download``: the official release from Zenodo (record 3837305), fetched to a temp file and
   renamed into place, then unzipped to a temp folder and renamed, so an interrupted run never
   leaves a half-written corpus that step 4 would accept.

The returned path is the release folder itself (``.../final_dataset_v4_to_publish``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from medcoder.data.codiesp import RELEASE_DIRNAME, find_release_dir
from medcoder.errors import DataError
from medcoder.ownership import mark_owned, remove_owned_dir

logger = logging.getLogger(__name__)

ENV_VAR = "MEDCODER_CODIESP_DIR"
CODIESP_URL = "https://zenodo.org/records/3837305/files/codiesp.zip?download=1"
# Not pinned yet: it could not be computed offline. When None, the sha256 of a fresh download is
# logged so a maintainer can pin it here; once set, a mismatch is a DataError.
CODIESP_SHA256: str | None = None
DEFAULT_CACHE_DIR = Path("~/.cache/medcoder/codiesp")
ZIP_NAME = "codiesp.zip"
EXTRACTED_NAME = "extracted"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_SHARED_REL = Path("..") / "shared" / "data" / "codiesp"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def _urlopen(url: str):  # separate function so tests can replace the network
    return urllib.request.urlopen(url, timeout=_TIMEOUT_S)


def _hint(cache_dir: Path) -> str:
    return (
        f"set data.root=/path/to/{RELEASE_DIRNAME} or export {ENV_VAR}=/path/to/it; "
        f"or download {CODIESP_URL} and unzip it into {cache_dir / EXTRACTED_NAME}"
    )


def resolve_codiesp_root(
    explicit: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> Path:
    """Return the CodiEsp release folder, searching (and maybe downloading) as documented above."""
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()

    if explicit is not None and str(explicit) != "":
        return _must_hold_release(Path(explicit), "data.root", cache)
    env = os.environ.get(ENV_VAR)
    if env:
        return _must_hold_release(Path(env), ENV_VAR, cache)

    looked: list[str] = ["data.root: not set", f"{ENV_VAR}: not set"]
    for label, base in (("current directory", Path.cwd()), ("repository root", _REPO_ROOT)):
        candidate = base / _SHARED_REL
        found = find_release_dir(candidate, max_depth=0)
        if found is not None:
            found = found.resolve()
            logger.info("CodiEsp found next to the %s: %s", label, found)
            return found
        looked.append(f"{candidate.resolve()} (relative to the {label})")

    found = find_release_dir(cache / EXTRACTED_NAME)
    if found is not None:
        logger.info("CodiEsp found in cache: %s", found)
        return found
    looked.append(f"{cache / EXTRACTED_NAME} (download cache)")

    if not download:
        looked.append("download: disabled (data.download=false)")
        raise DataError("CodiEsp corpus not found; looked in: " + "; ".join(looked), hint=_hint(cache))
    try:
        return _download(cache)
    except OSError as exc:  # URLError, timeouts, disk errors: all mean "not available here"
        looked.append(f"{CODIESP_URL} (download failed: {exc})")
        raise DataError(
            "CodiEsp corpus not found; looked in: " + "; ".join(looked), hint=_hint(cache)
        ) from exc


def _must_hold_release(path: Path, source: str, cache: Path) -> Path:
    path = path.expanduser()
    if not path.exists():
        raise DataError(f"{source}={path}: folder does not exist", hint=_hint(cache))
    found = find_release_dir(path)
    if found is None:
        raise DataError(
            f"{source}={path}: no CodiEsp release in it (expected train/trainD.tsv)",
            hint=_hint(cache),
        )
    return found


def _download(cache: Path) -> Path:
    """Fetch + verify the zip (atomic rename), then unzip to a temp folder and rename it."""
    cache.mkdir(parents=True, exist_ok=True)
    zip_path = cache / ZIP_NAME
    if not zip_path.is_file():
        logger.info("downloading CodiEsp from %s", CODIESP_URL)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".codiesp-", suffix=".zip.part")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(CODIESP_URL) as resp:
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            _check_sha256(digest.hexdigest())
            os.replace(tmp_name, zip_path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    tmp_dir = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp_dir)  # zipfile drops absolute and '..' member paths
        except zipfile.BadZipFile as exc:
            zip_path.unlink(missing_ok=True)  # do not keep a corrupt download around
            raise DataError(
                f"{zip_path}: downloaded file is not a valid zip", hint="run again to re-download"
            ) from exc
        if find_release_dir(tmp_dir) is None:
            raise DataError(
                f"{zip_path}: archive does not contain a CodiEsp release (train/trainD.tsv)",
                hint=f"check {CODIESP_URL} or provide the data yourself",
            )
        final = cache / EXTRACTED_NAME
        # An earlier, invalid extraction (a valid one returned earlier) is replaced only if medcoder
        # made it (its marker): paths.data_cache_dir may name a folder of the user's (issue 22).
        remove_owned_dir(final, "codiesp_extraction", key="paths.data_cache_dir")
        os.replace(mark_owned(tmp_dir, "codiesp_extraction"), final)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    found = find_release_dir(final)
    assert found is not None  # checked on tmp_dir above
    logger.info("CodiEsp ready in %s", found)
    return found


def _check_sha256(actual: str) -> None:
    if CODIESP_SHA256 is None:
        logger.warning(
            "CodiEsp download sha256=%s (not verified: pin it as "
            "medcoder.data.resolve.CODIESP_SHA256)", actual,
        )
    elif actual != CODIESP_SHA256:
        raise DataError(
            f"{CODIESP_URL}: sha256 {actual} does not match the expected {CODIESP_SHA256}",
            hint="the download is corrupt or the release changed; retry, or provide the data yourself",
        )
