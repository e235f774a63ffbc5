"""The queue: filters (bundle, reason, code, probability, status), paging and progress counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcoder.review import ReviewError, ReviewStore, User

from .factory import NOTES, key_of, write_predictions


def _ids(store: ReviewStore, **filters: object) -> list[str]:
    return [i.note_id for i in store.queue(**filters).items]


def test_filters(loaded: ReviewStore) -> None:
    assert _ids(loaded, reason="rare_code") == ["n3"]
    assert _ids(loaded, reason="low_confidence") == ["n1", "n2", "n3"]
    assert _ids(loaded, reason="no_such_reason") == []
    assert _ids(loaded, code="e119") == ["n1"] and _ids(loaded, code="E78.5") == ["n2"]
    # probability filters look at routed codes unless a code is named
    assert _ids(loaded, p_min=0.6) == ["n1", "n3"]
    assert _ids(loaded, p_max=0.35) == ["n3"]
    assert _ids(loaded, p_min=0.5, p_max=0.6) == ["n2"]
    assert _ids(loaded, code="E78.5", p_min=0.9) == ["n2"] and _ids(loaded, code="E78.5", p_max=0.5) == []
    assert _ids(loaded, reason="rare_code", p_max=0.35) == ["n3"]  # each filter is about the note
    page = loaded.queue(reason="no_evidence", p_min=0.6)
    assert [i.note_id for i in page.items] == ["n1"]
    assert page.total == 1 and page.counts["total"] == 4  # counts are the bundle's progress
    with pytest.raises(ReviewError):
        loaded.queue(status="done")
    with pytest.raises(ReviewError):
        loaded.queue(p_min="high")  # type: ignore[arg-type]
    with pytest.raises(ReviewError, match="code filter"):
        loaded.queue(code="not a code at all")


def test_paging(loaded: ReviewStore) -> None:
    first, second = loaded.queue(limit=3), loaded.queue(offset=3, limit=3)
    assert [i.note_id for i in first.items] == ["n1", "n2", "n3"] and first.total == 4
    assert [i.note_id for i in second.items] == ["n4"] and second.total == 4


def test_status_and_counts_follow_the_events(loaded: ReviewStore, alice: User) -> None:
    k1, k4 = key_of(loaded, "n1"), key_of(loaded, "n4")
    t1 = loaded.claim(k1, alice).token
    loaded.decide(k1, alice, action="accept", code="E11.9", lease_token=t1, expected_version=0)
    t4 = loaded.claim(k4, alice).token
    loaded.submit(k4, alice, lease_token=t4, expected_version=0)  # nothing routed: submit at once
    page = loaded.queue()
    assert page.counts == {"open": 2, "in_progress": 1, "submitted": 1, "total": 4}
    assert _ids(loaded, status="in_progress") == ["n1"] and _ids(loaded, status="submitted") == ["n4"]
    assert _ids(loaded, status="open") == ["n2", "n3"] and loaded.queue(status="open").total == 2
    n1 = next(i for i in page.items if i.note_id == "n1")
    assert (n1.n_decided, n1.n_routed, n1.holder) == (1, 2, "alice")


def test_counts_per_bundle(loaded: ReviewStore, tmp_path: Path) -> None:
    loaded.import_predictions(write_predictions(tmp_path / "b.jsonl", {"n2": NOTES["n2"]}, bundle_id="B"),
                              {"n2": NOTES["n2"]})
    assert loaded.queue(bundle_id="B").counts["total"] == 1
    assert loaded.queue().counts["total"] == 5
    assert loaded.queue(bundle_id="B", code="J45.909").total == 1


FILTERS: list[dict[str, object]] = [
    {"reason": "rare_code"}, {"reason": "low_confidence"}, {"reason": "no_such_reason"}, {"code": "e119"},
    {"code": "E78.5"}, {"p_min": 0.6}, {"p_max": 0.35}, {"p_min": 0.5, "p_max": 0.6}, {"code": "E78.5", "p_min": 0.9},
    {"code": "E78.5", "p_max": 0.5}, {"reason": "rare_code", "p_max": 0.35}, {"reason": "no_evidence", "p_min": 0.6},
    {"reason": "low_confidence", "status": "open"}, {"reason": "low_confidence", "offset": 1, "limit": 1},
]


def test_broad_filters_walk_the_notes_and_cap_the_count(loaded: ReviewStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter matching many notes is probed note by note in import order (EXISTS) and counted only
    up to a bound: the same notes as the narrow plan (IN), and ``total_capped`` says the count stopped."""
    from medcoder.review import queue as q

    narrow = {repr(f): (_ids(loaded, **f), loaded.queue(**f).total) for f in FILTERS}  # type: ignore[arg-type]
    assert not any(loaded.queue(**f).total_capped for f in FILTERS)  # type: ignore[arg-type]
    monkeypatch.setattr(q, "NARROW_MIN", 0)
    monkeypatch.setattr(q, "NARROW_FRACTION", 0.0)  # every filter is broad now
    for f in FILTERS:
        page = loaded.queue(**f)  # type: ignore[arg-type]
        assert ([i.note_id for i in page.items], page.total) == narrow[repr(f)] and not page.total_capped, f
    monkeypatch.setattr(q, "COUNT_CAP", 2)  # reason=low_confidence matches n1, n2, n3
    page = loaded.queue(reason="low_confidence", limit=1)
    assert [i.note_id for i in page.items] == ["n1"]
    assert (page.total, page.total_capped) == (2, True)  # "2+": a lower bound, past this page
    page = loaded.queue(reason="low_confidence", offset=1, limit=1)  # counted up to the page's end + 1
    assert [i.note_id for i in page.items] == ["n2"] and (page.total, page.total_capped) == (3, False)
    page = loaded.queue(reason="low_confidence", offset=2, limit=1)
    assert [i.note_id for i in page.items] == ["n3"] and (page.total, page.total_capped) == (3, False)
    monkeypatch.setattr(q, "COUNT_CAP", 3)  # exactly the cap: exact, not capped
    assert (loaded.queue(reason="low_confidence", limit=1).total, loaded.queue(reason="low_confidence").total_capped) \
        == (3, False)
    monkeypatch.setattr(q, "COUNT_CAP", 1)
    page = loaded.queue(p_min=0.0, limit=1)  # n1, n2, n3 have routed codes
    assert (page.total, page.total_capped) == (2, True)  # a next page exists: offset + limit < total
    assert page.counts["total"] == 4  # the progress counts stay exact


