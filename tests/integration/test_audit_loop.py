"""The whole audit loop, end to end, on the tiny fixture bundle (issue 21's "suspension end to end").

1. ``scripts/review.py action=import bundle=<ref>`` predicts the tiny corpus's test notes through
   ``Coder.load(ref).predict`` and draws every note with an auto-accepted code into the audit sample;
2. an auditor audits them against a planted truth under which the model is bad (every auto-accepted
   code is wrong);
3. the alarm fires (the store's monitor), and ``action=audit_status`` publishes the suspension;
4. the *same* ``Coder`` instance, loaded before any of this, routes every code to review with
   ``audit_alarm`` at its next call;
5. an admin lifts it (``action=lift`` with a reason), and the coder decides as before.

Once for a bundle folder (status file beside it) and once for a ``models:/`` bundle (the tag on
its registered version). The pieces are tested on their own elsewhere
(``test_audit_suspension.py``, ``test_review_audit_web.py``, ``tests/unit/review/test_audit.py``);
this test proves they are wired to each other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from medcoder.inference.audit_status import AUDIT_STATUS_TAG, read_status_file
from medcoder.inference.bundle import BUNDLE_ID_TAG
from medcoder.inference.coder import Coder
from medcoder.review import ReviewStore
from medcoder.routing.reasons import AUDIT_ALARM
from medcoder.workflows.review import review_from_config
from tests.helpers.configs import compose_named

PASSWORD = "correct horse battery staple"
MODEL_NAME = "medcoder-audit-loop-test"


def _decisions(preds: list[Any]) -> list[Any]:
    return [(p.id, [(c.code, round(c.probability, 9), c.decision, c.reasons) for c in p.codes]) for p in preds]


def _run(overrides: list[str], *extra: str) -> str:
    return review_from_config(compose_named("review", [*overrides, *extra])).line


def _audit_until_alarm(db_url: str, bundle_id: str) -> tuple[int, int]:
    """Audit every drawn note, code by code, with the planted truth (each auto-accepted code is
    wrong), until the alarm fires; returns (codes audited, notes in the audit sample)."""
    with ReviewStore.open(db_url) as store:
        store.create_user("audrey", PASSWORD, "auditor")
        store.create_user("adam", PASSWORD, "admin")
        auditor = store.get_user("audrey")
        queue = store.audit_queue(None, bundle_id=bundle_id, limit=500)
        n = 0
        for item in queue:
            for code in store.audit_view(item.note_key, auditor).codes:
                store.audit(item.note_key, auditor, code=code.code, verdict="wrong")
                n += 1
                if store.audit_state(bundle_id).suspended:
                    return n, len(queue)
    raise AssertionError(f"the alarm never fired after {n} wrong verdicts")


def _loop(ref: str, coder: Coder, overrides: list[str], notes_file: str, texts: list[str], ids: list[str]) -> None:
    baseline = _decisions(coder.predict(texts, ids, progress=False))
    assert any(c[2] == "auto_accept" for _, codes in baseline for c in codes), "the tiny bundle must auto-accept"

    line = _run(overrides, "action=import", f"notes={notes_file}", f"bundle={ref}", "audit.rate=1.0")
    assert "imported" in line, line
    db_url = next(o.split("=", 1)[1] for o in overrides if o.startswith("db_url="))
    n_codes, n_notes = _audit_until_alarm(db_url, coder.bundle_id)
    assert n_notes >= 1 and n_codes >= 1

    line = _run(overrides, "action=audit_status", f"bundle_id={coder.bundle_id}")
    assert "suspended (audit_alarm)" in line, line
    held = coder.predict(texts, ids, progress=False)  # the same instance, loaded before the alarm
    codes = [c for p in held for c in p.codes]
    assert codes and all(c.decision == "human_review" and AUDIT_ALARM in c.reasons for c in codes)
    assert [(c.code, round(c.probability, 9)) for p in held for c in p.codes] == \
        [(c[0], c[1]) for _, cs in baseline for c in cs]  # only the decisions change

    line = _run(overrides, "action=lift", f"bundle_id={coder.bundle_id}", "admin=adam",
                "reason=planted bad model replaced in the test")
    assert "active" in line, line
    assert _decisions(coder.predict(texts, ids, progress=False)) == baseline


@pytest.fixture(scope="module")
def test_notes(tiny_bundle: dict) -> tuple[str, list[str], list[str]]:
    path = tiny_bundle["corpus"]["test"]
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return path, [r["text"] for r in rows], [r["id"] for r in rows]


def test_audit_loop_on_a_bundle_folder(tiny_bundle: dict, test_notes: tuple, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle["result"].bundle_dir, folder)  # its status file must not reach other tests
    coder = Coder.load(folder)
    overrides = [f"paths.root_dir={tmp_path}", f"db_url=sqlite:///{tmp_path / 'review.db'}",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    _loop(str(folder), coder, overrides, *test_notes)
    status = read_status_file(folder, coder.bundle_id)
    assert status is not None and status.state == "active" and status.by == "adam"


def test_audit_loop_on_a_models_uri(tiny_bundle: dict, test_notes: tuple, tmp_path: Path) -> None:
    tracking_uri = tiny_bundle["tracking_uri"]
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    result = tiny_bundle["result"]
    mv = mlflow.register_model(result.model_uri, MODEL_NAME)
    client.set_model_version_tag(MODEL_NAME, mv.version, BUNDLE_ID_TAG, result.manifest.bundle_id)
    try:
        ref = f"models:/{MODEL_NAME}/{mv.version}"
        coder = Coder.load(ref, audit_status_ttl_s=0)
        overrides = [f"paths.root_dir={tmp_path}", f"db_url=sqlite:///{tmp_path / 'review.db'}",
                     f"tracking.uri={tracking_uri}"]
        _loop(ref, coder, overrides, *test_notes)
        mlflow.set_tracking_uri(tracking_uri)
        tag = json.loads(client.get_model_version(MODEL_NAME, mv.version).tags[AUDIT_STATUS_TAG])
        assert tag["state"] == "active" and tag["by"] == "adam" and tag["bundle_id"] == coder.bundle_id
    finally:
        mlflow.set_tracking_uri(tracking_uri)
        client.delete_registered_model(MODEL_NAME)
