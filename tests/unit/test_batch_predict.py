"""scripts/predict.py and its package function on the tiny bundle: outputs, audit log, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medcoder.errors import DataError
from medcoder.inference.batch import predict_file, read_notes
from medcoder.inference.coder import Coder

from ..conftest import REPO_ROOT


@pytest.fixture(scope="module")
def coder(tiny_bundle) -> Coder:
    return Coder.load(tiny_bundle["result"].bundle_dir)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_jsonl_predictions_and_an_audit_log_without_note_text(coder, tiny_bundle, tmp_path) -> None:
    src = tiny_bundle["corpus"]["test"]
    notes = _rows(src)
    out, audit = tmp_path / "pred.jsonl", tmp_path / "pred.audit.jsonl"
    summary = predict_file(coder, src, out, audit)
    preds, records = _rows(out), _rows(audit)
    assert [p["id"] for p in preds] == [n["id"] for n in notes] == [r["id"] for r in records]
    for r in records:
        assert r["bundle_id"] == coder.bundle_id and len(r["input_sha256"]) == 64
        assert {"codeset_fy", "policy_version", "timestamp", "document_decision", "codes"} <= set(r)
    audit_text = audit.read_text()
    for n in notes:
        words = n["text"].split()
        # no note, and no 4-word run of any note, appears in the audit log
        assert n["text"] not in audit_text
        assert not any(" ".join(words[i:i + 4]) in audit_text for i in range(len(words) - 3))
    assert summary.notes == len(notes) and summary.codes == sum(len(p["codes"]) for p in preds)
    assert summary.auto_accepted == sum(c["decision"] == "auto_accept" for p in preds for c in p["codes"])

    predict_file(coder, src, tmp_path / "t.jsonl", tmp_path / "t.audit.jsonl", include_text=True)
    assert [r["text"] for r in _rows(tmp_path / "t.audit.jsonl")] == [n["text"] for n in notes]


def test_txt_folder_with_an_empty_note_and_per_code_csv(coder, tmp_path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("pneumonia cough fever consolidation in the right lower lobe.")
    (folder / "b.txt").write_text("   \n")
    out = tmp_path / "pred.csv"
    summary = predict_file(coder, folder, out, tmp_path / "audit.jsonl", granularity="code")
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["id"] for r in rows} == {"a", "b"}
    empty = [r for r in rows if r["id"] == "b"]
    assert len(empty) == 1 and empty[0]["code"] == "" and empty[0]["document_reasons"] == "empty_note"
    assert summary.empty_notes == 1 and summary.notes == 2


def test_read_notes_errors_name_the_file(tmp_path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(DataError, match=r"bad\.txt: not valid UTF-8"):
        read_notes(tmp_path)
    (tmp_path / "x.jsonl").write_text('{"id": "1", "body": "no text column"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:1: missing column 'text'"):
        read_notes(tmp_path / "x.jsonl")
    with pytest.raises(DataError, match="unsupported file type"):
        read_notes(tmp_path / "bad.txt")


def _predict_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "predict.py"), *args,
                           f"paths.root_dir={cwd}"], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_predict_script_end_to_end_and_bad_input_exits_2_without_output(tiny_bundle, tmp_path) -> None:
    bundle = tiny_bundle["result"].bundle_dir
    out = tmp_path / "p.jsonl"
    ok = _predict_cli(f"bundle={bundle}", f"input={tiny_bundle['corpus']['test']}", f"output={out}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "summary: 16 notes" in ok.stdout
    assert out.is_file() and (tmp_path / "p.audit.jsonl").is_file() and (tmp_path / "p.summary.json").is_file()

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ok.txt").write_text("fever cough")
    (notes / "broken.txt").write_bytes(b"caf\xe9 latin-1")
    bad = _predict_cli(f"bundle={bundle}", f"input={notes}", f"output={tmp_path / 'q.jsonl'}", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "broken.txt" in bad.stderr
    assert not (tmp_path / "q.jsonl").exists() and not (tmp_path / "q.audit.jsonl").exists()
    assert not list(tmp_path.glob(".q.*"))  # no temp files left either

    nobundle = _predict_cli(f"bundle={tmp_path / 'missing'}", f"input={tiny_bundle['corpus']['test']}",
                            f"output={tmp_path / 'r.jsonl'}", cwd=tmp_path)
    assert nobundle.returncode == 2 and "error: bundle=" in nobundle.stderr and not (tmp_path / "r.jsonl").exists()