def test_an_auditor_never_sees_the_pending_audit_sample_in_the_queue(store: ReviewStore, predictions: Path,
                                                                     alice: User, admin: User) -> None:
    """n1, n2, n4 drawn for audit; n1, n2, n3 reviewed twice (twins ``#2``). For an auditor or an
    admin the queue (rows, filters, totals, counts) leaves out every note still waiting for a verdict
    and its twin: its row and its filters would show the model's reasons and decisions."""
    store.import_predictions(predictions, NOTES, audit_rate=1.0, double_review_rate=1.0)
    carol = store.create_user("carol", "correct horse battery staple", "auditor")
    everything = ["n1", "n2", "n3", "n4", "n1#2", "n2#2", "n3#2"]
    assert _ids(store, limit=50) == everything and _ids(store, user=alice) == everything
    assert store.queue(user=alice).counts["total"] == 7
    for user in (carol, admin):
        page = store.queue(user=user)
        assert [i.note_id for i in page.items] == ["n3", "n3#2"]
        assert (page.total, page.counts["total"], page.counts["open"]) == (2, 2, 2)
        assert _ids(store, user=user, code="I10") == [] and store.queue(user=user, code="I10").total == 0
        assert _ids(store, user=user, reason="low_confidence") == ["n3", "n3#2"]
        assert _ids(store, user=user, p_min=0.5, p_max=0.6) == []  # n2's J45.909 at 0.55
        assert _ids(store, user=user, bundle_id="bundle-A", status="open") == ["n3", "n3#2"]
        assert store.queue(user=user, bundle_id="bundle-A").counts["total"] == 2
    # a note comes back once every auto-accepted code of it has a verdict (whoever gave them)
    store.audit(key_of(store, "n4"), carol, code="E66.9", verdict="correct")
    assert "n4" not in _ids(store, user=admin)  # one of two codes audited: still blind
    store.audit(key_of(store, "n4"), carol, code="Z79.4", verdict="wrong")
    store.audit(key_of(store, "n1"), carol, code="I10", verdict="correct")
    assert _ids(store, user=admin) == ["n1", "n3", "n4", "n1#2", "n3#2"]
    assert _ids(store, user=carol, code="I10") == ["n1", "n1#2"]
    assert store.queue(user=carol).counts["total"] == 5
