"""Import of predictions into the review store (SQLite and PostgreSQL): one transaction,
idempotent, strict about broken lines and changed texts, bundles kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from medcoder.errors import DataError
from medcoder.review import ReviewStore
from medcoder.review import models as m

from .factory import CODES, NOTES, SECRET, key_of, prediction, sha, write_predictions


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (m.bundles, m.imports, m.notes, m.note_codes, m.note_reasons, m.events)}
    finally:
        engine.dispose()


def test_import_builds_the_queue(store: ReviewStore, predictions: Path) -> None:
    result = store.import_predictions(predictions, NOTES)
    assert (result.bundle_id, result.n_notes, result.n_imported, result.n_unchanged) == ("bundle-A", 4, 4, 0)
    assert result.n_routed_codes == 5
    page = store.queue()
    assert page.total == 4 and page.counts == {"open": 4, "in_progress": 0, "submitted": 0, "total": 4}
    assert [i.note_id for i in page.items] == ["n1", "n2", "n3", "n4"]
    n1 = page.items[0]
    assert (n1.n_routed, n1.n_decided, n1.status) == (2, 0, "open")
    assert n1.reasons == ["low_confidence", "no_evidence"]
    assert store.bundles() == ["bundle-A"]
    note = store.note(n1.note_key)
    assert note.text == NOTES["n1"] and note.input_sha256 == sha(NOTES["n1"])
    # routed first by probability, auto-accepted last; descriptions from the FY2026 code set
    assert [c.code for c in note.codes] == ["E11.9", "R05.9", "I10"]
    assert note.codes[0].description == "Type 2 diabetes mellitus without complications"
    assert note.codes[0].evidence[0]["start"] == 29


def test_reimport_changes_nothing(store: ReviewStore, predictions: Path, db_url: str) -> None:
    store.import_predictions(predictions, NOTES)
    before = _counts(db_url)
    again = store.import_predictions(predictions, NOTES)
    assert (again.n_imported, again.n_unchanged, again.n_routed_codes) == (0, 4, 0)
    assert _counts(db_url) == before
    assert before["review_notes"] == 4 and before["review_note_codes"] == 9 and before["review_imports"] == 1


def test_a_new_note_in_a_later_file_is_added_once(store: ReviewStore, tmp_path: Path) -> None:
    first = {k: NOTES[k] for k in ("n1", "n2")}
    store.import_predictions(write_predictions(tmp_path / "a.jsonl", first), first)
    result = store.import_predictions(write_predictions(tmp_path / "b.jsonl"), NOTES)
    assert (result.n_imported, result.n_unchanged) == (2, 2)
    assert store.queue().total == 4


def test_broken_line_names_file_and_line_and_imports_nothing(store: ReviewStore, tmp_path: Path,
                                                              db_url: str) -> None:
    lines = [json.dumps(prediction(i, t, CODES[i])) for i, t in NOTES.items()]
    lines[2] = lines[2][:40]  # a line cut in the middle (a killed writer)
    path = write_predictions(tmp_path / "broken.jsonl", lines=lines)
    with pytest.raises(DataError) as err:
        store.import_predictions(path, NOTES)
    assert f"{path}:3:" in str(err.value) and "JSON" in str(err.value)
    assert "\n" not in str(err.value)
    assert store.queue().total == 0 and store.bundles() == []
    assert sum(_counts(db_url).values()) == 0


def test_bad_field_names_line_and_field(store: ReviewStore, tmp_path: Path) -> None:
    rows = [prediction(i, t, CODES[i]) for i, t in NOTES.items()]
    rows[3]["codes"][0]["probability"] = 1.5
    path = write_predictions(tmp_path / "p.jsonl", lines=[json.dumps(r) for r in rows])
    with pytest.raises(DataError, match=r"p\.jsonl:4: code E66\.9: probability"):
        store.import_predictions(path, NOTES)
    del rows[3]["codes"][0]["probability"]
    del rows[1]["input_sha256"]
    path = write_predictions(tmp_path / "p.jsonl", lines=[json.dumps(r) for r in rows])
    with pytest.raises(DataError, match=r"p\.jsonl:2: missing field\(s\) input_sha256"):
        store.import_predictions(path, NOTES)
    assert store.queue().total == 0


def test_text_must_match_input_sha256(store: ReviewStore, predictions: Path) -> None:
    changed = dict(NOTES, n1=NOTES["n1"] + " Edited later.")
    with pytest.raises(DataError) as err:
        store.import_predictions(predictions, changed)
    message = str(err.value)
    assert f"{predictions}:1" in message and "n1" in message and "input_sha256" in message
    assert SECRET not in message and "QUOKKA" not in message
    assert store.queue().total == 0


def test_missing_note_text_is_refused(store: ReviewStore, predictions: Path) -> None:
    partial = {k: v for k, v in NOTES.items() if k != "n3"}
    with pytest.raises(DataError, match=r"predictions\.jsonl:3: no text for note id n3"):
        store.import_predictions(predictions, partial)
    assert store.queue().total == 0


def test_notes_from_a_folder_of_txt_files(store: ReviewStore, predictions: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for note_id, body in NOTES.items():
        (folder / f"{note_id}.txt").write_text(body, encoding="utf-8")
    assert store.import_predictions(predictions, folder).n_imported == 4
    (folder / "n2.txt").write_text("tampered", encoding="utf-8")
    with pytest.raises(DataError, match="n2"):
        store.import_predictions(predictions, folder)


def test_truncated_note_matches_on_its_prefix(store: ReviewStore, tmp_path: Path) -> None:
    body = "x" * 50 + " the part the model never read"
    row = prediction("long", body[:50], [], truncated=True)
    path = write_predictions(tmp_path / "t.jsonl", lines=[json.dumps(row)])
    assert store.import_predictions(path, {"long": body}).n_imported == 1
    row["truncated"] = False
    path = write_predictions(tmp_path / "t2.jsonl", lines=[json.dumps(dict(row, bundle_id="other"))])
    with pytest.raises(DataError, match="input_sha256"):
        store.import_predictions(path, {"long": body})


def test_another_bundle_is_kept_apart(store: ReviewStore, predictions: Path, tmp_path: Path) -> None:
    store.import_predictions(predictions, NOTES)
    other = write_predictions(tmp_path / "b.jsonl", bundle_id="bundle-B")
    result = store.import_predictions(other, NOTES)
    assert (result.bundle_id, result.n_imported) == ("bundle-B", 4)
    assert store.bundles() == ["bundle-A", "bundle-B"]
    assert store.queue(bundle_id="bundle-A").total == 4 and store.queue(bundle_id="bundle-B").total == 4
    a, b = key_of(store, "n1", "bundle-A"), key_of(store, "n1", "bundle-B")
    assert a != b and store.note(b).bundle_id == "bundle-B"


def test_one_file_holds_one_bundle(store: ReviewStore, tmp_path: Path) -> None:
    rows = [prediction(i, t, CODES[i], bundle_id="bundle-A" if i != "n3" else "bundle-B")
            for i, t in NOTES.items()]
    path = write_predictions(tmp_path / "mixed.jsonl", lines=[json.dumps(r) for r in rows])
    with pytest.raises(DataError, match=r"mixed\.jsonl:3: bundle_id bundle-B"):
        store.import_predictions(path, NOTES)
    assert store.bundles() == []


def test_same_note_with_new_text_in_the_same_bundle_is_refused(store: ReviewStore, predictions: Path,
                                                               tmp_path: Path, db_url: str) -> None:
    store.import_predictions(predictions, NOTES)
    before = _counts(db_url)
    changed = dict(NOTES, n2="A different text for the same id.")
    path = write_predictions(tmp_path / "again.jsonl", changed)
    with pytest.raises(DataError, match=r"again\.jsonl:2: note id n2 of bundle bundle-A is already"):
        store.import_predictions(path, changed)
    assert _counts(db_url) == before


def test_import_is_one_transaction(store: ReviewStore, predictions: Path, db_url: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the first rows were written leaves nothing behind."""
    from medcoder.review import importer

    real = importer._write_chunk

    def failing(conn, chunk, import_id):  # noqa: ANN001, ANN202
        real(conn, chunk, import_id)
        conn.execute(text("SELECT 1"))
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer, "_write_chunk", failing)
    with pytest.raises(RuntimeError):
        store.import_predictions(predictions, NOTES)
    assert sum(_counts(db_url).values()) == 0


def test_nul_characters_are_refused_on_both_databases(store: ReviewStore, tmp_path: Path) -> None:
    """PostgreSQL text cannot hold NUL: one clear line instead of a driver error, on both."""
    notes = dict(NOTES, n2="Asthma\x00 mild")
    path = write_predictions(tmp_path / "p.jsonl", notes)
    with pytest.raises(DataError, match=r"p\.jsonl:2: the text of note id n2 contains a NUL"):
        store.import_predictions(path, notes)
    assert store.queue().total == 0
