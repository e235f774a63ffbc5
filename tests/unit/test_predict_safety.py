"""Issue 22 for batch prediction: outputs never go into MLflow's or medcoder's managed places and
never replace a file medcoder did not write; resume hashes a folder's notes; link loops and a
damaged ``state.json`` are one-line errors.

The ``Coder`` is the tiny random encoder of ``conftest.py``; no training, no bundle.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from medcoder.errors import ConfigError, DataError
from medcoder.inference.batch import OutputPaths, check_paths, predict_file, read_notes
from medcoder.inference.batch.protect import artifact_stores, is_our_output
from medcoder.inference.coder import Coder

from ..helpers.coders import tiny_coder
from ..helpers.configs import compose_named

NOTES = [(f"n{i}", f"fever cough pneumonia note {i}") for i in range(5)]


@pytest.fixture(scope="module")
def coder(tmp_path_factory, tiny_encoder) -> Coder:
    return tiny_coder(tmp_path_factory.mktemp("safety_coder"), tiny_encoder)


def _jsonl(path: Path, notes=NOTES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in notes), "utf-8")
    return path


def _folder(path: Path, notes=NOTES) -> Path:
    path.mkdir(parents=True)
    for i, t in notes:
        (path / f"{i}.txt").write_text(t, "utf-8")
    return path


# -- protected places -----------------------------------------------------------------------------------
def test_outputs_inside_an_mlflow_artifact_store_are_refused(tmp_path) -> None:
    """The store's experiments keep artifacts wherever they were created: read from the store."""
    from mlflow import MlflowClient

    root, elsewhere = tmp_path / "project", tmp_path / "artifacts-elsewhere"
    root.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("x", artifact_location=elsewhere.as_uri())
    stores = [p for _, p in artifact_stores(uri, root, tmp_path / "custom")]
    assert elsewhere.resolve() in stores and (root / "mlartifacts") in stores and (root / "mlruns") in stores
    assert (tmp_path / "custom") in stores
    src = _jsonl(tmp_path / "notes.jsonl")
    for out in (elsewhere / "1" / "run" / "artifacts" / "bundle" / "p.jsonl", root / "mlruns" / "p.jsonl",
                root / "mlartifacts" / "p.jsonl", tmp_path / "custom" / "p.jsonl"):
        with pytest.raises(ConfigError, match="inside an MLflow artifact store") as err:
            check_paths(OutputPaths.beside(out), src, None, protected=artifact_stores(uri, root, tmp_path / "custom"))
        assert "\n" not in str(err.value)
    check_paths(OutputPaths.beside(root / "outputs" / "p.jsonl"), src, None, protected=artifact_stores(uri, root))


def test_a_store_is_read_not_created(tmp_path) -> None:
    artifact_stores(None, tmp_path)
    artifact_stores(f"sqlite:///{tmp_path / 'other.db'}", tmp_path)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "other.db").exists()
    (tmp_path / "junk.db").write_text("not sqlite")  # an unreadable store only loses its extra roots
    assert {p for _, p in artifact_stores(f"sqlite:///{tmp_path / 'junk.db'}", tmp_path)} == {
        tmp_path / "mlruns", tmp_path / "mlartifacts"}
    store = tmp_path / "filestore"
    (store / "3").mkdir(parents=True)
    (store / "3" / "meta.yaml").write_text(f"artifact_location: {(tmp_path / 'fs-art').as_uri()}\nname: y\n")
    found = {p for _, p in artifact_stores(store.as_uri(), tmp_path)}
    assert store in found and tmp_path / "fs-art" in found


def test_predict_config_refuses_outputs_in_the_store_before_loading(tmp_path, monkeypatch) -> None:
    from medcoder.workflows.predict import predict_from_config

    monkeypatch.setattr(Coder, "load", classmethod(lambda *a, **k: pytest.fail("loaded before the paths were checked")))
    src = _jsonl(tmp_path / "notes.jsonl")
    for out, extra in ((tmp_path / "mlartifacts" / "1" / "r" / "artifacts" / "p.jsonl", []),
                       (tmp_path / "out" / "p.jsonl", [f"summary_path={tmp_path / 'mlruns' / 's.json'}"]),
                       (tmp_path / "store" / "p.jsonl", [f"tracking.artifact_dir={tmp_path / 'store'}"])):
        cfg = compose_named("predict", [f"bundle={tmp_path / 'b'}", f"input={src}", f"output={out}",
                                        f"paths.root_dir={tmp_path}", *extra])
        with pytest.raises(ConfigError, match="inside an MLflow artifact store"):
            predict_from_config(cfg)
    assert not (tmp_path / "mlflow.db").exists()


