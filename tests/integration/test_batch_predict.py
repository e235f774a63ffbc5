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

from ..helpers.paths import REPO_ROOT, TINY_MODEL_NAME


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


# -- issue 9: outputs that destroy inputs, half-written results, unbounded input, tracebacks ----------
def _cfg(tmp_path: Path, bundle: Path | str, inp: Path | str, out: Path | str, *extra: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="predict", overrides=[f"bundle={bundle}", f"input={inp}", f"output={out}",
                                                         f"paths.root_dir={tmp_path}", *extra])


@pytest.fixture
def no_bundle_load(monkeypatch):
    """Settings and paths must be refused before the bundle is even loaded."""
    def _fail(*_a, **_k):
        raise AssertionError("Coder.load was called before the settings were checked")
    monkeypatch.setattr(Coder, "load", classmethod(_fail))


def _notes_jsonl(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({"id": f"n{i}", "text": "fever cough pneumonia"}) + "\n" for i in range(n)))
    return path


def test_outputs_that_would_overwrite_the_input_or_bundle_are_refused(tiny_bundle, tmp_path, no_bundle_load) -> None:
    from medcoder.errors import ConfigError
    from medcoder.workflows.predict import predict_from_config

    bundle = Path(tiny_bundle["result"].bundle_dir)
    src = _notes_jsonl(tmp_path / "notes.jsonl")
    before = src.read_bytes()
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("fever")
    (tmp_path / "link.jsonl").symlink_to(src)
    (tmp_path / "existing_dir.jsonl").mkdir()
    cases = [
        (src, src, [], "would overwrite the input"),
        (src, tmp_path / "link.jsonl", [], "would overwrite the input"),           # symlink to the input
        (src, tmp_path / "p.jsonl", [f"audit.path={src}"], "audit.path=.* would overwrite the input"),
        (src, tmp_path / "p.jsonl", [f"summary_path={src}"], "summary_path=.* would overwrite the input"),
        (folder, tmp_path / "p.jsonl", [f"audit.path={folder / 'a.txt'}"], "would overwrite the input"),  # a note
        (folder, folder / "out" / "p.jsonl", [], "would overwrite the input"),     # inside the input folder
        (src, bundle / "p.jsonl", [], "inside the bundle"),
        (src, tmp_path / "p.jsonl", [f"audit.path={tmp_path / 'p.jsonl'}"], "same file as output="),
        (src, tmp_path / "p.jsonl", [f"summary_path={tmp_path / 'p.audit.jsonl'}"], "same file as audit.path="),
        (src, tmp_path / "existing_dir.jsonl", [], "is an existing folder"),
    ]
    for inp, out, extra, match in cases:
        with pytest.raises(ConfigError, match=match):
            predict_from_config(_cfg(tmp_path, bundle, inp, out, *extra))
    assert src.read_bytes() == before and (folder / "a.txt").read_text() == "fever"


@pytest.mark.parametrize("override, match", [
    ("block_size=0", "block_size=0"), ("batch_size=0", "batch_size=0"), ("evidence_top_k=-1", "evidence_top_k=-1"),
    ("max_note_chars=0", "max_note_chars=0"), ("batch_size=abc", "batch_size='abc'"),
    ("granularity=word", "granularity='word'"), ("audit.include_text=maybe", "audit.include_text"),
    ("resume=maybe", "resume='maybe' is not valid"), ("progress=1", "progress=1 is not valid"),
])
def test_bad_settings_are_config_errors_before_loading(tiny_bundle, tmp_path, no_bundle_load, override, match) -> None:
    from medcoder.errors import ConfigError
    from medcoder.workflows.predict import predict_from_config

    src = _notes_jsonl(tmp_path / "notes.jsonl")
    with pytest.raises(ConfigError, match=match):
        predict_from_config(_cfg(tmp_path, tiny_bundle["result"].bundle_dir, src, tmp_path / "p.jsonl", override))


def test_txt_folder_with_a_subfolder_or_broken_symlink_is_a_data_error(tmp_path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "ok.txt").write_text("fever")
    (folder / "x.txt").mkdir()
    with pytest.raises(DataError, match=r"x\.txt: a folder, not a note file"):
        read_notes(folder)
    (folder / "x.txt").rmdir()
    (folder / "y.txt").symlink_to(tmp_path / "missing.txt")
    with pytest.raises(DataError, match=r"y\.txt: broken symbolic link"):
        read_notes(folder)
    (folder / "y.txt").unlink()
    os.mkfifo(folder / "z.txt")  # reading a FIFO would block forever
    with pytest.raises(DataError, match=r"z\.txt: not a regular file"):
        read_notes(folder)


