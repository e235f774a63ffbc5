"""scripts/spark_predict.py: a real Spark job (local[2]) over CodiEsp notes through the registered tiny
MLflow model gives what ``Coder.predict`` and the pyfunc model give; bad inputs and outputs are
refused before anything is written.

Needs pyspark (the ``spark`` extra) and Java 17+: both are part of the test set-up, so nothing here
is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medcoder.errors import ConfigError, DataError
from medcoder.inference.coder import Coder
from medcoder.inference.prediction import text_sha256
from medcoder.tracking.pyfunc import OUTPUT_COLUMNS
from medcoder.workflows.spark_predict import (
    MARKER,
    ResolvedModel,
    SparkOutputs,
    check_output_paths,
    spark_predict_from_config,
    spark_session,
    udf_env,
)

from ..helpers.configs import compose_named
from ..helpers.paths import CODIESP_DIR, REPO_ROOT, TINY_MODEL_NAME

EN_NOTES = CODIESP_DIR / "final_dataset_v4_to_publish" / "train" / "text_files_en"
MODEL_URI = f"models:/{TINY_MODEL_NAME}@candidate"
#: Beyond the 500 CodiEsp notes: an empty note (routed empty_note) and one over max_note_chars (cut,
#: flagged truncated, hashed as cut), so both special paths are compared too.
LONG_NOTE = "Persistent productive cough with fever and right lower lobe consolidation. " * 1400


def _notes(short_notes: str | Path | None = None) -> pd.DataFrame:
    """500 CodiEsp English notes, the two edge cases, and the tiny corpus's short test notes: the
    tiny model reads 128 tokens, so every CodiEsp note is routed to review as truncated; the short
    synthetic notes are the ones it auto-accepts codes of, so both decisions are compared."""
    files = sorted(EN_NOTES.glob("*.txt"))
    assert len(files) >= 500, f"expected the CodiEsp English train notes in {EN_NOTES}"
    rows = [(f.stem, f.read_text(encoding="utf-8")) for f in files[:500]]
    rows += [("edge-empty", ""), ("edge-long", LONG_NOTE)]
    if short_notes is not None:
        rows += [(r["id"], r["text"]) for r in map(json.loads, Path(short_notes).read_text().splitlines())]
    return pd.DataFrame(rows, columns=["id", "text"])


def _cfg(root: Path, **values: str):
    overrides = [f"paths.root_dir={root}", "spark.master='local[2]'", *(f"{k}={v}" for k, v in values.items())]
    return compose_named("spark_predict", overrides)


@pytest.fixture(scope="module")
def spark():
    session = spark_session({"master": "local[2]", "driver_memory": "2g", "log_level": "ERROR"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def job(tiny_bundle, spark, tmp_path_factory) -> dict:
    """One Spark scoring run of 518 notes, Parquet in, Parquet + audit + summary out."""
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    tmp = tmp_path_factory.mktemp("spark_predict")
    notes = _notes(tiny_bundle["corpus"]["test"])
    src = tmp / "notes.parquet"
    pq.write_table(pa.Table.from_pandas(notes, preserve_index=False), src)
    out = tmp / "out" / "predictions.parquet"
    result = spark_predict_from_config(_cfg(tiny_bundle["root"], model_uri=MODEL_URI, input=str(src), output=str(out)),
                                       spark=spark)
    return {"result": result, "notes": notes, "src": src, "out": out, "tmp": tmp}


def test_spark_gives_the_codes_and_decisions_of_coder_predict(job, tiny_bundle) -> None:
    notes = job["notes"]
    got = {r["id"]: r for r in pq.read_table(job["out"]).to_pylist()}
    assert sorted(got) == sorted(notes["id"])
    want = Coder.load(tiny_bundle["result"].bundle_dir).predict(list(notes["text"]), list(notes["id"]), progress=False)
    n_codes = n_accepted = 0
    for pred in want:
        row = got[pred.id]
        assert (row["document_decision"], row["document_reasons"], row["truncated"]) == \
               (pred.document_decision, pred.document_reasons, pred.truncated), pred.id
        assert (row["bundle_id"], row["codeset_fy"], row["policy_version"], row["input_sha256"]) == \
               (pred.bundle_id, pred.codeset_fy, pred.policy_version, pred.input_sha256), pred.id
        assert [c["code"] for c in row["codes"]] == [c.code for c in pred.codes], pred.id
        for c, w in zip(row["codes"], pred.codes, strict=True):
            assert (c["decision"], c["reasons"], c["sources"], c["description"]) == \
                   (w.decision, w.reasons, w.sources, w.description), (pred.id, w.code)
            assert abs(c["probability"] - w.probability) <= 1e-6, (pred.id, w.code)
            assert [(e["start"], e["end"], e["source"]) for e in c["evidence"]] == \
                   [(e["start"], e["end"], e["source"]) for e in w.evidence], (pred.id, w.code)
            n_accepted += c["decision"] == "auto_accept"
        n_codes += len(pred.codes)
    assert n_codes > 0 and n_accepted > 0, "the lax tiny policy auto-accepts some codes"
    assert got["edge-empty"]["document_reasons"] == ["empty_note"]
    assert got["edge-long"]["truncated"] and got["edge-long"]["input_sha256"] == text_sha256(LONG_NOTE[:100_000])
    summary = job["result"].summary
    assert (summary["notes"], summary["codes"], summary["auto_accepted"]) == (len(notes), n_codes, n_accepted)


def test_parquet_output_has_real_types_and_no_text(job) -> None:
    schema = pq.read_schema(next(job["out"].glob("part-*.parquet")))
    assert schema.names == list(OUTPUT_COLUMNS)
    assert schema.field("document_reasons").type == pa.list_(pa.string())
    code = schema.field("codes").type.value_type
    assert pa.types.is_struct(code)
    assert code.field("probability").type == pa.float64() and code.field("reasons").type == pa.list_(pa.string())
    span = code.field("evidence").type.value_type
    assert {span.field(n).type for n in ("start", "end")} == {pa.int64()}
    names = {f.name for f in code} | {f.name for f in span} | set(schema.names)
    assert "text" not in names  # evidence is offsets, never copied text


def test_audit_records_beside_the_output_without_note_text(job, tiny_bundle) -> None:
    outputs = SparkOutputs.beside(job["out"])
    assert outputs.audit.name == "predictions.audit" and outputs.summary.name == "predictions.summary.json"
    text = "".join(p.read_text() for p in sorted(outputs.audit.glob("part-*.json")))
    records = {r["id"]: r for r in map(json.loads, text.splitlines())}
    notes = job["notes"]
    assert sorted(records) == sorted(notes["id"])
    version = tiny_bundle["result"].registered_version
    for doc_id, note in zip(notes["id"], notes["text"], strict=True):
        r = records[doc_id]
        assert r["model_uri"] == f"models:/{TINY_MODEL_NAME}/{version}"  # the alias, resolved
        assert r["bundle_id"] == tiny_bundle["result"].manifest.bundle_id
        assert {"codeset_fy", "policy_version", "timestamp", "document_decision", "codes"} <= set(r)
        assert r["input_sha256"] == text_sha256(note[:100_000])
        for c in r["codes"]:
            assert set(c) == {"code", "probability", "decision", "reasons"}
    for note in notes["text"][:50]:
        words = note.split()
        assert not any(" ".join(words[i:i + 5]) in text for i in range(0, max(len(words) - 4, 0), 7))
    summary = json.loads(outputs.summary.read_text())
    assert summary["notes"] == len(notes) and summary["output_schema_version"] == 2
    assert json.loads((job["out"] / MARKER).read_text())["job"] == "medcoder.spark_predict"


def test_pyfunc_model_answers_what_spark_wrote(job, tiny_bundle) -> None:
    """Same MLflow model, two routes (pyfunc predict in-process, Spark UDF): identical rows."""
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    notes = pd.concat([job["notes"].iloc[:8], job["notes"].iloc[-8:]]).reset_index(drop=True)
    frame = mlflow.pyfunc.load_model(MODEL_URI).predict(notes)
    assert list(frame.columns) == list(OUTPUT_COLUMNS)
    got = {r["id"]: r for r in pq.read_table(job["out"]).to_pylist()}
    for row in frame.to_dict(orient="records"):
        spark_row = got[row["id"]]
        assert {k: v for k, v in row.items() if k != "timestamp"} == \
               {k: v for k, v in spark_row.items() if k != "timestamp"}, row["id"]


def test_parquet_without_text_column_is_one_line_and_writes_nothing(tiny_bundle, tmp_path) -> None:
    src = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "note": ["cough", "fever"]}), src)
    out = tmp_path / "out.parquet"
    cfg = _cfg(tiny_bundle["root"], model_uri=MODEL_URI, input=str(src), output=str(out))
    with pytest.raises(ConfigError, match=r"no_text\.parquet: missing column 'text'"):
        spark_predict_from_config(cfg)  # refused before Spark starts: no session is needed
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "spark_predict.py"), f"paths.root_dir={tiny_bundle['root']}",
         f"model_uri={MODEL_URI}", f"input={src}", f"output={out}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_text.parquet" in lines[0] \
        and "'text'" in lines[0], proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_text.parquet"]


def test_outputs_never_replace_the_input_or_a_foreign_folder(job, tmp_path) -> None:
    src = job["src"]
    with pytest.raises(ConfigError, match="would overwrite the input"):
        check_output_paths(SparkOutputs.beside(src), src, None, overwrite=True)
    folder_in = tmp_path / "lake"
    folder_in.mkdir()
    with pytest.raises(ConfigError, match="would overwrite the input"):
        check_output_paths(SparkOutputs.beside(tmp_path), folder_in, None, overwrite=True)  # output holds the input
    done = SparkOutputs.beside(job["out"])
    with pytest.raises(ConfigError, match="already exists"):
        check_output_paths(done, src, None, overwrite=False)
    check_output_paths(done, src, None, overwrite=True)  # this job's own result may be replaced
    foreign = tmp_path / "someone_else.parquet"
    foreign.mkdir()
    (foreign / "part-0.parquet").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not written by spark_predict"):
        check_output_paths(SparkOutputs.beside(foreign), src, None, overwrite=True)
    (foreign / MARKER).write_text(json.dumps({"job": "medcoder.spark_predict"}))
    (foreign / "notes.csv").write_text("id,text\n")  # a file Spark does not write: not ours to delete
    with pytest.raises(ConfigError, match="not written by spark_predict"):
        check_output_paths(SparkOutputs.beside(foreign), src, None, overwrite=True)


def test_jsonl_and_csv_inputs_and_id_checks(job, tiny_bundle, spark, tmp_path) -> None:
    notes = job["notes"].iloc[:6]
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(notes["id"], notes["text"],
                                                                                      strict=True)))
    csv_path = tmp_path / "notes.csv"
    notes.to_csv(csv_path, index=False)  # notes span lines: quoted cells
    got = {r["id"]: r for r in pq.read_table(job["out"]).to_pylist()}
    for src in (jsonl, csv_path):
        out = tmp_path / f"{src.suffix[1:]}.parquet"
        res = spark_predict_from_config(_cfg(tiny_bundle["root"], model_uri=MODEL_URI, input=str(src), output=str(out),
                                             **{"spark.partitions": "1"}), spark=spark)
        assert res.summary["notes"] == len(notes)
        for row in pq.read_table(out).to_pylist():
            want = got[row["id"]]
            assert row["input_sha256"] == want["input_sha256"], (src.name, row["id"])
            assert [(c["code"], c["decision"]) for c in row["codes"]] == [(c["code"], c["decision"]) for c in want["codes"]]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "cough"}\n{"id": "a", "text": "fever"}\n')
    with pytest.raises(DataError, match=r"duplicate ids \(1 of 2 rows repeat an id") as err:
        spark_predict_from_config(_cfg(tiny_bundle["root"], model_uri=MODEL_URI, input=str(dup),
                                       output=str(tmp_path / "dup.parquet")), spark=spark)
    assert "'a'" not in str(err.value)  # counted, never quoted (issue 22: no input values in errors)
    assert not (tmp_path / "dup.parquet").exists() and not list(tmp_path.glob(".dup*"))


def test_commit_replaces_all_outputs_or_none(tmp_path, monkeypatch) -> None:
    """The renames at the end: earlier results are moved aside and deleted only once every rename
    succeeded; a failed rename puts every earlier result back (no mix of two runs)."""
    import os
    import shutil

    from medcoder import atomic

    def folder(path: Path, content: str) -> Path:
        path.mkdir(exist_ok=True)
        (path / "part-0").write_text(content)
        return path

    def staged_pairs(tag: str) -> list[tuple[Path, Path]]:
        return [(folder(tmp_path / f".{name}.{tag}", f"{tag}-{name}"), tmp_path / name)
                for name in ("p.parquet", "p.audit", "x.parquet")]

    def content(name: str) -> str | None:
        path = tmp_path / name / "part-0"
        return path.read_text() if path.exists() else None

    folder(tmp_path / "p.parquet", "old-p.parquet")
    folder(tmp_path / "x.parquet", "old-x.parquet")  # p.audit does not exist yet
    real_replace = os.replace

    def failing_on_x(src, dst):
        if Path(dst).name == "x.parquet" and Path(src).name.endswith(".new"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_on_x)
    with pytest.raises(OSError, match="disk full"):
        atomic.replace_all(staged_pairs("new"))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert (content("p.parquet"), content("p.audit"), content("x.parquet")) == ("old-p.parquet", None, "old-x.parquet")
    for staged in tmp_path.glob(".*.new"):
        shutil.rmtree(staged)
    atomic.replace_all(staged_pairs("new"))
    assert [content(n) for n in ("p.parquet", "p.audit", "x.parquet")] == [
        "new-p.parquet", "new-p.audit", "new-x.parquet"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing left aside


def test_executors_get_the_tracking_uri_and_the_resolved_version(monkeypatch) -> None:
    """Issue 21 review: a Spark executor (another process, perhaps another host) loads the model
    with only the UDF's environment. It gets the job's tracking URI and the version the alias
    resolved to, so it obeys that version's status tag (and fails closed where it cannot read it);
    a MEDCODER_AUDIT_STATUS_URI of the driver's (``none``: the opt-out) is passed on as it is."""
    monkeypatch.delenv("MEDCODER_AUDIT_STATUS_URI", raising=False)
    model = ResolvedModel("models:/m/3", "models:/m@champion", None, "sqlite:///x/mlflow.db")
    env = udf_env(model, records_per_batch=4, max_note_chars=100, torch_threads=None)
    assert env["MEDCODER_AUDIT_STATUS_URI"] == "models:/m/3" and env["MLFLOW_TRACKING_URI"] == "sqlite:///x/mlflow.db"
    assert env["MEDCODER_MAX_REQUEST_ROWS"] == "4" and env["MEDCODER_MAX_NOTE_CHARS"] == "100"
    folder = ResolvedModel("/models/m", "/models/m", Path("/models/m"), "sqlite:///x/mlflow.db")
    env = udf_env(folder, records_per_batch=4, max_note_chars=100, torch_threads=1)
    assert "MEDCODER_AUDIT_STATUS_URI" not in env and env["MLFLOW_TRACKING_URI"] == "sqlite:///x/mlflow.db"
    monkeypatch.setenv("MEDCODER_AUDIT_STATUS_URI", "none")
    assert udf_env(model, records_per_batch=4, max_note_chars=100, torch_threads=None)[
        "MEDCODER_AUDIT_STATUS_URI"] == "none"
