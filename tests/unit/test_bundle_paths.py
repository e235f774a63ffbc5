"""Issue 22: bundle verification stays inside the bundle.

A manifest path that is absolute or climbs out (``../``), a symlink inside the bundle (to a file, to
a folder, dangling, in a loop, or the manifest itself) and a manifest whose ``files`` is not an
object or which is not UTF-8 / JSON are each one ``BundleError`` line, and nothing outside the
bundle is read as if it were part of it. Bundles here are hand-made folders (no model needed):
``verify_bundle`` checks files, hashes and paths, not weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medcoder.errors import BundleError
from medcoder.inference.bundle import (
    MANIFEST,
    bundle_id_from_hashes,
    cached_bundle,
    read_manifest,
    sha256_file,
    verify_bundle,
)

FILES = {"labels.json": '{"codes": []}', "calibration.json": "{}", "model/config.json": '{"a": 1}'}


def _write_manifest(bundle: Path, files: object, **extra: object) -> None:
    digests = files if isinstance(files, dict) else {}
    data = {"schema_version": 3, "medcoder_version": "test", "created": "", "source_run_id": None,
            "bundle_id": bundle_id_from_hashes(digests) if all(isinstance(v, str) for v in digests.values()) else "",
            "files": files, **extra}
    (bundle / MANIFEST).write_text(json.dumps(data))


def _bundle(root: Path, extra: dict[str, Path] | None = None) -> Path:
    """A plain bundle at ``root``; ``extra`` lists more manifest paths -> the file whose hash they get."""
    root.mkdir(parents=True)
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    files = {rel: sha256_file(root / rel) for rel in FILES}
    files.update({rel: sha256_file(src) for rel, src in (extra or {}).items()})
    _write_manifest(root, files)
    return root


def _refused(bundle: Path, match: str) -> BundleError:
    with pytest.raises(BundleError, match=match) as info:
        verify_bundle(bundle)
    assert "\n" not in str(info.value)
    return info.value


def test_a_plain_bundle_verifies(tmp_path) -> None:
    manifest = verify_bundle(_bundle(tmp_path / "b"))
    assert sorted(manifest.files) == sorted(FILES)


@pytest.mark.parametrize("listed", ["../secret.txt", "model/../../secret.txt", "ABS"])
def test_manifest_paths_outside_the_bundle_are_refused(tmp_path, listed) -> None:
    """Before: ``root / "../secret.txt"`` (and ``root / "/abs"``, which *is* ``/abs``) was read and
    hashed, so a manifest vouched for a file outside the bundle and the bundle verified."""
    secret = tmp_path / "secret.txt"
    secret.write_text("someone else's file")
    listed = str(secret) if listed == "ABS" else listed
    bundle = _bundle(tmp_path / "b", {listed: secret})
    _refused(bundle, "not a relative path inside the bundle")


@pytest.mark.parametrize("listed", ["./labels.json", "model//config.json", "model\\config.json", "", "manifest.json",
                                    "C:/x.json"])
def test_odd_manifest_paths_are_refused(tmp_path, listed) -> None:
    bundle = _bundle(tmp_path / "b")
    files = json.loads((bundle / MANIFEST).read_text())["files"]
    _write_manifest(bundle, {**files, listed: "0" * 64})
    _refused(bundle, "not a relative path inside the bundle")


def test_a_symlink_to_a_file_outside_is_refused(tmp_path) -> None:
    """Before: ``is_file``/``sha256_file`` followed the link, so the hash of the outside file
    verified."""
    secret = tmp_path / "secret.txt"
    secret.write_text("someone else's file")
    bundle = _bundle(tmp_path / "b")
    (bundle / "model" / "vocab.txt").symlink_to(secret)
    files = json.loads((bundle / MANIFEST).read_text())["files"]
    _write_manifest(bundle, {**files, "model/vocab.txt": sha256_file(secret)})
    _refused(bundle, "symlink")


def test_a_symlinked_folder_is_refused(tmp_path) -> None:
    """Before: ``rglob`` did not descend into the linked folder (no "extra" files) while the listed
    paths read through it, so files outside verified as the bundle's ``model/``."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text('{"a": 1}')
    bundle = _bundle(tmp_path / "b")
    (bundle / "model" / "config.json").unlink()
    (bundle / "model").rmdir()
    (bundle / "model").symlink_to(outside, target_is_directory=True)
    _refused(bundle, "resolves outside the bundle|symlink")


