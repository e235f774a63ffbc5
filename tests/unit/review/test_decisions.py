"""Leases, decisions, submit, concurrency and the append-only event log (SQLite and
PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from medcoder.review import (
    ConflictError,
    ForbiddenError,
    LeaseError,
    NotFoundError,
    ReviewError,
    ReviewStore,
    User,
)

from .conftest import PASSWORD, FakeClock
from .factory import key_of


def _all_routed_decided(store: ReviewStore, key: str, user: User, token: str) -> int:
    version = store.note(key).version
    for c in store.note(key).codes:
        if c.decision == "human_review" and c.current is None:
            store.decide(key, user, action="accept", code=c.code, lease_token=token, expected_version=version)
            version += 1
    return version


def test_claim_is_exclusive_and_renewable(loaded: ReviewStore, alice: User, bob: User, clock: FakeClock) -> None:
    key = key_of(loaded, "n1")
    lease = loaded.claim(key, alice, lease_seconds=60)
    with pytest.raises(LeaseError, match="held by alice"):
        loaded.claim(key, bob)
    clock.advance(30)
    again = loaded.claim(key, alice, lease_seconds=60)
    assert again.token == lease.token and again.expires_at > lease.expires_at
    item = next(i for i in loaded.queue().items if i.note_key == key)
    assert (item.status, item.holder) == ("open", "alice")  # holding is not progress
    with pytest.raises(LeaseError):
        loaded.release(key, bob, lease.token)
    loaded.release(key, alice, lease.token)
    assert loaded.claim(key, bob).username == "bob"


def test_expired_lease_refuses_the_decision_and_says_so(loaded: ReviewStore, alice: User, bob: User,
                                                        clock: FakeClock) -> None:
    key = key_of(loaded, "n1")
    lease = loaded.claim(key, alice, lease_seconds=60)
    clock.advance(61)
    assert all(i.holder is None for i in loaded.queue().items)  # an expired lease holds nothing
    with pytest.raises(LeaseError, match="expired.*not saved"):
        loaded.decide(key, alice, action="accept", code="E11.9", lease_token=lease.token, expected_version=0)
    bob_lease = loaded.claim(key, bob)
    loaded.decide(key, bob, action="reject", code="E11.9", lease_token=bob_lease.token, expected_version=0)
    with pytest.raises(LeaseError, match="held by bob"):
        loaded.decide(key, alice, action="accept", code="R05.9", lease_token=lease.token, expected_version=1)
    assert [(e.username, e.action) for e in loaded.events(key)] == [("bob", "reject")]


def test_decisions_are_events_and_state_is_derived(loaded: ReviewStore, alice: User) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    e1 = loaded.decide(key, alice, action="replace", code="E11.9", new_code="e1165", lease_token=token,
                       expected_version=0)
    assert (e1.seq, e1.code_before, e1.code_after, e1.bundle_id, e1.codeset_fy, e1.policy_version) == (
        1, "E11.9", "E11.65", "bundle-A", 2026, "policy-1")
    assert e1.input_sha256 == loaded.note(key).input_sha256
    loaded.decide(key, alice, action="query", code="R05.9", comment="Is the cough chronic?", lease_token=token,
                  expected_version=1)
    loaded.decide(key, alice, action="add", code="E78.5", evidence=[{"start": 0, "end": 3}], lease_token=token,
                  expected_version=2)
    note = loaded.note(key)
    current = {c.code: (c.current, c.replaced_by, c.decided_by) for c in note.codes}
    assert current == {"E11.9": ("replace", "E11.65", "alice"), "R05.9": ("query", None, "alice"),
                       "I10": (None, None, None)}
    assert [(a.code, a.current, a.evidence) for a in note.added] == [
        ("E78.5", "add", [{"start": 0, "end": 3, "source": "reviewer"}])]
    assert note.version == 3 and note.final_codes == ["E11.65", "I10", "E78.5"]
    # a later decision on the same code wins; the earlier event stays
    loaded.decide(key, alice, action="accept", code="E11.9", lease_token=token, expected_version=3)
    assert loaded.note(key).codes[0].current == "accept"
    assert [e.action for e in loaded.events(key)] == ["replace", "query", "add", "accept"]
    item = next(i for i in loaded.queue().items if i.note_key == key)
    assert (item.n_decided, item.status) == (2, "in_progress")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"action": "accept", "code": "J45.909"}, "not a code of note"),
    ({"action": "replace", "code": "E11.9", "new_code": "E11"}, "not billable"),
    ({"action": "replace", "code": "E11.9", "new_code": "ZZZ.99"}, "not a code in the FY2026"),
    ({"action": "replace", "code": "E11.9"}, "needs a new_code"),
    ({"action": "add", "code": "N18.3"}, "not billable"),
    ({"action": "add", "code": "I10"}, "already a code"),
    ({"action": "query", "code": "E11.9"}, "needs a comment"),
    ({"action": "skip", "code": "E11.9"}, "not one of"),
])
def test_bad_decisions_are_refused(loaded: ReviewStore, alice: User, kwargs: dict, message: str) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    with pytest.raises(ReviewError, match=message):
        loaded.decide(key, alice, lease_token=token, expected_version=0, **kwargs)
    assert loaded.events(key) == []


def test_stale_version_is_a_conflict(loaded: ReviewStore, alice: User) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    loaded.decide(key, alice, action="accept", code="E11.9", lease_token=token, expected_version=0)
    with pytest.raises(ConflictError, match="changed since you loaded it"):
        loaded.decide(key, alice, action="reject", code="R05.9", lease_token=token, expected_version=0)
    assert len(loaded.events(key)) == 1


def test_auditor_reads_but_does_not_decide(loaded: ReviewStore, alice: User) -> None:
    auditor = loaded.create_user("audrey", PASSWORD, "auditor")
    key = key_of(loaded, "n1")
    with pytest.raises(ForbiddenError):
        loaded.claim(key, auditor)
    token = loaded.claim(key, alice).token
    with pytest.raises(ForbiddenError):
        loaded.decide(key, auditor, action="accept", code="E11.9", lease_token=token, expected_version=0)
    assert loaded.note(key).note_id == "n1"
    with pytest.raises(NotFoundError):
        loaded.note("no-such-key")


def test_submit_needs_every_routed_code_decided(loaded: ReviewStore, alice: User) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    loaded.decide(key, alice, action="accept", code="E11.9", lease_token=token, expected_version=0)
    with pytest.raises(ReviewError, match="1 routed code.*R05.9"):
        loaded.submit(key, alice, lease_token=token, expected_version=1)
    loaded.decide(key, alice, action="reject", code="R05.9", lease_token=token, expected_version=1)
    event = loaded.submit(key, alice, lease_token=token, expected_version=2)
    assert (event.action, event.seq) == ("submit", 3)
    note = loaded.note(key)
    assert (note.status, note.holder) == ("submitted", None)
    assert loaded.queue(status="submitted").total == 1 and loaded.queue().counts["submitted"] == 1
    with pytest.raises(ConflictError, match="already submitted"):
        loaded.decide(key, alice, action="accept", code="R05.9", lease_token=token, expected_version=3)
    with pytest.raises(LeaseError, match="already submitted"):
        loaded.claim(key, alice)


def test_two_submitters_one_conflict_one_event(loaded: ReviewStore, alice: User) -> None:
    """Two tabs (same lease) submit the same note at once: exactly one wins."""
    key = key_of(loaded, "n3")
    token = loaded.claim(key, alice).token
    version = _all_routed_decided(loaded, key, alice, token)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def submit() -> None:
        barrier.wait()
        try:
            outcomes.append(loaded.submit(key, alice, lease_token=token, expected_version=version))
        except ConflictError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "Event"]
    actions = [e.action for e in loaded.events(key)]
    assert actions.count("submit") == 1 and len(actions) == version + 1
    assert [e.seq for e in loaded.events(key)] == list(range(1, version + 2))


def test_two_reviewers_racing_on_one_version(loaded: ReviewStore, alice: User) -> None:
    """Eight concurrent decisions naming the same version: one event, seven conflicts."""
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    barrier = threading.Barrier(8)
    results: list[str] = []

    def decide(i: int) -> None:
        barrier.wait()
        try:
            loaded.decide(key, alice, action="accept" if i % 2 else "reject", code="E11.9", lease_token=token,
                          expected_version=0)
            results.append("ok")
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert len(loaded.events(key)) == 1


def test_unique_note_seq_is_enforced_by_the_database(loaded: ReviewStore, alice: User, db_url: str) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    loaded.decide(key, alice, action="accept", code="E11.9", lease_token=token, expected_version=0)
    engine = create_engine(db_url)
    try:
        with pytest.raises(DBAPIError, match="(?i)unique"), engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO review_events (note_key, seq, at, username, action, bundle_id, policy_version, "
                "input_sha256) VALUES (:k, 1, CURRENT_TIMESTAMP, 'mallory', 'accept', 'bundle-A', 'p', 'x')"),
                {"k": key})
    finally:
        engine.dispose()
    assert [e.username for e in loaded.events(key)] == ["alice"]


@pytest.mark.parametrize("statement", [
    "UPDATE review_events SET username = 'mallory'",
    "UPDATE review_events SET code_after = NULL WHERE seq = 1",
    "DELETE FROM review_events",
])
def test_events_cannot_be_updated_or_deleted(loaded: ReviewStore, alice: User, db_url: str,
                                             statement: str) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    event = loaded.decide(key, alice, action="replace", code="E11.9", new_code="E11.65", lease_token=token,
                          expected_version=0)
    engine = create_engine(db_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()
    assert loaded.events() == [event]


def test_admin_correction_is_a_new_event(loaded: ReviewStore, alice: User, admin: User) -> None:
    key = key_of(loaded, "n2")
    token = loaded.claim(key, alice).token
    loaded.decide(key, alice, action="accept", code="J45.909", lease_token=token, expected_version=0)
    loaded.submit(key, alice, lease_token=token, expected_version=1)
    before = loaded.events(key)
    with pytest.raises(ForbiddenError):
        loaded.correct(key, alice, code="J45.909", action="reject", comment="not asthma")
    with pytest.raises(ReviewError, match="needs a comment"):
        loaded.correct(key, admin, code="J45.909", action="reject", comment="")
    fix = loaded.correct(key, admin, code="J45.909", action="replace", new_code="J45.20", comment="intermittent")
    assert (fix.action, fix.seq, fix.username, fix.code_before, fix.code_after) == (
        "correct", 3, "root.admin", "J45.909", "J45.20")
    assert loaded.events(key)[:2] == before
    note = loaded.note(key)
    assert note.status == "submitted" and note.final_codes == ["J45.20", "E78.5"]
    loaded.correct(key, admin, code="E78.5", action="reject", comment="no lab evidence")
    assert loaded.note(key).final_codes == ["J45.20"]


def test_search_codes_billable_by_prefix_or_words(loaded: ReviewStore) -> None:
    by_prefix = loaded.search_codes("bundle-A", "e11.6", limit=50)
    assert by_prefix and all(c.startswith("E11.6") for c, _ in by_prefix)
    assert "E11.6" not in [c for c, _ in by_prefix] and "E11.65" in [c for c, _ in by_prefix]
    words = dict(loaded.search_codes("bundle-A", "type 2 diab nephropathy"))
    assert "E11.21" in words and "nephropathy" in words["E11.21"].lower()
    assert loaded.search_codes("bundle-A", "E11", limit=3) == [
        ("E11.00", loaded.search_codes("bundle-A", "E11.00")[0][1]),
        ("E11.01", loaded.search_codes("bundle-A", "E11.01")[0][1]),
        ("E11.10", loaded.search_codes("bundle-A", "E11.10")[0][1])]
    assert loaded.search_codes("bundle-A", "zzqqxx") == []
    with pytest.raises(NotFoundError):
        loaded.search_codes("no-bundle", "E11")


def test_excludes1_conflicts(loaded: ReviewStore) -> None:
    assert loaded.excludes1_conflicts("bundle-A", "E11.9", ["E10.9", "I10", "E11.9"]) == ["E10.9"]
    assert loaded.excludes1_conflicts("bundle-A", "e109", ["E11.65"]) == ["E11.65"]
    assert loaded.excludes1_conflicts("bundle-A", "I10", ["E78.5", "R05.9"]) == []


def test_comment_limits(loaded: ReviewStore, alice: User) -> None:
    key = key_of(loaded, "n1")
    token = loaded.claim(key, alice).token
    for comment in ("x" * 2001, "cough\x00?"):
        with pytest.raises(ReviewError, match="at most 2000 characters"):
            loaded.decide(key, alice, action="query", code="R05.9", comment=comment, lease_token=token,
                          expected_version=0)
    assert loaded.events(key) == []


def test_expected_version_must_be_a_number(loaded: ReviewStore, alice: User) -> None:
    key = key_of(loaded, "n4")
    token = loaded.claim(key, alice).token
    for bad in ("one", -1, None, 1.5):
        with pytest.raises(ReviewError, match="whole number"):
            loaded.submit(key, alice, lease_token=token, expected_version=bad)  # type: ignore[arg-type]
    assert loaded.submit(key, alice, lease_token=token, expected_version="0").seq == 1  # type: ignore[arg-type]


def test_code_set_of_another_year_through_the_loader(store: ReviewStore, alice: User, tmp_path) -> None:  # noqa: ANN001
    """A bundle of a year medcoder does not ship: replacements are refused until a loader gives
    that year's code set, and then checked against it (not against FY2026)."""
    import json

    from medcoder.codesets import CodeSet

    from .factory import CODES, NOTES, prediction, write_predictions

    row = prediction("n1", NOTES["n1"], CODES["n1"], fy=2031)
    path = write_predictions(tmp_path / "fy2031.jsonl", lines=[json.dumps(row)])
    store.import_predictions(path, NOTES)
    key = key_of(store, "n1")
    token = store.claim(key, alice).token
    with pytest.raises(ReviewError, match="fiscal year 2031 is not available"):
        store.decide(key, alice, action="replace", code="E11.9", new_code="E11.65", lease_token=token,
                     expected_version=0)
    fy2031 = CodeSet(2031, {"E11": "Type 2 diabetes", "E11.9": "T2DM", "E11.99": "T2DM, new in 2031"},
                     ["E11.9", "E11.99"], source="test")
    store.import_predictions(path, NOTES, codeset_loader=lambda fy: fy2031)
    with pytest.raises(ReviewError, match="not a code in the FY2031"):  # billable in 2026, not here
        store.decide(key, alice, action="replace", code="E11.9", new_code="E11.65", lease_token=token,
                     expected_version=0)
    event = store.decide(key, alice, action="replace", code="E11.9", new_code="E11.99", lease_token=token,
                         expected_version=0)
    assert (event.code_after, event.codeset_fy) == ("E11.99", 2031)
    assert store.search_codes(store.note(key).bundle_id, "new in") == [("E11.99", "T2DM, new in 2031")]
    store.warm()  # loads every bundle's year without error