def test_empty_input_is_a_data_error_and_summary_json_has_no_nan(tmp_path) -> None:
    from medcoder.inference.batch import BatchSummary

    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no notes in input"):
        read_notes(tmp_path / "empty.jsonl")
    (tmp_path / "empty.csv").write_text("id,text\n")
    with pytest.raises(DataError, match="no notes in input"):
        read_notes(tmp_path / "empty.csv")
    d = BatchSummary().to_dict()
    assert d["share_auto_accepted"] is None and d["share_notes_fully_auto"] is None
    json.dumps(d, allow_nan=False)
    assert "n/a" in BatchSummary().line()


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def test_outputs_are_all_or_nothing_when_a_rename_fails(coder, tmp_path, monkeypatch) -> None:
    import medcoder.atomic as atomic
    from medcoder.ownership import OWNER_MARKER

    src = _notes_jsonl(tmp_path / "in" / "notes.jsonl") if (tmp_path / "in").mkdir() is None else None
    out = tmp_path / "out" / "p.jsonl"
    predict_file(coder, src, out)  # a previous, complete run
    old = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert set(old) == {"p.jsonl", "p.audit.jsonl", "p.summary.json"}
    _notes_jsonl(src, n=5)
    real_replace = atomic.os.replace
    calls = []

    def flaky_replace(a, b):
        if Path(b).name != OWNER_MARKER:  # the partial folder's ownership marker is written first
            calls.append(Path(b).name)
        if Path(b).name == "p.summary.json" and Path(a).name.endswith(".tmp") and "bak" not in Path(a).name:
            raise OSError(28, "No space left on device")
        return real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="No space left"):
        predict_file(coder, src, out)
    assert calls[:3] == ["p.jsonl", "p.audit.jsonl", "p.summary.json"]  # summary (the marker) last
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == old  # the previous run, restored
    assert not _temps(tmp_path)


def test_interrupt_and_sigterm_leave_no_outputs_and_no_temps(coder, tmp_path, monkeypatch) -> None:
    import signal

    from medcoder.atomic import Terminated

    src = _notes_jsonl(tmp_path / "notes.jsonl", n=4)
    real_predict = Coder.predict
    for stop, exc in ((lambda: os.kill(os.getpid(), signal.SIGTERM), Terminated),
                      (lambda: (_ for _ in ()).throw(KeyboardInterrupt), KeyboardInterrupt)):
        def predict_then_stop(self, *a, _stop=stop, **k):
            real_predict(self, *a, **k)
            _stop()
        monkeypatch.setattr(Coder, "predict", predict_then_stop)
        with pytest.raises(exc):
            predict_file(coder, src, tmp_path / "out" / "p.jsonl", include_text=True)
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_a_rerun_removes_temps_of_killed_runs(coder, tmp_path) -> None:
    import subprocess as sp

    dead = sp.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "p.jsonl"
    stale = tmp_path / f".p.audit.jsonl.medcoder-{dead.pid}-abc123.tmp"
    alive = tmp_path / f".p.jsonl.medcoder-{os.getppid()}-def456.tmp"  # another live run's temp: kept
    other = tmp_path / f".q.jsonl.medcoder-{dead.pid}-abc123.tmp"      # not one of our outputs: kept
    for f in (stale, alive, other):
        f.write_text("note text from a killed run")
    predict_file(coder, _notes_jsonl(tmp_path / "notes.jsonl"), out)
    assert not stale.exists() and alive.exists() and other.exists()


def test_long_notes_are_truncated_and_flagged_and_huge_lines_refused(coder, tmp_path) -> None:
    note = "pneumonia cough fever consolidation " * 3
    src = tmp_path / "notes.jsonl"
    src.write_text(json.dumps({"id": "long", "text": note}) + "\n" + json.dumps({"id": "short", "text": "fever"}) + "\n")
    out = tmp_path / "p.jsonl"
    summary = predict_file(coder, src, out, max_note_chars=40, include_text=True)
    preds = {p["id"]: p for p in _rows(out)}
    assert preds["long"]["truncated"] and not preds["short"]["truncated"]
    assert all("truncated_note" in c["reasons"] for c in preds["long"]["codes"])
    assert summary.truncated_notes == 1
    assert {r["id"]: r["text"] for r in _rows(tmp_path / "p.audit.jsonl")}["long"] == note[:40]
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "long.txt").write_text(note)
    predict_file(coder, folder, tmp_path / "t.csv", max_note_chars=40, granularity="code")
    with (tmp_path / "t.csv").open() as fh:
        assert {r["truncated"] for r in csv.DictReader(fh)} == {"True"}
    src.write_text(json.dumps({"id": "huge", "text": "x" * 10_000}) + "\n")  # > 16 x 10 + 4096 bytes
    with pytest.raises(DataError, match=r"notes\.jsonl:1: line longer than"):
        predict_file(coder, src, tmp_path / "h.jsonl", max_note_chars=10)
    assert not (tmp_path / "h.jsonl").exists()


