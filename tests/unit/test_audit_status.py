"""A bundle's audit status: the file format, its failure modes (fail closed) and the routing hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medcoder.inference.audit_status import (
    ACTIVE,
    SUSPENDED,
    AuditStatus,
    AuditStatusError,
    CachedStatusSource,
    FileStatusSource,
    read_status_file,
    status_path,
    write_status_file,
)
from medcoder.routing.policy import RoutingInputs
from medcoder.routing.reasons import (
    ALL_REASONS,
    AUDIT_ALARM,
    AUDIT_STATUS_UNREADABLE,
    AUTO_ACCEPT,
    HUMAN_REVIEW,
    LOW_CONFIDENCE,
)

from ..helpers.coders import CODES, policy

BUNDLE = "bundle-abc"


def _status(state: str = SUSPENDED, bundle_id: str = BUNDLE) -> AuditStatus:
    return AuditStatus(bundle_id=bundle_id, state=state, reason=AUDIT_ALARM if state == SUSPENDED else None,
                       since="2026-12-01T00:00:00+00:00", by="monitor", detail="precision below target",
                       target=0.9, delta=0.1, n_audited=40, n_correct=28, cs_high=0.85)


def test_round_trip_beside_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "my-bundle"
    bundle.mkdir()
    assert read_status_file(bundle, BUNDLE) is None  # no file: active
    path = write_status_file(bundle, _status())
    assert path == tmp_path / "my-bundle.audit-status.json" == status_path(bundle)
    assert not any(bundle.iterdir())  # the bundle itself is untouched
    back = read_status_file(bundle, BUNDLE)
    assert back == _status() and back.suspended


@pytest.mark.parametrize("text, needle", [
    ("{not json", "JSONDecodeError"),
    ("[1, 2]", "expected an object"),
    (json.dumps({"bundle_id": BUNDLE, "state": "active", "colour": "red"}), "unknown fields ['colour']"),
    (json.dumps({"bundle_id": BUNDLE, "state": "paused"}), "state='paused'"),
    (json.dumps({"bundle_id": BUNDLE, "state": "active", "schema": 99}), "schema=99"),
    (json.dumps({"bundle_id": "", "state": "active"}), "bundle_id=''"),
    (json.dumps({"bundle_id": "other-bundle", "state": "active"}), "names bundle 'other-bundle'"),
    ("", "JSONDecodeError"),
])
def test_corrupt_or_foreign_status_is_one_line_error(tmp_path: Path, text: str, needle: str) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    status_path(bundle).write_text(text)
    with pytest.raises(AuditStatusError) as err:
        read_status_file(bundle, BUNDLE)
    message = str(err.value)
    assert needle in message and str(status_path(bundle)) in message and "\n" not in message


def test_unreadable_file_fails_closed_and_recovers_when_fixed(tmp_path: Path, monkeypatch) -> None:
    """A status file the process may not read (simulated: CI runs as root, which reads any file
    whatever its mode) fails closed, and is read again once it is fixed."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    path = write_status_file(bundle, _status(ACTIVE))
    source = FileStatusSource(bundle, BUNDLE)
    assert source.current().hold is None
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    def touch(step: int) -> None:  # what a chmod does to the file's stat: the source must notice
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + step * 1_000_000))

    monkeypatch.setattr(Path, "read_bytes", denied)
    touch(1)
    state = source.current()
    assert state.hold == AUDIT_STATUS_UNREADABLE and "Permission denied" in state.problem
    monkeypatch.setattr(Path, "read_bytes", real)
    touch(2)
    assert source.current().hold is None and source.current().status.state == ACTIVE


def test_file_source_sees_every_change_and_parses_only_on_change(tmp_path: Path, monkeypatch) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    source = FileStatusSource(bundle, BUNDLE)
    assert source.current().label == "none"
    write_status_file(bundle, _status(SUSPENDED))
    assert source.current().hold == AUDIT_ALARM
    reads = []
    import medcoder.inference.audit_status as mod

    real = mod.read_status_file
    monkeypatch.setattr(mod, "read_status_file", lambda *a: reads.append(1) or real(*a))
    for _ in range(3):
        assert source.current().hold == AUDIT_ALARM
    assert reads == []  # unchanged file: stat only
    write_status_file(bundle, _status(ACTIVE))  # lifted
    assert source.current().hold is None and reads == [1]
    status_path(bundle).unlink()
    assert source.current().label == "none"


