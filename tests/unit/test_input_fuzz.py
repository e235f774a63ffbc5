"""Property-based tests of everything batch prediction reads (issue 9).

Whatever bytes or strings arrive, the readers (``read_notes`` on .txt folders / JSONL / CSV,
``iter_unlabeled``) and ``Coder.predict`` give predictions or a ``MedcoderError`` with a
one-line message, never another exception; and what they write is valid JSON / CSV.

The ``Coder`` here is the tiny random encoder of ``conftest.py`` with a decision threshold of 0,
so every code is predicted for every note and routing + evidence run on each example (the trained
``tiny_bundle`` would cost minutes to build; this file runs in seconds).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medcoder.data.tabular import iter_unlabeled
from medcoder.errors import MedcoderError
from medcoder.inference.batch import OutputPaths, predict_notes, read_notes

from ..helpers.coders import tiny_coder as _coder

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any code point, lone surrogates included (st.characters() leaves out "Cs" by default).
ANY_CHAR = st.characters(codec=None, categories=None)
ANY_TEXT = st.text(ANY_CHAR, max_size=60)
NASTY = st.sampled_from(["", " ", "\x00", "\ud800", "\udcff", "\r\n", "\u2028", "\x85", "=1+1", '"', ",",
                         "\ufeff", "\U0001f600", "a" * 300, "\n" * 50])
TEXTS = st.one_of(ANY_TEXT, NASTY, st.lists(st.one_of(ANY_TEXT, NASTY), max_size=5).map("".join))
LIMIT = st.integers(min_value=1, max_value=80)


def _one_line(exc: MedcoderError) -> None:
    """A script prints ``error: <message>``: one line, and printable in UTF-8."""
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, msg
    msg.encode("utf-8")


def _check_notes(notes: list[tuple[str, str]], limit: int) -> None:
    assert notes
    for doc_id, text in notes:
        assert isinstance(doc_id, str) and isinstance(text, str) and len(text) <= limit + 1
        doc_id.encode("utf-8")
        text.encode("utf-8")


def _encode(text: str) -> bytes:
    """UTF-8, lone surrogates written as their (invalid) 3-byte forms: what a broken writer makes."""
    return text.encode("utf-8", errors="surrogatepass")


# -- readers --------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXTS,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
                           max_leaves=6)
JSONL_ROW = st.one_of(
    st.fixed_dictionaries({"id": st.one_of(TEXTS, st.integers(), JSON_VALUES), "text": st.one_of(TEXTS, JSON_VALUES)}),
    st.dictionaries(TEXTS, JSON_VALUES, max_size=3),
    JSON_VALUES,
)


@st.composite
def jsonl_files(draw) -> bytes:
    lines = []
    for row in draw(st.lists(JSONL_ROW, max_size=6)):
        if draw(st.booleans()):
            lines.append(json.dumps(row, ensure_ascii=draw(st.booleans())))
        else:
            lines.append(draw(TEXTS))  # not JSON at all, or a raw string with control characters
    sep = draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
    return _encode(sep.join(lines) + draw(st.sampled_from(["", "\n"])))


@st.composite
def csv_files(draw) -> bytes:
    if draw(st.booleans()):  # a well-formed file of arbitrary cells
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(draw(st.sampled_from([["id", "text"], ["text", "id", "codes"], ["id", "note"]])))
        for _ in range(draw(st.integers(0, 5))):
            writer.writerow(draw(st.lists(TEXTS, min_size=0, max_size=4)))
        return _encode(buf.getvalue())
    return _encode("id,text\n" + draw(TEXTS))  # arbitrary text: unbalanced quotes, NULs, lone CRs ...


def _read_or_error(content: bytes, suffix: str, limit: int) -> None:
    """Read ``content`` as a ``notes.<suffix>`` file: notes that respect the limit, or one-line error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"notes.{suffix}"
        path.write_bytes(content)
        try:
            notes = read_notes(path, max_note_chars=limit)
        except MedcoderError as exc:
            _one_line(exc)
            return
        _check_notes(notes, limit)
        rows = [(i, t) for _, i, t in iter_unlabeled(path, format=suffix, max_note_chars=limit)]
        assert rows == notes  # the batch reader and the training-side reader agree


@FAST
@given(content=st.one_of(jsonl_files(), st.binary(max_size=200)), limit=LIMIT)
def test_jsonl_reader_gives_notes_or_a_medcoder_error(content: bytes, limit: int) -> None:
    _read_or_error(content, "jsonl", limit)


