"""Double review (a second, independent review of a seeded share of routed notes) and the reads
the agreement reports use (SQLite and PostgreSQL); exports stay one line per note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from medcoder.errors import DataError
from medcoder.review import ReviewError, ReviewStore, User
from medcoder.review import models as m

from .conftest import PASSWORD
from .factory import NOTES, code, key_of, prediction, write_predictions


def _review(store: ReviewStore, key: str, user: User, actions: dict[str, tuple[str, str | None]]) -> None:
    """Claim, decide every routed code as ``actions`` says (code -> (action, new_code)), submit."""
    token = store.claim(key, user).token
    version = store.note(key).version
    for c, (action, new) in actions.items():
        store.decide(key, user, action=action, code=c, new_code=new,
                     comment="ask" if action == "query" else None, lease_token=token, expected_version=version)
        version += 1
    store.submit(key, user, lease_token=token, expected_version=version)


@pytest.fixture
def doubled(store: ReviewStore, predictions: Path) -> ReviewStore:
    """bundle-A with a second review of every note that has a routed code (n1, n2, n3)."""
    result = store.import_predictions(predictions, NOTES, double_review_rate=1.0, audit_rate=1.0)
    assert (result.n_imported, result.n_double, result.n_audit) == (4, 3, 3)
    return store


def test_second_reviews_are_notes_of_their_own(doubled: ReviewStore, db_url: str) -> None:
    page = doubled.queue(limit=50)
    assert [i.note_id for i in page.items] == ["n1", "n2", "n3", "n4", "n1#2", "n2#2", "n3#2"]
    twin = doubled.note(key_of(doubled, "n1#2"))
    assert twin.text == NOTES["n1"] and [c.code for c in twin.codes] == [c.code for c in doubled.note(
        key_of(doubled, "n1")).codes]
    # the audit sample is drawn from first reviews only
    assert {i.note_id for i in doubled.audit_queue(limit=50)} == {"n1", "n2", "n4"}
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            draw = conn.execute(select(m.audit_draws).where(m.audit_draws.c.kind == "double")).one()
    finally:
        engine.dispose()
    assert (draw.n_eligible, draw.n_drawn, draw.rate) == (3, 3, 1.0)
    assert sorted(json.loads(draw.note_keys)) == sorted(key_of(doubled, i) for i in ("n1", "n2", "n3"))


def test_the_share_is_seeded(store: ReviewStore, tmp_path: Path) -> None:
    notes = {f"d{i}": f"routed note {i}" for i in range(40)}
    lines = [json.dumps(prediction(i, t, [code("R05.9", 0.4), code("I10", 0.97, "auto_accept")]))
             for i, t in notes.items()]
    path = write_predictions(tmp_path / "d.jsonl", lines=lines)
    result = store.import_predictions(path, notes, double_review_rate=0.25, audit_seed=3)
    assert result.n_double == 10
    twins = sorted(i.note_id for i in store.queue(limit=100).items if i.note_id.endswith("#2"))
    with ReviewStore.open(f"sqlite:///{tmp_path / 'again.db'}") as other:
        other.import_predictions(path, notes, double_review_rate=0.25, audit_seed=3)
        assert sorted(i.note_id for i in other.queue(limit=100).items if i.note_id.endswith("#2")) == twins


def test_the_second_review_is_blind_and_by_another_person(doubled: ReviewStore, alice: User, bob: User) -> None:
    first, second = key_of(doubled, "n1"), key_of(doubled, "n1#2")
    _review(doubled, first, alice, {"E11.9": ("replace", "E11.65"), "R05.9": ("reject", None)})
    # the second review shows none of the first's decisions
    twin = doubled.note(second)
    assert all(c.current is None and c.decided_by is None for c in twin.codes) and twin.version == 0
    with pytest.raises(ReviewError, match="second review must be another person's"):
        doubled.claim(second, alice)
    _review(doubled, second, bob, {"E11.9": ("accept", None), "R05.9": ("reject", None)})
    # and the other way round: who reviewed a second review may not take the first
    n2, n2_twin = key_of(doubled, "n2"), key_of(doubled, "n2#2")
    token = doubled.claim(n2_twin, bob).token
    doubled.decide(n2_twin, bob, action="accept", code="J45.909", lease_token=token, expected_version=0)
    with pytest.raises(ReviewError, match="second review must be another person's"):
        doubled.claim(n2, bob)
    assert doubled.note(n2).version == 0


def test_a_reviewer_of_either_round_may_not_audit(doubled: ReviewStore, admin: User) -> None:
    n1_twin = key_of(doubled, "n1#2")
    token = doubled.claim(n1_twin, admin).token
    doubled.decide(n1_twin, admin, action="accept", code="E11.9", lease_token=token, expected_version=0)
    with pytest.raises(ReviewError, match="an auditor must be another person"):
        doubled.audit(key_of(doubled, "n1"), admin, code="I10", verdict="correct")


def test_exports_hold_each_note_once_from_its_first_review(doubled: ReviewStore, alice: User, bob: User,
                                                          tmp_path: Path) -> None:
    _review(doubled, key_of(doubled, "n1"), alice, {"E11.9": ("replace", "E11.65"), "R05.9": ("reject", None)})
    _review(doubled, key_of(doubled, "n1#2"), bob, {"E11.9": ("reject", None), "R05.9": ("accept", None)})
    _review(doubled, key_of(doubled, "n3#2"), alice, {"E10.9": ("accept", None), "J18.9": ("reject", None)})
    out = tmp_path / "labels.jsonl"
    assert doubled.export_labels(out) == 1
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": "n1", "text": NOTES["n1"], "codes": ["E11.65", "I10"], "verified": False}]
    assert doubled.export_labels(tmp_path / "b.jsonl", bundle_id="bundle-A") == 1


def test_an_audit_verdict_is_the_label_of_its_code(store: ReviewStore, predictions: Path, alice: User,
                                                   carol_auditor: User, tmp_path: Path) -> None:
    store.import_predictions(predictions, NOTES, audit_rate=1.0)
    key = key_of(store, "n1")
    _review(store, key, alice, {"E11.9": ("accept", None), "R05.9": ("reject", None)})
    store.audit(key, carol_auditor, code="I10", verdict="wrong", replaced_by="I11.9")
    out = tmp_path / "labels.jsonl"
    assert store.export_labels(out) == 1
    # the auditor checked the auto-accepted I10 and found I11.9 right instead: the labels say so, and
    # every auto-accepted code of the note was checked by a person
    assert json.loads(out.read_text()) == {"id": "n1", "text": NOTES["n1"], "codes": ["E11.9", "I11.9"],
                                           "verified": True}


@pytest.fixture
def carol_auditor(store: ReviewStore) -> User:
    return store.create_user("carol", PASSWORD, "auditor")


def test_routed_outcomes_and_double_review_pairs(doubled: ReviewStore, alice: User, bob: User) -> None:
    doubled.set_code_frequencies("bundle-A", {"E11.9": 120, "r059": 3})
    _review(doubled, key_of(doubled, "n1"), alice, {"E11.9": ("replace", "E11.65"), "R05.9": ("query", None)})
    _review(doubled, key_of(doubled, "n1#2"), bob, {"E11.9": ("accept", None), "R05.9": ("reject", None)})
    _review(doubled, key_of(doubled, "n2"), bob, {"J45.909": ("accept", None)})  # its second review is open
    outcomes = doubled.routed_outcomes("bundle-A")
    assert [(o.note_id, o.code, o.reasons, o.frequency, o.action, o.replaced_by) for o in outcomes] == [
        ("n1", "E11.9", ["low_confidence"], 120, "replace", "E11.65"),
        ("n1", "R05.9", ["low_confidence", "no_evidence"], 3, "query", None),
        ("n2", "J45.909", ["low_confidence"], None, "accept", None),
    ]
    pairs = doubled.double_review_pairs("bundle-A")
    assert [(p.note_id, p.code, p.first_action, p.second_action, p.first_replaced_by, p.first_reviewer,
             p.second_reviewer) for p in pairs] == [
        ("n1", "E11.9", "replace", "accept", "E11.65", "alice", "bob"),
        ("n1", "R05.9", "query", "reject", None, "alice", "bob"),
    ]
    with pytest.raises(ReviewError, match="whole number"):
        doubled.set_code_frequencies("bundle-A", {"E11.9": -1})
    with pytest.raises(ReviewError, match="one code twice"):
        doubled.set_code_frequencies("bundle-A", {"E11.9": 1, "e11.9": 2})


def test_a_taken_second_review_id_is_not_drawn(store: ReviewStore, tmp_path: Path) -> None:
    notes = {"a": "first note text", "a#2": "a different note whose id looks like a second review"}
    lines = [json.dumps(prediction(i, t, [code("R05.9", 0.4)])) for i, t in notes.items()]
    result = store.import_predictions(write_predictions(tmp_path / "t.jsonl", lines=lines), notes,
                                      double_review_rate=1.0)
    assert result.n_double == 1  # "a#2" is taken, so only "a#2" gets a second review ("a#2#2")
    assert sorted(i.note_id for i in store.queue().items) == ["a", "a#2", "a#2#2"]
    # a later file's note "a#2#2" collides with the second review already in the store: refused
    clash = {"a#2#2": "yet another note"}
    with pytest.raises(DataError, match="already in the store"):
        store.import_predictions(write_predictions(tmp_path / "c.jsonl", lines=[json.dumps(prediction(
            "a#2#2", clash["a#2#2"], [code("R05.9", 0.4)]))]), clash)
