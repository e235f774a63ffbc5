"""Resolver search order, the download path (fake network) and the offline error message."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import zipfile
from pathlib import Path

import pytest

from medcoder.data import resolve
from medcoder.data.resolve import resolve_codiesp_root
from medcoder.errors import DataError

REL = "final_dataset_v4_to_publish"


def _release(base: Path) -> Path:
    """Smallest folder the resolver accepts; returns the release folder."""
    (base / REL / "train").mkdir(parents=True)
    (base / REL / "train" / "trainD.tsv").write_text("a\tn44.8\n", "utf-8")
    return base / REL


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, a cwd and repo root without ../shared, and a network that must not be used."""
    work = tmp_path / "home" / "project"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(resolve, "_REPO_ROOT", work)
    monkeypatch.delenv(resolve.ENV_VAR, raising=False)

    def no_network(url: str):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(resolve, "_urlopen", no_network)
    return tmp_path


def test_explicit_path_wins_and_parent_is_accepted(isolated: Path, monkeypatch) -> None:
    rel = _release(isolated / "mine")
    monkeypatch.setenv(resolve.ENV_VAR, str(_release(isolated / "env")))
    assert resolve_codiesp_root(str(isolated / "mine")) == rel
    assert resolve_codiesp_root(str(rel)) == rel


def test_explicit_missing_path_is_error_naming_it(isolated: Path) -> None:
    with pytest.raises(DataError, match=r"data.root=.*nowhere: folder does not exist"):
        resolve_codiesp_root(str(isolated / "nowhere"))
    (isolated / "empty").mkdir()
    with pytest.raises(DataError, match="no CodiEsp release"):
        resolve_codiesp_root(str(isolated / "empty"))


def test_env_var_before_shared_and_cache(isolated: Path, monkeypatch) -> None:
    _release(isolated / "home" / "shared" / "data" / "codiesp")
    rel = _release(isolated / "env")
    monkeypatch.setenv(resolve.ENV_VAR, str(isolated / "env"))
    assert resolve_codiesp_root(cache_dir=isolated / "cache") == rel
    monkeypatch.setenv(resolve.ENV_VAR, str(isolated / "gone"))
    with pytest.raises(DataError, match=resolve.ENV_VAR):
        resolve_codiesp_root(cache_dir=isolated / "cache")


def test_shared_relative_to_cwd_then_repo_root(isolated: Path, monkeypatch) -> None:
    repo_rel = _release(isolated / "repo_parent" / "shared" / "data" / "codiesp")
    (isolated / "repo_parent" / "repo").mkdir()
    monkeypatch.setattr(resolve, "_REPO_ROOT", isolated / "repo_parent" / "repo")
    assert resolve_codiesp_root(cache_dir=isolated / "cache", download=False) == repo_rel
    cwd_rel = _release(isolated / "home" / "shared" / "data" / "codiesp")
    assert resolve_codiesp_root(cache_dir=isolated / "cache", download=False) == cwd_rel


def test_cache_is_used_without_network(isolated: Path) -> None:
    rel = _release(isolated / "cache" / "extracted" / "codiesp")
    assert resolve_codiesp_root(cache_dir=isolated / "cache") == rel


def _zip_bytes(tmp: Path) -> bytes:
    src = _release(tmp / "zipsrc")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in src.rglob("*"):
            zf.write(p, Path("codiesp") / p.relative_to(src.parent))
    return buf.getvalue()


def test_download_fetches_verifies_and_extracts_atomically(isolated: Path, monkeypatch, caplog) -> None:
    payload = _zip_bytes(isolated)
    calls: list[str] = []

    def fake_urlopen(url: str):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(resolve, "_urlopen", fake_urlopen)
    cache = isolated / "cache"
    with caplog.at_level("WARNING", logger="medcoder.data.resolve"):
        found = resolve_codiesp_root(cache_dir=cache)
    assert calls == [resolve.CODIESP_URL]
    assert found == cache / "extracted" / "codiesp" / REL
    assert (found / "train" / "trainD.tsv").read_text("utf-8") == "a\tn44.8\n"
    assert hashlib.sha256(payload).hexdigest() in caplog.text  # logged so it can be pinned
    assert sorted(p.name for p in cache.iterdir()) == ["codiesp.zip", "extracted"]  # no temp left
    # second call: served from the cache, no network
    monkeypatch.setattr(resolve, "_urlopen", lambda url: pytest.fail("downloaded twice"))
    assert resolve_codiesp_root(cache_dir=cache) == found


def test_download_checksum_mismatch_is_error_and_leaves_nothing(isolated: Path, monkeypatch) -> None:
    payload = _zip_bytes(isolated)
    monkeypatch.setattr(resolve, "_urlopen", lambda url: io.BytesIO(payload))
    monkeypatch.setattr(resolve, "CODIESP_SHA256", "0" * 64)
    cache = isolated / "cache"
    with pytest.raises(DataError, match="sha256"):
        resolve_codiesp_root(cache_dir=cache)
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(resolve, "CODIESP_SHA256", hashlib.sha256(payload).hexdigest())
    assert resolve_codiesp_root(cache_dir=cache).name == REL


def test_download_of_non_zip_is_error(isolated: Path, monkeypatch) -> None:
    monkeypatch.setattr(resolve, "_urlopen", lambda url: io.BytesIO(b"<html>rate limited</html>"))
    with pytest.raises(DataError, match="not a valid zip"):
        resolve_codiesp_root(cache_dir=isolated / "cache")
    assert not (isolated / "cache" / "codiesp.zip").exists()


def test_offline_error_lists_every_place_and_how_to_fix(isolated: Path, monkeypatch) -> None:
    def offline(url: str):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(resolve, "_urlopen", offline)
    cache = isolated / "cache"
    with pytest.raises(DataError) as info:
        resolve_codiesp_root(cache_dir=cache)
    msg = str(info.value)
    for expected in (
        "data.root: not set",
        f"{resolve.ENV_VAR}: not set",
        "relative to the current directory",
        "relative to the repository root",
        str(cache / "extracted"),
        resolve.CODIESP_URL,
        "Name or service not known",
        "data.root=",
    ):
        assert expected in msg
    with pytest.raises(DataError, match="download: disabled"):
        resolve_codiesp_root(cache_dir=cache, download=False)