@FAST
@given(content=st.one_of(csv_files(), st.binary(max_size=200)), limit=LIMIT)
def test_csv_reader_gives_notes_or_a_medcoder_error(content: bytes, limit: int) -> None:
    _read_or_error(content, "csv", limit)


FILE_NAMES = st.text(st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)), min_size=1, max_size=12)
ENTRY = st.tuples(FILE_NAMES, st.sampled_from(["file", "file", "file", "dir", "broken_link", "raw_name"]),
                  st.one_of(TEXTS.map(_encode), st.binary(max_size=100)))


@FAST
@given(entries=st.lists(ENTRY, max_size=5, unique_by=lambda e: e[0]), limit=LIMIT)
def test_txt_folder_reader_gives_notes_or_a_medcoder_error(entries, limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "notes"
        folder.mkdir()
        for name, kind, content in entries:
            if name in (".", "..") or len(_encode(name)) > 200:
                continue
            if kind == "raw_name":  # a file name that is not UTF-8 (bytes from another system)
                with open(os.path.join(os.fsencode(folder), _encode(name)[:50] + b"\xff.txt"), "wb") as fh:
                    fh.write(content)
                continue
            target = folder / f"{name}.txt"
            if kind == "dir":
                target.mkdir()
            elif kind == "broken_link":
                target.symlink_to(folder / "does-not-exist")
            else:
                target.write_bytes(content)
        try:
            notes = read_notes(folder, max_note_chars=limit)
        except MedcoderError as exc:
            _one_line(exc)
            return
        _check_notes(notes, limit)


# -- Coder.predict and the writers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def coder(tmp_path_factory, tiny_encoder):
    return _coder(tmp_path_factory.mktemp("fuzz_coder"), tiny_encoder)


@FAST
@given(texts=st.lists(st.one_of(TEXTS, st.sampled_from(["x " * 3000, "\x00" * 500, "é" * 2000])), min_size=1,
                      max_size=4), limit=st.one_of(st.none(), st.integers(1, 2000)))
def test_coder_predict_gives_predictions_or_a_medcoder_error(coder, texts: list[str], limit: int | None) -> None:
    try:
        preds = coder.predict(texts, [f"n{i}" for i in range(len(texts))], max_note_chars=limit, evidence_top_k=2)
    except MedcoderError as exc:
        _one_line(exc)
        assert any(not _valid(t) for t in texts)  # only invalid Unicode is refused
        return
    assert len(preds) == len(texts)
    for text, pred in zip(texts, preds, strict=True):
        json.dumps(pred.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        if limit is not None and len(text) > limit:
            assert pred.truncated and all("truncated_note" in c.reasons for c in pred.codes)
        n = len(text) if limit is None else min(len(text), limit)
        assert all(0 <= e["start"] < e["end"] <= n for c in pred.codes for e in c.evidence)


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


IDS = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=15),
                st.sampled_from(["=HYPERLINK(\"http://x\")", "+1", "-1", "@A1", "\tx", "\rx", "a\nb", '"q"']))


@SLOW
@given(rows=st.lists(st.tuples(IDS, TEXTS.filter(_valid)), min_size=1, max_size=4, unique_by=lambda r: r[0]),
       fmt=st.sampled_from(["jsonl", "csv"]), granularity=st.sampled_from(["note", "code"]))
def test_outputs_of_any_notes_are_valid_files(coder, rows, fmt: str, granularity: str) -> None:
    assume(all(i.strip() for i, _ in rows))
    with tempfile.TemporaryDirectory() as tmp:
        outputs = OutputPaths.beside(Path(tmp) / f"p.{fmt}")
        summary = predict_notes(coder, rows, outputs, fmt=fmt, granularity=granularity, include_text=True,
                                max_note_chars=50, progress=False)
        json.loads(outputs.summary.read_text("utf-8"))  # strict JSON (no NaN)
        audit = [json.loads(line) for line in outputs.audit.read_text("utf-8").split("\n") if line]
        assert [r["id"] for r in audit] == [i for i, _ in rows]
        if fmt == "jsonl":
            out = [json.loads(line) for line in outputs.predictions.read_text("utf-8").split("\n") if line]
            got = [r["id"] for r in out]
        else:
            with outputs.predictions.open(encoding="utf-8", newline="") as fh:
                got = [r["id"].removeprefix("'") if r["id"][:2] in {f"'{c}" for c in "=+-@\t\r"} else r["id"]
                       for r in csv.DictReader(fh)]
        assert list(dict.fromkeys(got)) == [i for i, _ in rows] and summary.notes == len(rows)
        assert sorted(p.name for p in Path(tmp).iterdir()) == sorted(
            [outputs.predictions.name, outputs.audit.name, outputs.summary.name])  # no temps left