def test_cached_source_honours_ttl_and_fails_closed_on_any_error() -> None:
    now = [0.0]
    answers: list = [_status(SUSPENDED), RuntimeError("registry down"), _status(ACTIVE, "another")]
    calls = []

    def reader():
        calls.append(1)
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    source = CachedStatusSource(reader, BUNDLE, where="models:/m/1 tag", clock=lambda: now[0])
    assert source.current(ttl_s=60).hold == AUDIT_ALARM
    now[0] = 59.9
    assert source.current(ttl_s=60).hold == AUDIT_ALARM and len(calls) == 1  # cached
    now[0] = 60.0
    state = source.current(ttl_s=60)
    assert state.hold == AUDIT_STATUS_UNREADABLE and "RuntimeError: registry down" in state.problem
    now[0] = 61.0
    assert source.current(ttl_s=60).hold == AUDIT_STATUS_UNREADABLE and len(calls) == 2  # the error is cached too
    now[0] = 120.0
    state = source.current(ttl_s=60)  # another bundle's status: fail closed
    assert state.hold == AUDIT_STATUS_UNREADABLE and "names bundle 'another'" in state.problem


def test_policy_hold_is_one_rule_for_every_predicted_code() -> None:
    pol = policy()
    pol.tau_accept = 0.5
    probs = np.full((2, len(CODES)), 0.1)
    probs[0, :3] = 0.9  # three codes above τ: auto-accepted without a hold
    freq = {c: 50 for c in CODES}
    plain = pol.route(RoutingInputs(probs, CODES, freq))
    assert [d.decision for d in plain[0][:3]] == [AUTO_ACCEPT] * 3
    for hold in (AUDIT_ALARM, AUDIT_STATUS_UNREADABLE):
        held = pol.route(RoutingInputs(probs, CODES, freq, hold=hold))
        assert [[(d.code, d.probability) for d in r] for r in held] == [[(d.code, d.probability) for d in r]
                                                                         for r in plain]
        for row in held:
            for d in row:
                assert d.decision == HUMAN_REVIEW and hold in d.reasons
                assert d.reasons == [r for r in ALL_REASONS if r in d.reasons]  # listed in table order
        assert held[1][0].reasons == [LOW_CONFIDENCE, hold]
        predicted, accept, counts = pol.route_arrays(RoutingInputs(probs, CODES, freq, hold=hold))
        assert not accept.any() and counts[hold] == int(predicted.sum()) > 0
    with pytest.raises(ValueError, match="not a bundle hold"):
        pol.route(RoutingInputs(probs, CODES, freq, hold="low_confidence"))


def test_certification_never_runs_under_a_hold() -> None:
    pol = policy()
    probs = np.full((1, len(CODES)), 0.9)
    with pytest.raises(ValueError, match="never runs under a bundle hold"):
        pol.certify(RoutingInputs(probs, CODES, {}, hold=AUDIT_ALARM), np.ones_like(probs, dtype=int))


def test_unreadable_status_fails_closed_even_as_root(tmp_path: Path, monkeypatch) -> None:
    """Root reads any file, so the permission failure is raised where the file is read (as the OS
    would for another user), and a status path that is not a file is unreadable too."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    write_status_file(bundle, _status(ACTIVE))
    source = FileStatusSource(bundle, BUNDLE)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    state = source.current()
    assert state.hold == AUDIT_STATUS_UNREADABLE and "Permission denied" in state.problem
    monkeypatch.undo()
    status_path(bundle).unlink()
    status_path(bundle).mkdir()  # a folder where the file should be
    state = source.current()
    assert state.hold == AUDIT_STATUS_UNREADABLE and str(status_path(bundle)) in state.problem


def test_registry_source_fails_closed_until_the_registry_answers(monkeypatch) -> None:
    """The reader plugin (entry point) cannot bind at load (registry down): reads fail closed and
    retry once per TTL; no reader installed at all: always closed."""
    import medcoder.inference.audit_status as mod

    calls = []

    def factory(uri: str, *, bundle_id: str | None = None):
        calls.append(uri)
        if len(calls) < 3:
            raise ConnectionError("registry down")
        return lambda: _status(SUSPENDED)

    class EP:
        name = "models:/"

        def load(self):
            return factory

    monkeypatch.setattr(mod, "entry_points", lambda group: [EP()] if group == mod.READER_GROUP else [])
    source = mod.registry_status_source("models:/m@champion", BUNDLE)
    state = source.current(ttl_s=0)
    assert state.hold == AUDIT_STATUS_UNREADABLE and "ConnectionError: registry down" in state.problem
    assert source.current(ttl_s=0).hold == AUDIT_ALARM and len(calls) == 3  # bound at the third try

    monkeypatch.setattr(mod, "entry_points", lambda group: [])
    state = mod.registry_status_source("models:/m@champion", BUNDLE).current(ttl_s=0)
    assert state.hold == AUDIT_STATUS_UNREADABLE and "no audit status reader" in state.problem