def test_outputs_inside_any_bundle_model_or_the_bundle_cache_are_refused(tmp_path) -> None:
    from medcoder.inference.bundle.cache import bundle_cache_root

    src = _jsonl(tmp_path / "notes.jsonl")
    bundle = tmp_path / "some-bundle"
    (bundle / "model").mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"schema_version": 3, "bundle_id": "b", "files": {}}))
    model = tmp_path / "mlflow-model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    cases = [(bundle / "p.jsonl", "inside a bundle"), (bundle / "model" / "deep" / "p.jsonl", "inside a bundle"),
             (model / "artifacts" / "p.jsonl", "inside an MLflow model"),
             (bundle_cache_root() / "m" / "p.jsonl", "inside the cache of bundles")]
    for out, match in cases:
        with pytest.raises(ConfigError, match=match):
            check_paths(OutputPaths.beside(out), src, None)
    (bundle / "manifest.json").write_text(json.dumps({"name": "a web app's manifest"}))
    check_paths(OutputPaths.beside(bundle / "p.jsonl"), src, None)  # not a medcoder manifest


# -- existing outputs ---------------------------------------------------------------------------------------
def test_existing_files_medcoder_did_not_write_are_not_replaced(coder, tmp_path) -> None:
    src = _jsonl(tmp_path / "notes.jsonl")
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = db.read_bytes()
    other = _jsonl(tmp_path / "other.jsonl")  # notes, not predictions
    (tmp_path / "sheet.csv").write_text("name,amount\na,1\n")
    (tmp_path / "link.jsonl").symlink_to(other)
    os.mkfifo(tmp_path / "fifo.jsonl")
    cases = [(tmp_path / "p.jsonl", {"summary_path": db}, "summary_path=.*mlflow.db exists and is not a medcoder"),
             (other, {}, "output=.*other.jsonl exists and is not a medcoder predictions file"),
             (tmp_path / "sheet.csv", {}, "is not a medcoder predictions file"),
             (tmp_path / "p.jsonl", {"audit_path": other}, "audit.path=.* is not a medcoder audit log"),
             (tmp_path / "link.jsonl", {}, "is an existing symbolic link"),
             (tmp_path / "fifo.jsonl", {}, "is not a medcoder predictions file")]
    for out, kw, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            predict_file(coder, src, out, progress=False, **kw)
        assert "move that file away" in str(err.value) or "remove the link" in str(err.value)
    assert db.read_bytes() == before and other.read_text().count("\n") == len(NOTES)
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_medcoders_own_outputs_are_replaced(coder, tmp_path, fmt) -> None:
    src = _jsonl(tmp_path / "notes.jsonl")
    out = tmp_path / f"p.{fmt}"
    predict_file(coder, src, out, progress=False)
    paths = OutputPaths.beside(out)
    assert is_our_output(paths.predictions, "output", fmt) and is_our_output(paths.audit, "audit.path", fmt)
    assert is_our_output(paths.summary, "summary_path", fmt)
    assert predict_file(coder, _jsonl(src, NOTES[:2]), out, progress=False).notes == 2


def test_a_file_put_in_place_while_predicting_is_not_replaced(coder, tmp_path, monkeypatch) -> None:
    src = _jsonl(tmp_path / "notes.jsonl")
    out = tmp_path / "p.jsonl"
    real = Coder.predict

    def predict_and_interfere(self, *a, **k):
        out.write_text("someone else's file\n")
        return real(self, *a, **k)

    monkeypatch.setattr(Coder, "predict", predict_and_interfere)
    with pytest.raises(ConfigError, match="not a medcoder predictions file"):
        predict_file(coder, src, out, progress=False)
    assert out.read_text() == "someone else's file\n" and not OutputPaths.beside(out).summary.exists()


# -- resume, link loops, a damaged state --------------------------------------------------------------------
class _Stop(Exception):
    pass


def _stop_after_first_block(monkeypatch) -> None:
    real, calls = Coder.predict, {"n": 0}

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise _Stop
        return real(self, *a, **k)

    monkeypatch.setattr(Coder, "predict", failing)


