"""Streaming batch prediction (issue 13): every input format read lazily, Parquet output with
nested types, bounded read-ahead, and resuming an interrupted run from its partial.

The ``Coder`` is the tiny random encoder of ``conftest.py`` (decision threshold 0: every code is
predicted for every note, so rows, evidence and routing are exercised); no bundle, no training.
Memory is checked by structure (how far the reader runs ahead of ``Coder.predict``), not by RSS.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medcoder.errors import ConfigError, DataError
from medcoder.inference.batch import (
    NoteSource,
    OutputPaths,
    output_columns,
    parquet_schema,
    predict_file,
    predict_notes,
    read_notes,
)
from medcoder.inference.batch import run as batch_run
from medcoder.inference.batch import sources as batch_sources
from medcoder.inference.batch.partial import _Partial
from medcoder.inference.coder import Coder

from ..helpers.coders import tiny_coder as _coder

WORDS = ["fever", "cough", "pneumonia", "diabetes", "hypertension", "fracture", "consolidation", "lobe", "chest", "pain"]
N = 11  # not a multiple of the block size: the last block is short


@pytest.fixture(scope="module")
def coder(tmp_path_factory, tiny_encoder) -> Coder:
    return _coder(tmp_path_factory.mktemp("stream_coder"), tiny_encoder)


def _notes(n: int = N) -> list[tuple[str, str]]:
    return [(f"n{i:03d}", " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 7))) for i in range(n)]


def _write(kind: str, folder: Path, notes: list[tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "txt":
        d = folder / "notes"
        d.mkdir()
        for i, t in notes:
            (d / f"{i}.txt").write_text(t, encoding="utf-8")
        return d
    if kind == "jsonl":
        p = folder / "notes.jsonl"
        p.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in notes), encoding="utf-8")
        return p
    if kind == "csv":
        p = folder / "notes.csv"
        with p.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            w.writerows(notes)
        return p
    p = folder / "notes.parquet"
    pq.write_table(pa.table({"id": [i for i, _ in notes], "text": [t for _, t in notes]}), p, row_group_size=4)
    return p


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]


def _no_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]


# -- reading -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "parquet"])
def test_every_input_format_streams_the_same_notes(tmp_path, kind) -> None:
    notes = _notes()
    source = NoteSource(_write(kind, tmp_path, notes), parquet_batch_rows=3)
    assert source.count is None
    assert source.scan() is source and source.count == N and source.fingerprint
    assert list(source) == notes == read_notes(source.path)
    assert source.current_fingerprint() == source.fingerprint


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "parquet"])
def test_the_reader_is_lazy(tmp_path, kind, monkeypatch) -> None:
    """Taking the first note reads one note (one Parquet batch) from the file, not the input."""
    source = NoteSource(_write(kind, tmp_path, _notes()), parquet_batch_rows=2)
    reads = {"n": 0}

    def counted(gen):
        for item in gen:
            reads["n"] += 1
            yield item

    if kind == "txt":
        real_txt = batch_sources._read_txt
        monkeypatch.setattr(batch_sources, "_read_txt", lambda *a: (reads.__setitem__("n", reads["n"] + 1), real_txt(*a))[1])
    elif kind == "parquet":
        real_batches = pq.ParquetFile.iter_batches
        monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, **k: counted(real_batches(self, **k)))
    else:
        name = f"_read_{kind}"
        real_rows = getattr(batch_sources, name)
        monkeypatch.setattr(batch_sources, name, lambda *a: counted(real_rows(*a)))
    it = iter(source)
    assert next(it) == _notes()[0]
    assert reads["n"] == 1
    assert next(it) == _notes()[1] and reads["n"] == (1 if kind == "parquet" else 2)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_reading_stays_within_one_block_of_predicting(coder, tmp_path, kind, monkeypatch) -> None:
    """Memory bound by structure: when ``Coder.predict`` gets block k, the reader has produced at
    most (k + 1) blocks of notes (here exactly: no read-ahead), and every output row is written."""
    block = 3
    source = NoteSource(_write(kind, tmp_path / "in", _notes()), parquet_batch_rows=block).scan()
    produced = 0
    real_located = NoteSource.located

    def counting(self):
        nonlocal produced
        for item in real_located(self):
            produced += 1
            yield item

    monkeypatch.setattr(NoteSource, "located", counting)
    seen: list[tuple[int, int]] = []
    real_predict = Coder.predict

    def watching(self, texts, ids=None, **kw):
        seen.append((len(texts), produced))
        return real_predict(self, texts, ids, **kw)

    monkeypatch.setattr(Coder, "predict", watching)
    out = OutputPaths.beside(tmp_path / "out" / "p.jsonl")
    predict_notes(coder, source, out, fmt="jsonl", granularity="note", block_size=block, progress=False)
    assert [n for n, _ in seen] == [3, 3, 3, 2]
    cumulative = 0
    for n, pulled in seen:
        cumulative += n
        assert pulled == cumulative  # the reader never ran ahead of the block being predicted
    assert [r["id"] for r in _jsonl(out.predictions)] == [i for i, _ in _notes()]


def test_scan_refuses_duplicates_empty_input_and_bad_parquet(tmp_path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"id": i, "text": "x"}) + "\n" for i in ["a", "b", "c", "b"]))
    with pytest.raises(DataError, match=r"d\.jsonl:4: duplicate id \(first at .*d\.jsonl:2\)"):
        NoteSource(p).scan()
    (tmp_path / "e.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"e\.parquet: not a readable Parquet file"):
        NoteSource(tmp_path / "e.parquet").scan()
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="no notes in input"):
        NoteSource(tmp_path / "empty.parquet").scan()
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"m\.parquet: missing column 'text'"):
        NoteSource(tmp_path / "m.parquet").scan()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", None]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet:row 2: column 'text' is null"):
        NoteSource(tmp_path / "n.parquet").scan()
    pq.write_table(pa.table({"id": ["a"], "text": [3]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="must be text"):
        NoteSource(tmp_path / "t.parquet").scan()
    pq.write_table(pa.table({"id": [7, 8], "text": ["x" * 50, "y"]}), tmp_path / "i.parquet")
    assert list(NoteSource(tmp_path / "i.parquet", max_note_chars=10).scan()) == [("7", "x" * 11), ("8", "y")]


# -- writing -----------------------------------------------------------------------------------------
def test_parquet_output_has_nested_types_and_one_row_group_per_block(coder, tmp_path) -> None:
    src = _write("jsonl", tmp_path / "in", _notes())
    predict_file(coder, src, tmp_path / "p.jsonl", block_size=4, progress=False)
    predict_file(coder, src, tmp_path / "p.parquet", block_size=4, progress=False)
    pf = pq.ParquetFile(tmp_path / "p.parquet")
    assert pf.metadata.num_row_groups == 3 and pf.metadata.num_rows == N
    schema = pf.schema_arrow
    codes = schema.field("codes").type
    assert pa.types.is_list(codes) and pa.types.is_struct(codes.value_type)
    code = codes.value_type
    assert code.field("probability").type == pa.float64()
    assert pa.types.is_list(code.field("reasons").type) and code.field("reasons").type.value_type == pa.string()
    evidence = code.field("evidence").type
    assert pa.types.is_struct(evidence.value_type) and evidence.value_type.field("start").type == pa.int64()
    assert schema.field("truncated").type == pa.bool_() and schema.field("codeset_fy").type == pa.int32()
    got = pf.read().to_pylist()
    want = _jsonl(tmp_path / "p.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert len(g["codes"]) == len(w["codes"]) > 0
        for gc, wc in zip(g["codes"], w["codes"], strict=True):
            assert (gc["code"], gc["probability"], gc["decision"], gc["reasons"]) == \
                (wc["code"], wc["probability"], wc["decision"], wc["reasons"])
            assert [{k: v for k, v in e.items() if v is not None} for e in gc["evidence"]] == wc["evidence"]
    predict_file(coder, src, tmp_path / "c.parquet", granularity="code", progress=False)
    flat = pq.read_table(tmp_path / "c.parquet")
    assert flat.schema.names == output_columns("code") and flat.schema.field("probability").type == pa.float64()


def test_parquet_schema_covers_every_output_column() -> None:
    for granularity in ("note", "code"):
        assert parquet_schema(granularity).names == output_columns(granularity)


def test_csv_and_jsonl_outputs_of_a_streamed_run_have_one_row_per_note(coder, tmp_path) -> None:
    src = _write("parquet", tmp_path / "in", _notes())
    predict_file(coder, src, tmp_path / "p.csv", block_size=2, progress=False)
    with (tmp_path / "p.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [i for i, _ in _notes()]  # one header, no header repeated per block
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    assert summary["notes"] == N and summary["resumed_notes"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "p.audit.jsonl", "p.csv", "p.summary.json"]


# -- resuming ----------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _interrupt_after(monkeypatch, blocks: int) -> None:
    """``Coder.predict`` fails on block ``blocks + 1`` (an error mid-run; SIGKILL is tested with
    a real subprocess in tests/integration/test_batch_predict.py)."""
    real = Coder.predict
    calls = {"n": 0}

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > blocks:
            raise _Stop("stopped")
        return real(self, *a, **k)

    monkeypatch.setattr(Coder, "predict", failing)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(coder, tmp_path, monkeypatch, fmt) -> None:
    src = _write("jsonl", tmp_path / "in", _notes())
    kw = {"block_size": 3, "progress": False, "resume": True, "granularity": "code" if fmt == "csv" else "note"}
    predict_file(coder, src, tmp_path / "ref" / f"p.{fmt}", **kw)
    out = tmp_path / "out" / f"p.{fmt}"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Stop):
        predict_file(coder, src, out, **kw)
    monkeypatch.undo()
    partial = OutputPaths.beside(out).partial
    state = json.loads((partial / "state.json").read_text())
    assert state["notes_done"] == 6 and state["last_id"] == "n005"
    assert not out.exists() and not (out.parent / "p.summary.json").exists()

    summary = predict_file(coder, src, out, **kw)
    assert summary.notes == N and summary.resumed_notes == 6
    assert not partial.exists()
    _assert_same_outputs(tmp_path / "ref" / f"p.{fmt}", out, fmt)


def _read_any(path: Path, fmt: str) -> list[dict]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    return _jsonl(path)


def _assert_same_outputs(ref: Path, out: Path, fmt: str) -> None:
    """Same rows (each id once, in order) and audit lines, timestamps aside; same summary counts."""
    assert _no_time(_read_any(out, fmt)) == _no_time(_read_any(ref, fmt))
    got_ids = [r["id"] for r in _read_any(out, fmt)]
    assert list(dict.fromkeys(got_ids)) == [i for i, _ in _notes()]
    audit = lambda p: _no_time(_jsonl(p.with_name(p.stem + ".audit.jsonl")))  # noqa: E731
    assert audit(out) == audit(ref)
    assert [r["id"] for r in audit(out)] == [i for i, _ in _notes()]
    counts = lambda p: {k: v for k, v in json.loads(p.with_name(p.stem + ".summary.json").read_text()).items()  # noqa: E731
                        if k not in ("wall_seconds", "resumed_notes")}
    assert counts(out) == counts(ref)


def test_a_truncated_trailing_line_is_dropped_and_its_note_predicted_again(coder, tmp_path, monkeypatch) -> None:
    """A kill in the middle of a write leaves half a line (and a block the state never recorded):
    the resumed run cuts the parts back to the recorded length and predicts those notes again."""
    src = _write("jsonl", tmp_path / "in", _notes())
    kw = {"block_size": 4, "progress": False, "resume": True}
    predict_file(coder, src, tmp_path / "ref" / "p.jsonl", **kw)
    out = tmp_path / "out" / "p.jsonl"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Stop):
        predict_file(coder, src, out, **kw)
    monkeypatch.undo()
    partial = OutputPaths.beside(out).partial
    ref_rows = (tmp_path / "ref" / "p.jsonl").read_text().splitlines(keepends=True)
    with (partial / "predictions.part").open("a") as fh:  # a full unrecorded line, then half a line
        fh.write(ref_rows[4] + ref_rows[5][: len(ref_rows[5]) // 2])
    with (partial / "audit.part").open("a") as fh:
        fh.write('{"id": "n004", "bundle')
    summary = predict_file(coder, src, out, **kw)
    assert summary.resumed_notes == 4
    _assert_same_outputs(tmp_path / "ref" / "p.jsonl", out, "jsonl")


def test_a_partial_of_another_input_or_setting_is_refused_and_kept(coder, tmp_path, monkeypatch) -> None:
    src = _write("jsonl", tmp_path / "in", _notes())
    out = tmp_path / "out" / "p.jsonl"
    kw = {"block_size": 3, "progress": False, "resume": True}
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Stop):
        predict_file(coder, src, out, **kw)
    monkeypatch.undo()
    partial = OutputPaths.beside(out).partial
    before = sorted(p.name for p in partial.iterdir())
    with pytest.raises(ConfigError, match=r"holds a partial run of another .*differs in: settings\.evidence_top_k"
                                          r".* — delete .*medcoder-partial to start over, or choose another output"):
        predict_file(coder, src, out, evidence_top_k=1, **kw)
    with src.open("a") as fh:
        fh.write(json.dumps({"id": "extra", "text": "fever"}) + "\n")
    with pytest.raises(ConfigError, match=r"differs in: input\b") as err:
        predict_file(coder, src, out, **kw)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in partial.iterdir()) == before  # the other run's work is left alone
    assert not out.exists()
    # resume=false starts over (and removes the partial); so does deleting it
    summary = predict_file(coder, src, out, block_size=3, progress=False, resume=False)
    assert summary.notes == N + 1 and summary.resumed_notes == 0 and not partial.exists()


def test_a_failed_run_without_resume_leaves_nothing_and_a_locked_partial_is_refused(coder, tmp_path,
                                                                                    monkeypatch) -> None:
    src = _write("jsonl", tmp_path / "in", _notes())
    out = tmp_path / "out" / "p.parquet"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Stop):
        predict_file(coder, src, out, block_size=3, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    outputs = OutputPaths.beside(out)
    holder = _Partial(outputs, "parquet")
    holder.acquire()  # another run holds the lock
    try:
        with pytest.raises(ConfigError, match="another run is writing it"):
            predict_file(coder, src, out, block_size=3, progress=False, resume=True)
    finally:
        holder.release()
    predict_file(coder, src, out, block_size=3, progress=False, resume=True)
    assert pq.read_metadata(out).num_rows == N and not outputs.partial.exists()


def test_progress_bar_total_is_the_scanned_count(coder, tmp_path, monkeypatch) -> None:
    src = _write("csv", tmp_path / "in", _notes())
    calls = []
    real = batch_run._progress

    def spy(total, done, enabled):
        calls.append((total, done, enabled))
        return real(total, done, False)

    monkeypatch.setattr(batch_run, "_progress", spy)
    predict_file(coder, src, tmp_path / "p.jsonl", block_size=5)
    assert calls == [(N, 0, True)]


def test_in_memory_notes_resume_by_their_fingerprint(coder, tmp_path, monkeypatch) -> None:
    notes = _notes()
    outputs = OutputPaths.beside(tmp_path / "p.jsonl")
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Stop):
        predict_notes(coder, notes, outputs, fmt="jsonl", granularity="note", block_size=2, progress=False,
                      resume=True)
    monkeypatch.undo()
    summary = predict_notes(coder, notes, outputs, fmt="jsonl", granularity="note", block_size=2,
                            progress=False, resume=True)
    assert summary.resumed_notes == 4 and [r["id"] for r in _jsonl(outputs.predictions)] == [i for i, _ in notes]
    with pytest.raises(ConfigError, match="one-pass iterable"):
        predict_notes(coder, iter(notes), outputs, fmt="jsonl", granularity="note", resume=True)
