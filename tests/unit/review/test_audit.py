"""The blind audit sample and the audited-precision state of a bundle (SQLite and PostgreSQL):
the seeded, recorded draw; the blind view; every refused audit; lifts; suspension recomputed
from the append-only verdicts."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from medcoder.review import (
    AuditCode,
    AuditView,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ReviewError,
    ReviewStore,
    User,
)
from medcoder.review import models as m
from medcoder.review.monitor import alarm_step, monitor

from .conftest import PASSWORD, FakeClock
from .factory import NOTES, code, key_of, prediction, write_predictions

POOL = ["I10", "E78.5", "E66.9", "Z79.4", "E11.9", "J45.909"]
"""FY2026 billable codes the synthetic bundles auto-accept."""


def many_notes(tmp_path: Path, n: int, *, name: str = "many.jsonl", bundle_id: str = "bundle-B",
               per_note: int = 2) -> tuple[Path, dict[str, str]]:
    """``n`` notes, each with ``per_note`` auto-accepted codes and one routed code."""
    notes = {f"m{i:03d}": f"synthetic note number {i}" for i in range(n)}
    lines = []
    for i, (note_id, body) in enumerate(notes.items()):
        codes = [code(POOL[(i + j) % len(POOL)], 0.95, "auto_accept") for j in range(per_note)]
        codes.append(code("R05.9", 0.4))
        lines.append(json.dumps(prediction(note_id, body, codes, bundle_id=bundle_id)))
    return write_predictions(tmp_path / name, lines=lines), notes


def _draws(url: str) -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(m.audit_draws).order_by(m.audit_draws.c.id))]
    finally:
        engine.dispose()


@pytest.fixture
def carol(store: ReviewStore) -> User:
    return store.create_user("carol", PASSWORD, "auditor")


@pytest.fixture
def audited(store: ReviewStore, predictions: Path) -> ReviewStore:
    """bundle-A with every note that has an auto-accepted code (n1, n2, n4) drawn for audit."""
    result = store.import_predictions(predictions, NOTES, audit_rate=1.0)
    assert result.n_audit == 3
    return store


def test_the_draw_is_seeded_recorded_and_reproducible(store: ReviewStore, db_url: str, tmp_path: Path) -> None:
    path, notes = many_notes(tmp_path, 60)
    result = store.import_predictions(path, notes, audit_rate=0.25, audit_seed=7)
    assert result.n_audit == 15
    [audit, double] = _draws(db_url)
    assert (audit["kind"], audit["seed"], audit["rate"], audit["min_per_import"], audit["n_eligible"],
            audit["n_drawn"]) == ("audit", 7, 0.25, 1, 60, 15)
    assert (double["kind"], double["n_drawn"]) == ("double", 0)
    keys = json.loads(audit["note_keys"])
    queue = store.audit_queue(bundle_id="bundle-B", limit=500)
    assert sorted(i.note_key for i in queue) == sorted(keys) and len(set(keys)) == 15
    assert all((i.n_codes, i.n_audited) == (2, 0) for i in queue)
    # idempotent: re-importing draws nothing and records nothing
    again = store.import_predictions(path, notes, audit_rate=0.25, audit_seed=7)
    assert (again.n_imported, again.n_audit) == (0, 0) and len(_draws(db_url)) == 2
    # the same file and seed draw the same notes in another store; another seed draws others
    for seed, same in ((7, True), (8, False)):
        with ReviewStore.open(f"sqlite:///{tmp_path / f'other{seed}.db'}") as other:
            other.import_predictions(path, notes, audit_rate=0.25, audit_seed=seed)
            drawn = sorted(i.note_key for i in other.audit_queue(limit=500))
        assert (drawn == sorted(keys)) is same


@pytest.mark.parametrize(("rate", "minimum", "expected"), [(0.05, 1, 3), (0.05, 5, 5), (0.0, 5, 0), (1.0, 1, 60),
                                                          (0.01, 1, 1)])
def test_how_many_are_drawn(store: ReviewStore, tmp_path: Path, rate: float, minimum: int, expected: int) -> None:
    path, notes = many_notes(tmp_path, 60)
    assert store.import_predictions(path, notes, audit_rate=rate, min_audit=minimum).n_audit == expected


def test_at_least_one_note_per_import(store: ReviewStore, predictions: Path, tmp_path: Path) -> None:
    # 3 notes with an auto-accepted code: round(0.05 * 3) = 0, but every import audits one
    assert store.import_predictions(predictions, NOTES).n_audit == 1
    extra = {"n5": "Another synthetic note about hypertension."}
    later = write_predictions(tmp_path / "later.jsonl", lines=[json.dumps(prediction(
        "n5", extra["n5"], [code("I10", 0.97, "auto_accept")]))])
    assert store.import_predictions(later, extra).n_audit == 1
    assert len(store.audit_queue(limit=500)) == 2
    # a file without auto-accepted codes has nothing to draw
    routed_only = write_predictions(tmp_path / "routed.jsonl", lines=[json.dumps(prediction(
        "n6", "A routed-only note.", [code("R05.9", 0.3)]))])
    assert store.import_predictions(routed_only, {"n6": "A routed-only note."}).n_audit == 0


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"audit_rate": 1.5}, "audit_rate"), ({"audit_rate": -0.1}, "audit_rate"), ({"audit_rate": "0.1"}, "audit_rate"),
    ({"min_audit": -1}, "min_audit"), ({"audit_seed": -3}, "audit_seed"), ({"audit_seed": 1.5}, "audit_seed"),
    ({"double_review_rate": 2.0}, "double_review_rate"),
])
def test_bad_draw_arguments_are_one_line(store: ReviewStore, predictions: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ReviewError, match=name) as err:
        store.import_predictions(predictions, NOTES, **kwargs)
    assert "\n" not in str(err.value)
    assert store.bundles() == []  # nothing imported


def test_the_audit_view_is_blind(audited: ReviewStore, carol: User) -> None:
    view = audited.audit_view(key_of(audited, "n4"), carol)
    assert {f.name for f in dataclasses.fields(AuditView)} == {
        "note_key", "note_id", "bundle_id", "text", "codes", "verdicts"}
    assert {f.name for f in dataclasses.fields(AuditCode)} == {"code", "description"}
    assert (view.note_id, view.text) == ("n4", NOTES["n4"])
    assert [c.code for c in view.codes] == ["E66.9", "Z79.4"]  # sorted by code, not by probability
    assert view.codes[0].description == "Obesity, unspecified"
    # n1: only the auto-accepted code, none of the routed ones
    assert [c.code for c in audited.audit_view(key_of(audited, "n1"), carol).codes] == ["I10"]
    assert "0.9" not in repr(audited.audit_view(key_of(audited, "n1"), carol))  # no probability anywhere
    alice = audited.create_user("alice", PASSWORD, "reviewer")
    with pytest.raises(ForbiddenError):
        audited.audit_view(key_of(audited, "n4"), alice)


def test_verdicts_are_events_and_fill_the_view(audited: ReviewStore, carol: User, clock: FakeClock) -> None:
    key = key_of(audited, "n4")
    e1 = audited.audit(key, carol, code="e669", verdict="correct")
    clock.advance(5)
    e2 = audited.audit(key, carol, code="Z79.4", verdict="wrong", replaced_by="Z79.84", comment="oral agent")
    assert (e1.code, e1.verdict, e1.replaced_by, e1.bundle_id, e1.codeset_fy, e1.policy_version) == (
        "E66.9", "correct", None, "bundle-A", 2026, "policy-1")
    assert (e2.replaced_by, e2.comment, e2.username, e2.at - e1.at) == ("Z79.84", "oral agent", "carol",
                                                                        timedelta(seconds=5))
    view = audited.audit_view(key, carol)
    assert [(v.code, v.verdict, v.replaced_by) for v in view.verdicts] == [("E66.9", "correct", None),
                                                                          ("Z79.4", "wrong", "Z79.84")]
    # fully audited notes leave the audit queue
    assert key not in {i.note_key for i in audited.audit_queue(carol)}


def test_refused_audits(audited: ReviewStore, carol: User, admin: User, tmp_path: Path) -> None:
    n1, n3 = key_of(audited, "n1"), key_of(audited, "n3")
    alice = audited.create_user("alice", PASSWORD, "reviewer")
    with pytest.raises(ForbiddenError):
        audited.audit(n1, alice, code="I10", verdict="correct")
    with pytest.raises(ReviewError, match="not drawn for audit"):
        audited.audit(n3, carol, code="E10.9", verdict="correct")
    with pytest.raises(ReviewError, match="audit decision on a code that was not auto-accepted: refused"):
        audited.audit(n1, carol, code="E11.9", verdict="correct")  # routed, not auto-accepted
    with pytest.raises(ReviewError, match="not auto-accepted"):
        audited.audit(n1, carol, code="E78.5", verdict="correct")  # not on the note at all
    with pytest.raises(ReviewError, match="not one of correct, wrong"):
        audited.audit(n1, carol, code="I10", verdict="maybe")
    with pytest.raises(ReviewError, match="replaced_by goes with the verdict wrong"):
        audited.audit(n1, carol, code="I10", verdict="correct", replaced_by="I11.9")
    with pytest.raises(ReviewError, match="not billable"):
        audited.audit(n1, carol, code="I10", verdict="wrong", replaced_by="E11")
    with pytest.raises(ReviewError, match="not a code in the FY2026"):
        audited.audit(n1, carol, code="I10", verdict="wrong", replaced_by="ZZZ.99")
    # an admin who reviewed the note may not audit it
    token = audited.claim(n1, admin).token
    audited.decide(n1, admin, action="accept", code="E11.9", lease_token=token, expected_version=0)
    with pytest.raises(ReviewError, match="an auditor must be another person"):
        audited.audit(n1, admin, code="I10", verdict="correct")
    # one verdict per code
    audited.audit(n1, carol, code="I10", verdict="wrong", replaced_by="I11.9")
    with pytest.raises(ConflictError, match="already has an audit verdict"):
        audited.audit(n1, carol, code="I10", verdict="correct")
    assert [(p.code, p.correct) for p in audited.audit_stream("bundle-A")] == [("I10", False)]


def test_an_auditor_of_a_note_may_not_review_it(audited: ReviewStore, admin: User) -> None:
    n2, n4 = key_of(audited, "n2"), key_of(audited, "n4")
    token = audited.claim(n2, admin).token  # claimed before auditing: the decision itself is refused
    audited.audit(n2, admin, code="E78.5", verdict="correct")
    with pytest.raises(ReviewError, match="a reviewer must be another person than its auditor"):
        audited.decide(n2, admin, action="accept", code="J45.909", lease_token=token, expected_version=0)
    with pytest.raises(ReviewError, match="another person than its auditor"):
        audited.submit(n2, admin, lease_token=token, expected_version=0)
    with pytest.raises(ReviewError, match="another person than its auditor"):
        audited.claim(n2, admin)
    assert audited.events(n2) == []
    audited.audit(n4, admin, code="Z79.4", verdict="correct")
    with pytest.raises(ReviewError, match="another person than its auditor"):
        audited.claim(n4, admin)
    # another reviewer still may
    audited.release(n2, admin, token)
    bob = audited.create_user("bob", PASSWORD, "reviewer")
    token = audited.claim(n2, bob).token
    audited.decide(n2, bob, action="accept", code="J45.909", lease_token=token, expected_version=0)


def test_the_audit_queue_leaves_out_what_the_user_reviewed(audited: ReviewStore, carol: User, admin: User) -> None:
    keys = [key_of(audited, i) for i in ("n1", "n2", "n4")]
    assert [i.note_key for i in audited.audit_queue(admin)] == keys
    token = audited.claim(keys[0], admin).token
    audited.decide(keys[0], admin, action="accept", code="E11.9", lease_token=token, expected_version=0)
    assert [i.note_key for i in audited.audit_queue(admin)] == keys[1:]
    assert [i.note_key for i in audited.audit_queue(carol)] == keys
    assert [i.note_key for i in audited.audit_queue(carol, bundle_id="other")] == []
    assert [i.note_key for i in audited.audit_queue(carol, limit=1, offset=1)] == keys[1:2]
    alice = audited.create_user("alice", PASSWORD, "reviewer")
    with pytest.raises(ForbiddenError):
        audited.audit_queue(alice)


def _bad_bundle(store: ReviewStore, tmp_path: Path, n: int = 20) -> list[str]:
    path, notes = many_notes(tmp_path, n)
    store.import_predictions(path, notes, audit_rate=1.0)
    store.set_bundle_guarantee("bundle-B", 0.9, 0.1)
    return [i.note_key for i in store.audit_queue(bundle_id="bundle-B", limit=500)]


def _audit_all(store: ReviewStore, keys: list[str], auditor: User, verdict_of) -> int:  # noqa: ANN001
    count = 0
    for key in keys:
        for c in store.audit_view(key, auditor).codes:
            store.audit(key, auditor, code=c.code, verdict=verdict_of(count))
            count += 1
    return count


def test_a_bad_stream_suspends_and_a_lift_restarts_it(store: ReviewStore, carol: User, admin: User,
                                                      clock: FakeClock, tmp_path: Path) -> None:
    keys = _bad_bundle(store, tmp_path)
    state = store.audit_state("bundle-B")
    assert (state.suspended, state.report.n_audited, state.last_lift, state.n_accepted_since) == (False, 0, None, 40)
    # nothing to lift while the bundle runs: refused, one line, nothing recorded
    with pytest.raises(ReviewError, match="is not suspended") as err:
        store.lift("bundle-B", admin, reason="just in case")
    assert "\n" not in str(err.value) and store.audit_state("bundle-B").last_lift is None
    # three wrong codes in four: precision 0.25 against a target of 0.9
    _audit_all(store, keys[:5], carol, lambda i: "correct" if i % 4 == 3 else "wrong")
    state = store.audit_state("bundle-B")
    assert state.suspended and state.report.alarm and state.report.n_audited == 10
    stream = store.audit_stream("bundle-B")
    assert state.alarm_at_time == stream[state.report.alarm_at - 1].at
    assert state.report.cs_high < 0.9 and state.last_audit_at == stream[-1].at
    # the lift: admin only, with a reason
    with pytest.raises(ForbiddenError):
        store.lift("bundle-B", carol, reason="fixed the template")
    with pytest.raises(ReviewError, match="needs a reason"):
        store.lift("bundle-B", admin, reason="   ")
    with pytest.raises(ReviewError, match="at most 2000"):
        store.lift("bundle-B", admin, reason="x" * 2001)
    with pytest.raises(NotFoundError):
        store.lift("no-such-bundle", admin, reason="why")
    clock.advance(60)
    lifted = store.lift("bundle-B", admin, reason="the template change was reverted")
    assert lifted.last_audit_event_id == stream[-1].audit_event_id
    state = store.audit_state("bundle-B")
    assert not state.suspended and state.report.n_audited == 0 and state.last_lift == lifted
    assert state.n_accepted_since == 0  # nothing imported since the lift
    with pytest.raises(ReviewError, match="is not suspended"):  # a second lift of the same suspension
        store.lift("bundle-B", admin, reason="lifted twice")
    assert store.audit_state("bundle-B").last_lift == lifted
    assert store.audit_stream("bundle-B") == [] and len(store.audit_stream("bundle-B", since_lift=False)) == 10
    # good verdicts after the lift keep it running
    _audit_all(store, keys[5:10], carol, lambda i: "correct")
    state = store.audit_state("bundle-B")
    assert (state.suspended, state.report.n_audited, state.report.n_correct) == (False, 10, 10)


def test_state_is_recomputed_after_a_crash(store: ReviewStore, db_url: str, carol: User, clock: FakeClock,
                                           tmp_path: Path) -> None:
    """The verdict that fires the alarm is written, then the process dies before anything reads or
    publishes the state: the reopened store must say suspended, at that verdict. (A state kept in
    memory, or stored at the last read, would still say "running".) Republishing the status on a
    restart of the workbench is tested with the workbench."""
    keys = _bad_bundle(store, tmp_path)
    _audit_all(store, keys[:2], carol, lambda i: "wrong")  # 4 wrong codes: not yet enough at n_opt 200
    running = store.audit_state("bundle-B")
    assert (running.suspended, running.report.n_audited) == (False, 4)
    clock.advance(30)
    fatal = store.audit(keys[2], carol, code=store.audit_view(keys[2], carol).codes[0].code, verdict="wrong")
    store.close()  # the process dies: nothing but the verdict was written
    with ReviewStore.open(db_url, clock=clock) as again:
        state = again.audit_state("bundle-B")
        assert state.suspended and state.report.alarm
        assert (state.report.n_audited, state.report.n_correct, state.report.alarm_at) == (5, 0, 5)
        assert state.alarm_at_time == fatal.at and state.last_audit_at == fatal.at
        assert state.report == monitor([False] * 5, target=0.9, delta=0.1, warnings=state.warnings)
        assert [p.correct for p in again.audit_stream("bundle-B")] == [False] * 5


def test_guarantee_is_checked_and_required(store: ReviewStore, predictions: Path) -> None:
    with pytest.raises(NotFoundError, match="import the bundle's predictions first"):
        store.set_bundle_guarantee("bundle-A", 0.9, 0.1)
    store.import_predictions(predictions, NOTES)
    with pytest.raises(ReviewError, match="no audit target/delta") as err:
        store.audit_state("bundle-A")
    assert "set_bundle_guarantee" in str(err.value) and "\n" not in str(err.value)
    for target, delta in ((1.0, 0.1), (0.9, 0.0), (0.0, 0.1), (0.9, True), ("0.9", 0.1)):
        with pytest.raises(ReviewError, match="strictly between 0 and 1"):
            store.set_bundle_guarantee("bundle-A", target, delta)
    store.set_bundle_guarantee("bundle-A", 0.95, 0.05)
    state = store.audit_state("bundle-A")
    assert (state.target, state.delta, state.report.target) == (0.95, 0.05, 0.95)
    with pytest.raises(ReviewError, match="n_opt"):
        store.audit_state("bundle-A", n_opt=0)
    with pytest.raises(ReviewError, match="UTC-aware"):
        store.audit_state("bundle-A", now=datetime(2026, 12, 1))
    with pytest.raises(NotFoundError):
        store.audit_state("no-such-bundle")


def test_the_monitor_settings_are_pinned_with_the_guarantee(store: ReviewStore, carol: User, admin: User,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Five wrong codes in a row fire the alarm at n_opt 200 but not at 1,000: once the guarantee
    is set (with n_opt 200), no later n_opt, target or delta may make that alarm disappear."""
    assert alarm_step([False] * 5, target=0.9, delta=0.1, n_opt=200) == 5
    assert alarm_step([False] * 5, target=0.9, delta=0.1, n_opt=1000) is None
    keys = _bad_bundle(store, tmp_path)  # set_bundle_guarantee("bundle-B", 0.9, 0.1): n_opt 200 pinned
    _audit_all(store, keys[:2], carol, lambda i: "wrong")
    store.audit(keys[2], carol, code=store.audit_view(keys[2], carol).codes[0].code, verdict="wrong")
    assert store.audit_state("bundle-B").suspended
    # the caller's n_opt is ignored: the pinned one is used
    state = store.audit_state("bundle-B", n_opt=1000)
    assert state.suspended and state.report.n_opt == 200 and state.report.alarm_at == 5
    # setting the guarantee again: the same target and delta are a no-op, another n_opt is ignored
    with caplog.at_level("WARNING", logger="medcoder.review.store"):
        store.set_bundle_guarantee("bundle-B", 0.9, 0.1, n_opt=1000)
    assert "pinned n_opt=200 (n_opt=1000 ignored)" in caplog.text
    assert store.audit_state("bundle-B").suspended and store.audit_state("bundle-B").report.n_opt == 200
    # another target or delta is refused, one line
    for target, delta in ((0.8, 0.1), (0.9, 0.05)):
        with pytest.raises(ReviewError, match="pinned at target 0.9, delta 0.1") as err:
            store.set_bundle_guarantee("bundle-B", target, delta)
        assert "\n" not in str(err.value)
    state = store.audit_state("bundle-B")
    assert (state.target, state.delta, state.suspended) == (0.9, 0.1, True)
    store.lift("bundle-B", admin, reason="the suspension is still there to lift")
    with pytest.raises(ReviewError, match="n_opt"):
        store.set_bundle_guarantee("bundle-B", 0.9, 0.1, n_opt=0)