def test_csv_output_escapes_spreadsheet_formulas(coder, tmp_path) -> None:
    src = tmp_path / "notes.jsonl"
    ids = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "plain"]
    src.write_text("".join(json.dumps({"id": i, "text": "fever"}) + "\n" for i in ids))
    predict_file(coder, src, tmp_path / "p.csv")
    with (tmp_path / "p.csv").open(newline="") as fh:
        got = [r["id"] for r in csv.DictReader(fh)]
    assert got == ["'" + i for i in ids[:-1]] + ["plain"]


def test_cli_refuses_output_equal_to_input_and_keeps_the_notes(tiny_bundle, tmp_path) -> None:
    src = _notes_jsonl(tmp_path / "notes.jsonl")
    before = src.read_bytes()
    res = _predict_cli(f"bundle={tiny_bundle['result'].bundle_dir}", f"input={src}", f"output={src}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: output=") and "overwrite the input" in res.stderr
    assert src.read_bytes() == before  # (Hydra's own log folder aside) nothing was written:
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "outputs") == ["notes.jsonl"]


# -- issue 13: streaming, resumable batch prediction -----------------------------------------------------
#: Runs scripts/predict.py with Coder.predict slowed down (0.25 s a block), so a test can SIGKILL it
#: mid-run at a known point; the script itself is unchanged (runpy, as ``python scripts/predict.py``).
SLOW_DRIVER = """
import runpy, sys, time
from medcoder.inference.coder import Coder
real = Coder.predict
def slow(self, *a, **k):
    time.sleep(0.25)
    return real(self, *a, **k)
Coder.predict = slow
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _no_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]


def test_a_sigkilled_run_resumes_to_the_output_of_an_uninterrupted_run(coder, tiny_bundle, tmp_path) -> None:
    import signal
    import time

    bundle = tiny_bundle["result"].bundle_dir
    words = ["fever", "cough", "pneumonia", "consolidation", "lobe", "chest", "pain", "diabetes"]
    src = tmp_path / "notes.jsonl"
    src.write_text("".join(json.dumps({"id": f"n{i:03d}", "text": " ".join(words[(i + j) % 8] for j in range(2 + i % 9))})
                           + "\n" for i in range(60)))
    args = [f"bundle={bundle}", f"input={src}", "block_size=4", "progress=false"]
    predict_file(coder, src, tmp_path / "ref.jsonl", block_size=4, progress=False)  # uninterrupted, in process

    out = tmp_path / "out" / "p.jsonl"
    state = tmp_path / "out" / ".p.jsonl.medcoder-partial" / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DRIVER, str(REPO_ROOT / "scripts" / "predict.py"), *args,
                             f"output={out}", f"paths.root_dir={tmp_path}"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file():
            done = json.loads(state.read_text())["notes_done"]
            if done >= 12:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert 12 <= done < 60 and not out.exists() and not (tmp_path / "out" / "p.summary.json").exists()

    # the same output with another setting: refused in one line, exit 2, the partial untouched
    kept = {f.name: f.read_bytes() for f in state.parent.iterdir() if f.is_file()}
    refused = _predict_cli(*args, f"output={out}", "evidence_top_k=1", cwd=tmp_path)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: output=") and "differs in: settings.evidence_top_k" in last and "delete" in last
    assert {f.name: f.read_bytes() for f in state.parent.iterdir() if f.is_file()} == kept

    again = _predict_cli(*args, f"output={out}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "p.summary.json").read_text())
    assert summary["notes"] == 60 and summary["resumed_notes"] >= 12
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == ids and len(set(ids)) == 60  # every id exactly once, in input order
    assert _no_time(_rows(out)) == _no_time(_rows(tmp_path / "ref.jsonl"))
    assert _no_time(_rows(tmp_path / "out" / "p.audit.jsonl")) == _no_time(_rows(tmp_path / "ref.audit.jsonl"))
    ref_summary = json.loads((tmp_path / "ref.summary.json").read_text())
    skip = ("wall_seconds", "resumed_notes", "predictions", "audit")
    assert {k: v for k, v in summary.items() if k not in skip} == {k: v for k, v in ref_summary.items() if k not in skip}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p.audit.jsonl", "p.jsonl", "p.summary.json"]


def test_parquet_in_parquet_out_through_the_script(tiny_bundle, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    notes = _rows(tiny_bundle["corpus"]["test"])
    src = tmp_path / "notes.parquet"
    pq.write_table(pa.table({"doc": [n["id"] for n in notes], "body": [n["text"] for n in notes]}), src,
                   row_group_size=5)
    out = tmp_path / "p.parquet"
    res = _predict_cli(f"bundle={tiny_bundle['result'].bundle_dir}", f"input={src}", f"output={out}",
                       "id_column=doc", "text_column=body", "block_size=6", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"summary: {len(notes)} notes" in res.stdout
    assert "notes/s" in res.stderr  # the progress bar
    pf = pq.ParquetFile(out)
    assert pf.metadata.num_rows == len(notes) and pf.metadata.num_row_groups == -(-len(notes) // 6)
    codes = pf.schema_arrow.field("codes").type
    assert pa.types.is_list(codes) and pa.types.is_struct(codes.value_type)
    assert [r["id"] for r in pf.read(columns=["id"]).to_pylist()] == [n["id"] for n in notes]


# -- issue 22: outputs in the registry's bundle, note text in errors -------------------------------------------
def test_output_into_the_registered_models_bundle_is_refused_and_loads_stay_fresh(tiny_bundle, tmp_path) -> None:
    """`predict output=<the artifact store's registered bundle>/p.jsonl` was accepted, and every later
    fresh load of that model failed its hash check. Refused as inside the artifact store (from the
    store's own experiment record) before anything is loaded or written."""
    root = Path(tiny_bundle["root"])
    manifests = [m for m in (root / "mlartifacts").rglob("manifest.json") if (m.parent / "labels.json").is_file()]
    assert manifests, "the registered model keeps its bundle in the artifact store"
    registered = manifests[0].parent
    before = sorted(p.name for p in registered.iterdir())
    src = _notes_jsonl(tmp_path / "notes.jsonl")
    for extra in ([f"output={registered / 'p.jsonl'}"],
                  [f"output={tmp_path / 'p.jsonl'}", f"audit.path={registered / 'model' / 'a.jsonl'}"]):
        res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "predict.py"),
                              f"bundle=models:/{TINY_MODEL_NAME}@candidate", f"input={src}", *extra,
                              f"paths.root_dir={root}"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})
        assert res.returncode == 2, res.stderr[-2000:]
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "inside an MLflow artifact store" in last, last
    assert sorted(p.name for p in registered.iterdir()) == before and not (registered / "p.jsonl").exists()