def test_unlisted_dangling_and_looping_symlinks_are_refused(tmp_path) -> None:
    bundle = _bundle(tmp_path / "b")
    (bundle / "dangling").symlink_to(tmp_path / "nowhere")
    _refused(bundle, "symlink")
    (bundle / "dangling").unlink()
    (bundle / "loop").symlink_to(bundle / "loop")
    _refused(bundle, "symlink")
    (bundle / "loop").unlink()
    files = json.loads((bundle / MANIFEST).read_text())["files"]
    (bundle / "a").symlink_to(bundle / "b_")
    (bundle / "b_").symlink_to(bundle / "a")
    _write_manifest(bundle, {**files, "a/x.json": "0" * 64})
    _refused(bundle, "cannot be resolved|outside|symlink")


def test_a_symlinked_manifest_is_refused(tmp_path) -> None:
    bundle = _bundle(tmp_path / "b")
    real = tmp_path / "manifest-elsewhere.json"
    (bundle / MANIFEST).rename(real)
    (bundle / MANIFEST).symlink_to(real)
    _refused(bundle, "symlink")


def test_a_nested_file_called_manifest_json_is_not_invisible(tmp_path) -> None:
    """Before: every file *named* manifest.json was left out of the listing, so one could be added
    under ``model/`` without verification noticing."""
    bundle = _bundle(tmp_path / "b")
    (bundle / "model" / MANIFEST).write_text("{}")
    _refused(bundle, "not in the manifest")


@pytest.mark.parametrize("content, match", [
    (b'{"schema_version": 3, "files": ["labels.json"]}', "files is a list"),
    (b'{"schema_version": 3, "files": 3}', "files is a int"),
    (b'{"schema_version": 3, "files": {"labels.json": 5}}', "not a sha256"),
    (b'{"schema_version": 3, "files": {}, "name": "\xff\xfe"}', "not UTF-8"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "a JSON list"),
    (b'{"files": {}}', "no schema_version"),
    (b'{"schema_version": "3", "files": {}}', "not an integer"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deep|not JSON"),
])
def test_unreadable_manifests_are_one_bundle_error_line(tmp_path, content, match) -> None:
    """Before: a list ``files`` escaped as ``ValueError``, a non-UTF-8 manifest as
    ``UnicodeDecodeError``, a deeply nested one as ``RecursionError``."""
    bundle = _bundle(tmp_path / "b")
    (bundle / MANIFEST).write_bytes(content)
    for read in (read_manifest, verify_bundle):
        with pytest.raises(BundleError, match=match) as info:
            read(bundle)
        assert "\n" not in str(info.value)


def test_the_cache_never_reuses_a_symlink_put_in_place_of_an_entry(tmp_path) -> None:
    """A cache entry is a folder the cache renamed into place; a link there (to another bundle, a
    folder someone else controls) is downloaded over, never followed, and its target is kept."""
    elsewhere = _bundle(tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    entry = cache / "store" / "models" / "name" / "1"
    entry.parent.mkdir(parents=True)
    entry.symlink_to(elsewhere, target_is_directory=True)
    calls: list[Path] = []

    def download(dst: Path) -> Path:
        calls.append(dst)
        return _bundle(dst / "bundle")

    path, manifest = cached_bundle(("store", "models", "name", "1"), download, source="models:/name/1", root=cache)
    assert calls, "the symlinked entry was used as the cached bundle"
    assert path == entry and not entry.is_symlink() and manifest.bundle_id
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(["labels.json", "calibration.json", "model",
                                                                  MANIFEST])
    assert os.path.isfile(elsewhere / "model" / "config.json")