def test_a_guarantee_first_set_with_n_opt_keeps_it(store: ReviewStore, carol: User, tmp_path: Path) -> None:
    path, notes = many_notes(tmp_path, 20)
    store.import_predictions(path, notes, audit_rate=1.0)
    store.set_bundle_guarantee("bundle-B", 0.9, 0.1, n_opt=1000)
    keys = [i.note_key for i in store.audit_queue(bundle_id="bundle-B", limit=500)]
    _audit_all(store, keys[:3], carol, lambda i: "wrong")  # 6 wrong codes: an alarm at n_opt 200, none at 1,000
    assert alarm_step([False] * 6, target=0.9, delta=0.1, n_opt=200) == 5
    state = store.audit_state("bundle-B")  # the default n_opt (200) asked for: the pinned 1,000 used
    assert state.report.n_opt == 1000 and not state.suspended and state.report.alarm_at is None


def test_too_little_evidence_warns_without_suspending(audited: ReviewStore, clock: FakeClock) -> None:
    audited.set_bundle_guarantee("bundle-A", 0.9, 0.1)
    state = audited.audit_state("bundle-A", now=clock.now + timedelta(days=30))
    assert not state.suspended and any("no audit for 30 days" in w for w in state.warnings)
    assert state.report.warnings == state.warnings
    assert audited.audit_state("bundle-A").warnings == []