def test_an_edited_note_of_the_same_size_and_mtime_is_not_skipped_on_resume(coder, tmp_path, monkeypatch) -> None:
    folder = _folder(tmp_path / "notes")
    out = tmp_path / "p.jsonl"
    kw = {"block_size": 2, "progress": False, "resume": True}
    _stop_after_first_block(monkeypatch)
    with pytest.raises(_Stop):
        predict_file(coder, folder, out, **kw)
    monkeypatch.undo()
    note = folder / "n0.txt"  # predicted in the finished block
    st = note.stat()
    note.write_text(note.read_text().replace("fever", "FEVER"), "utf-8")  # same size
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    with pytest.raises(ConfigError, match=r"differs in: input"):
        predict_file(coder, folder, out, **kw)
    os.utime(folder / "n1.txt")  # touching is not a change: only content counts
    note.write_text(note.read_text().replace("FEVER", "fever"), "utf-8")
    assert predict_file(coder, folder, out, **kw).resumed_notes == 2


def test_symlink_loops_in_the_input_folder_are_one_line_data_errors(coder, tmp_path) -> None:
    folder = _folder(tmp_path / "notes")
    (folder / "loop.txt").symlink_to("loop.txt")
    (folder / "a.txt").symlink_to("b.txt")
    (folder / "b.txt").symlink_to("a.txt")
    with pytest.raises(DataError, match=r"a\.txt: a symbolic link loop") as err:
        read_notes(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"cannot be resolved \(a symbolic link loop\)"):
        predict_file(coder, folder, tmp_path / "p.jsonl", progress=False)
    (tmp_path / "self.jsonl").symlink_to("self.jsonl")
    with pytest.raises(ConfigError, match=r"output=.*self\.jsonl: cannot be resolved"):
        predict_file(coder, _jsonl(tmp_path / "n.jsonl"), tmp_path / "self.jsonl", progress=False)


def _damaged_states() -> list[str]:
    good = {"version": 1, "fingerprint": {}, "notes_done": 2, "last_id": "n1", "blocks": 1,
            "bytes": {"predictions": 0, "audit": 0}, "summary": {"notes": 2}}
    return ["[" * 100_000 + "]" * 100_000, "\xff\xfe", "[]", "null",
            json.dumps({**good, "bytes": ["predictions", "audit"]}),
            json.dumps({**good, "bytes": {"predictions": "12", "audit": 0}}),
            json.dumps({**good, "notes_done": 1.5}), json.dumps({**good, "last_id": None}),
            json.dumps({**good, "summary": {"notes": "2"}}), json.dumps({**good, "summary": {"reasons": [1]}})]


@pytest.mark.parametrize("text", _damaged_states(), ids=lambda t: t[:20])
def test_a_damaged_state_json_is_a_one_line_error_and_the_partial_is_kept(coder, tmp_path, monkeypatch,
                                                                          text) -> None:
    src = _jsonl(tmp_path / "notes.jsonl")
    out = tmp_path / "p.jsonl"
    kw = {"block_size": 2, "progress": False, "resume": True}
    _stop_after_first_block(monkeypatch)
    with pytest.raises(_Stop):
        predict_file(coder, src, out, **kw)
    monkeypatch.undo()
    partial = OutputPaths.beside(out).partial
    state = partial / "state.json"
    if text.startswith("{"):  # a damaged field, the rest (fingerprint included) intact
        good = json.loads(state.read_text())
        text = json.dumps({**good, **{k: v for k, v in json.loads(text).items() if k != "fingerprint"}})
    state.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"the partial run in .* is unreadable \(state\.json: ") as err:
        predict_file(coder, src, out, **kw)
    assert "\n" not in str(err.value) and "delete" in str(err.value)
    assert state.read_bytes() == text.encode("latin-1")  # left as it was, for the user to look at


def test_spark_outputs_stay_out_of_bundles_models_and_artifact_stores(tmp_path) -> None:
    from medcoder.inference.batch.spark import SparkOutputs, check_output_paths

    src = _jsonl(tmp_path / "notes.jsonl")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"schema_version": 3, "bundle_id": "b", "files": {}}))
    stores = artifact_stores(None, tmp_path / "project")
    for out, match in ((bundle / "p.parquet", "inside a bundle"),
                       (tmp_path / "project" / "mlartifacts" / "p.parquet", "inside an MLflow artifact store"),
                       (tmp_path / "project", "a folder holding an MLflow artifact store")):
        with pytest.raises(ConfigError, match=match):
            check_output_paths(SparkOutputs.beside(out), src, None, overwrite=True, protected=stores)
