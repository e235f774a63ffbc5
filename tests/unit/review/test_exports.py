"""Exports: reviewed labels in the data=jsonl format, the decision table, the event log."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medcoder.review import ReviewError, ReviewStore, User

from .conftest import PASSWORD, FakeClock
from .factory import NOTES, key_of, write_predictions


def _review(store: ReviewStore, alice: User, bob: User) -> None:
    """n1 by alice: reject R05.9, replace E11.9 -> E11.65, add E78.5, submit.
    n2 by bob: accept J45.909, submit. n3: one decision, not submitted."""
    k1 = key_of(store, "n1")
    t = store.claim(k1, alice).token
    store.decide(k1, alice, action="reject", code="R05.9", lease_token=t, expected_version=0)
    store.decide(k1, alice, action="replace", code="E11.9", new_code="E11.65", lease_token=t, expected_version=1)
    store.decide(k1, alice, action="add", code="E78.5", lease_token=t, expected_version=2)
    store.submit(k1, alice, lease_token=t, expected_version=3)
    k2 = key_of(store, "n2")
    t = store.claim(k2, bob).token
    store.decide(k2, bob, action="accept", code="J45.909", lease_token=t, expected_version=0)
    store.submit(k2, bob, lease_token=t, expected_version=1)
    k3 = key_of(store, "n3")
    t = store.claim(k3, bob).token
    store.decide(k3, bob, action="query", code="E10.9", comment="type 1 or 2?", lease_token=t, expected_version=0)


def test_labels_export_holds_exactly_the_submitted_labels(loaded: ReviewStore, alice: User, bob: User,
                                                          tmp_path: Path) -> None:
    _review(loaded, alice, bob)
    out = tmp_path / "out" / "labels.jsonl"
    assert loaded.export_labels(out) == 2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # I10 and E78.5 are the model's auto-accepts, neither decided nor audited: not verified
    assert rows == [
        {"id": "n1", "text": NOTES["n1"], "codes": ["E11.65", "I10", "E78.5"], "verified": False},
        {"id": "n2", "text": NOTES["n2"], "codes": ["J45.909", "E78.5"], "verified": False},
    ]
    assert [p.name for p in out.parent.iterdir()] == ["labels.jsonl"]  # no temp file left


def test_labels_load_with_the_jsonl_data_loader(loaded: ReviewStore, alice: User, bob: User,
                                                tmp_path: Path) -> None:
    from medcoder.data import load_tabular

    _review(loaded, alice, bob)
    out = tmp_path / "labels.jsonl"
    loaded.export_labels(out)
    data = load_tabular(out, format="jsonl")
    assert list(data["train"]["id"]) == ["n1", "n2"]
    assert [sorted(c) for c in data["train"]["codes"]] == [["E11.65", "E78.5", "I10"], ["E78.5", "J45.909"]]


def _labels(store: ReviewStore, path: Path) -> dict[str, dict]:
    store.export_labels(path)
    return {r["id"]: r for r in (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())}


def test_audit_verdicts_become_labels(store: ReviewStore, predictions: Path, alice: User, bob: User,
                                      admin: User, clock: FakeClock, tmp_path: Path) -> None:
    """Every note with an auto-accepted code (n1, n2, n4) drawn for audit. A verdict is the
    label of its code (over a reviewer's decision); an admin's later correction is over the
    verdict; a fully audited note without routed codes is exported unsubmitted; a fully audited
    note whose routed codes nobody decided is not."""
    store.import_predictions(predictions, NOTES, audit_rate=1.0)
    carol = store.create_user("carol", PASSWORD, "auditor")
    n1, n2, n4 = (key_of(store, i) for i in ("n1", "n2", "n4"))
    store.audit(n1, carol, code="I10", verdict="wrong", replaced_by="I11.9")
    store.audit(n4, carol, code="E66.9", verdict="correct")
    store.audit(n4, carol, code="Z79.4", verdict="wrong", replaced_by="Z79.84")
    # n1 is fully audited, but its routed codes E11.9 and R05.9 are undecided: not exported yet
    assert set(_labels(store, tmp_path / "a.jsonl")) == {"n4"}
    t = store.claim(n1, alice).token
    store.decide(n1, alice, action="accept", code="E11.9", lease_token=t, expected_version=0)
    store.decide(n1, alice, action="reject", code="R05.9", lease_token=t, expected_version=1)
    store.decide(n1, alice, action="accept", code="I10", lease_token=t, expected_version=2)  # the auditor disagrees
    store.submit(n1, alice, lease_token=t, expected_version=3)
    t = store.claim(n2, bob).token
    store.decide(n2, bob, action="accept", code="J45.909", lease_token=t, expected_version=0)
    store.decide(n2, bob, action="reject", code="E78.5", lease_token=t, expected_version=1)
    store.submit(n2, bob, lease_token=t, expected_version=2)
    store.audit(n2, carol, code="E78.5", verdict="correct")  # the reviewer rejected it: the audit keeps it
    rows = _labels(store, tmp_path / "b.jsonl")
    assert list(rows) == ["n1", "n2", "n4"]
    assert (rows["n1"]["codes"], rows["n1"]["verified"]) == (["E11.9", "I11.9"], True)
    assert (rows["n2"]["codes"], rows["n2"]["verified"]) == (["J45.909", "E78.5"], True)
    assert rows["n4"] == {"id": "n4", "text": NOTES["n4"], "codes": ["E66.9", "Z79.84"], "verified": True}
    # an admin's correction made after the verdict is the last word on that code
    clock.advance(60)
    store.correct(n1, admin, code="I10", action="accept", comment="I10 is right: the audit misread the note")
    assert _labels(store, tmp_path / "c.jsonl")["n1"]["codes"] == ["E11.9", "I10"]


def test_verified_means_every_auto_accept_was_checked(store: ReviewStore, predictions: Path, alice: User,
                                                      tmp_path: Path) -> None:
    store.import_predictions(predictions, NOTES, audit_rate=0.0)
    n1, n3, n4 = (key_of(store, i) for i in ("n1", "n3", "n4"))
    t = store.claim(n1, alice).token
    for version, c in enumerate(("E11.9", "R05.9")):
        store.decide(n1, alice, action="accept", code=c, lease_token=t, expected_version=version)
    store.submit(n1, alice, lease_token=t, expected_version=2)
    t = store.claim(n3, alice).token  # no auto-accepted codes: every label is a reviewer's
    for version, c in enumerate(("E10.9", "J18.9")):
        store.decide(n3, alice, action="reject", code=c, lease_token=t, expected_version=version)
    store.submit(n3, alice, lease_token=t, expected_version=2)
    t = store.claim(n4, alice).token  # one of two auto-accepts decided (a query counts: not the model's word)
    store.decide(n4, alice, action="query", code="Z79.4", comment="insulin or oral?", lease_token=t,
                 expected_version=0)
    store.submit(n4, alice, lease_token=t, expected_version=1)
    rows = _labels(store, tmp_path / "l.jsonl")
    assert {k: (r["codes"], r["verified"]) for k, r in rows.items()} == {
        "n1": (["E11.9", "I10", "R05.9"], False), "n3": ([], True), "n4": (["E66.9"], False)}


def test_labels_load_with_the_reviewed_loader(store: ReviewStore, predictions: Path, tmp_path: Path) -> None:
    from medcoder.data.loaders import load_reviewed

    store.import_predictions(predictions, NOTES, audit_rate=1.0)
    carol = store.create_user("carol", PASSWORD, "auditor")
    for c in ("E66.9", "Z79.4"):
        store.audit(key_of(store, "n4"), carol, code=c, verdict="correct")
    out = tmp_path / "labels.jsonl"
    assert store.export_labels(out) == 1
    notes, path, _ = load_reviewed(out)
    assert path == out.resolve() and list(notes["id"]) == ["n4"] and list(notes["verified"]) == [True]
    assert [sorted(c) for c in notes["codes"]] == [["E66.9", "Z79.4"]]


def test_labels_of_two_bundles_need_a_bundle_id(loaded: ReviewStore, alice: User, tmp_path: Path) -> None:
    loaded.import_predictions(write_predictions(tmp_path / "b.jsonl", bundle_id="bundle-B"), NOTES)
    for bundle in ("bundle-A", "bundle-B"):
        key = key_of(loaded, "n4", bundle)
        loaded.submit(key, alice, lease_token=loaded.claim(key, alice).token, expected_version=0)
    with pytest.raises(ReviewError, match="more than one bundle"):
        loaded.export_labels(tmp_path / "labels.jsonl")
    assert loaded.export_labels(tmp_path / "labels.jsonl", bundle_id="bundle-B") == 1


def test_decisions_csv_has_who_and_the_models_decision(loaded: ReviewStore, alice: User, bob: User,
                                                       tmp_path: Path) -> None:
    _review(loaded, alice, bob)
    out = tmp_path / "decisions.csv"
    n_rows = loaded.export_decisions_csv(out)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert n_rows == len(rows) == 10  # 9 predicted codes + 1 added
    by = {(r["note_id"], r["code"]): r for r in rows}
    e11 = by[("n1", "E11.9")]
    assert (e11["model_decision"], e11["decision"], e11["new_code"], e11["decided_by"], e11["status"]) == (
        "human_review", "replace", "E11.65", "alice", "submitted")
    assert e11["probability"] == "0.620000" and e11["decided_at"].startswith("2026-12-01T09:00")
    assert by[("n1", "I10")]["model_decision"] == "auto_accept" and by[("n1", "I10")]["decision"] == ""
    assert (by[("n1", "E78.5")]["decision"], by[("n1", "E78.5")]["decided_by"]) == ("add", "alice")
    assert (by[("n2", "J45.909")]["decided_by"], by[("n3", "E10.9")]["comment"]) == ("bob", "type 1 or 2?")
    assert by[("n3", "E10.9")]["status"] == "in_progress"
    assert loaded.export_decisions_csv(out, submitted_only=True) == 6


def test_events_export_is_the_log(loaded: ReviewStore, alice: User, bob: User, tmp_path: Path) -> None:
    _review(loaded, alice, bob)
    out = tmp_path / "events.jsonl"
    assert loaded.export_events(out) == 7
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["username"], r["action"], r["code_before"], r["code_after"]) for r in rows[:4]] == [
        ("alice", "reject", "R05.9", None), ("alice", "replace", "E11.9", "E11.65"),
        ("alice", "add", None, "E78.5"), ("alice", "submit", None, None)]
    assert {r["bundle_id"] for r in rows} == {"bundle-A"} and all(r["codeset_fy"] == 2026 for r in rows)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert rows == [e.to_dict() for e in loaded.events()]


def test_exports_never_overwrite_the_database(tmp_path: Path, predictions: Path) -> None:
    db_file = tmp_path / "review.db"  # only a SQLite store is a file an export could overwrite
    with ReviewStore.open(f"sqlite:///{db_file}") as store:
        store.import_predictions(predictions, NOTES)
        size = db_file.stat().st_size
        with pytest.raises(ReviewError, match="review database itself"):
            store.export_events(db_file)
        with pytest.raises(ReviewError, match="folder"):
            store.export_events(tmp_path)
        before = predictions.read_bytes()
        with pytest.raises(ReviewError, match="predictions file imported"):
            store.export_labels(predictions)
        assert db_file.stat().st_size == size and store.queue().total == 4
        assert predictions.read_bytes() == before


def test_decisions_csv_defuses_spreadsheet_formulas(loaded: ReviewStore, alice: User, tmp_path: Path) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    loaded.decide(key, alice, action="query", code="R05.9", comment="=HYPERLINK(\"http://x\")", lease_token=token,
                  expected_version=0)
    out = tmp_path / "d.csv"
    loaded.export_decisions_csv(out)
    with out.open(newline="", encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["code"] == "R05.9" and r["note_id"] == "n1")
    assert row["comment"] == "'=HYPERLINK(\"http://x\")"