def test_an_admin_who_audited_a_note_may_not_correct_it(audited: ReviewStore, admin: User, alice: User) -> None:
    n1, n2 = key_of(audited, "n1"), key_of(audited, "n2")
    for key, routed in ((n1, ("E11.9", "R05.9")), (n2, ("J45.909",))):
        token = audited.claim(key, alice).token
        for version, c in enumerate(routed):
            audited.decide(key, alice, action="accept", code=c, lease_token=token, expected_version=version)
        audited.submit(key, alice, lease_token=token, expected_version=len(routed))
    audited.audit(n1, admin, code="I10", verdict="wrong", replaced_by="I11.9")
    n_events = len(audited.events(n1))
    with pytest.raises(ReviewError, match="another person than its auditor") as err:
        audited.correct(n1, admin, code="I10", action="reject", comment="the audit said so")
    assert "\n" not in str(err.value) and len(audited.events(n1)) == n_events
    # another admin may; and the same admin may correct a note they did not audit
    other = audited.create_user("other.admin", PASSWORD, "admin")
    assert audited.correct(n1, other, code="I10", action="reject", comment="the audit said so").action == "correct"
    assert audited.correct(n2, admin, code="J45.909", action="reject", comment="no asthma").action == "correct"


@pytest.mark.parametrize("statement", [
    "UPDATE review_audit_events SET verdict = 'correct'",
    "DELETE FROM review_audit_events",
    "UPDATE review_audit_lifts SET reason = 'nothing happened'",
    "DELETE FROM review_audit_lifts",
])
def test_verdicts_and_lifts_are_append_only(audited: ReviewStore, carol: User, admin: User, db_url: str,
                                           statement: str) -> None:
    audited.set_bundle_guarantee("bundle-A", 0.99, 0.1)  # two wrong codes in two suspend at 0.99
    audited.audit(key_of(audited, "n4"), carol, code="E66.9", verdict="wrong")
    audited.audit(key_of(audited, "n4"), carol, code="Z79.4", verdict="wrong")
    assert audited.audit_state("bundle-A").suspended
    audited.lift("bundle-A", admin, reason="a reason")
    engine = create_engine(db_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
        if engine.dialect.name == "postgresql":
            table = statement.split()[1] if statement.startswith("UPDATE") else statement.split()[2]
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {table}"))
    finally:
        engine.dispose()
    assert [p.correct for p in audited.audit_stream("bundle-A", since_lift=False)] == [False, False]