def test_predict_cli_never_prints_a_headerless_csvs_note(tiny_bundle, tmp_path) -> None:
    secret = "Mrs Jane Roe QUOKKA-5521 admitted with chest pain"
    src = tmp_path / "notes.csv"
    src.write_text(f'1,"{secret}"\n2,"fever"\n')
    res = _predict_cli(f"bundle={tiny_bundle['result'].bundle_dir}", f"input={src}", f"output={tmp_path / 'p.jsonl'}",
                       cwd=tmp_path)
    assert res.returncode == 2 and "missing column 'id'" in res.stderr, res.stderr[-2000:]
    assert "QUOKKA" not in res.stderr + res.stdout and "Jane Roe" not in res.stderr + res.stdout
    res = _predict_cli(f"bundle={tiny_bundle['result'].bundle_dir}", f"input={src}", f"output={tmp_path / 'p.jsonl'}",
                       "id_column=text", cwd=tmp_path)
    assert res.returncode == 2 and "name the same column" in res.stderr.strip().splitlines()[-1]


def test_only_a_real_earlier_partial_is_reported_as_removed(coder, tmp_path, caplog) -> None:
    """A fresh run's own folder (its ownership marker and lock) is not "an earlier partial run"."""
    import logging

    src = _notes_jsonl(tmp_path / "notes.jsonl")
    with caplog.at_level(logging.INFO, logger="medcoder.inference.batch.partial"):
        predict_file(coder, src, tmp_path / "fresh.jsonl")
    assert "removing the earlier partial run" not in caplog.text
