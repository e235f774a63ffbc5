"""A bundle's audit suspension seen by every serving path, on the tiny bundle: a bundle folder (status
file), a ``models:/`` bundle (registry tag), batch prediction and the MLflow model loaded from its
artifacts. Suspended -> every code ``audit_alarm``; lifted -> the same decisions as before; corrupt
-> fail closed with ``audit_status_unreadable`` and one warning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from medcoder.inference.audit_status import (
    ACTIVE,
    AUDIT_STATUS_TAG,
    SUSPENDED,
    AuditStatus,
    status_path,
)
from medcoder.inference.batch import predict_file
from medcoder.inference.bundle import BUNDLE_ID_TAG
from medcoder.inference.coder import Coder
from medcoder.routing.reasons import AUDIT_ALARM, AUDIT_STATUS_UNREADABLE
from medcoder.tracking.audit_status import publish_status, read_status

AUDIT_MODEL = "medcoder-audit-suspension-test"


def _notes(path: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["id"] for r in rows]


def _decisions(preds) -> list:
    """What routing decided, without the timestamp."""
    return [(p.id, p.document_decision, p.document_reasons,
             [(c.code, round(c.probability, 9), c.decision, c.reasons) for c in p.codes]) for p in preds]


def _status(bundle_id: str, state: str) -> AuditStatus:
    suspended = state == SUSPENDED
    return AuditStatus(bundle_id=bundle_id, state=state, reason=AUDIT_ALARM if suspended else None,
                       since="2026-12-03T10:00:00+00:00", by="monitor" if suspended else "admin",
                       detail="audited precision below target" if suspended else "lifted after review",
                       target=0.6, delta=0.1, n_audited=30, n_correct=12)


def _assert_held(preds, reason: str, baseline) -> None:
    assert sum(len(p.codes) for p in preds) > 0
    for p, (_, _, _, codes) in zip(preds, baseline, strict=True):
        assert [(c.code, round(c.probability, 9)) for c in p.codes] == [(c[0], c[1]) for c in codes]
        for c in p.codes:
            assert c.decision == "human_review" and reason in c.reasons, (p.id, [(x.code, x.decision, x.reasons) for x in p.codes])
        if p.codes:
            assert p.document_decision == "human_review" and reason in p.document_reasons


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "audit status" in r.getMessage()]


@pytest.fixture(scope="module")
def notes(tiny_bundle) -> tuple[list[str], list[str]]:
    return _notes(tiny_bundle["corpus"]["test"])


@pytest.fixture(scope="module")
def folder(tiny_bundle, tmp_path_factory) -> Path:
    """A copy of the tiny bundle: its status file must not reach other tests' bundle."""
    dst = tmp_path_factory.mktemp("audit") / "bundle"
    shutil.copytree(tiny_bundle["result"].bundle_dir, dst)
    return dst


@pytest.fixture(scope="module")
def folder_coder(folder) -> Coder:
    return Coder.load(folder)


@pytest.fixture(scope="module")
def baseline(folder_coder, notes) -> list:
    status_path(folder_coder.bundle_dir).unlink(missing_ok=True)
    preds = folder_coder.predict(*notes, progress=False)
    assert any(c.decision == "auto_accept" for p in preds for c in p.codes), "the tiny bundle must auto-accept"
    return _decisions(preds)


def test_folder_suspension_is_seen_by_the_next_call_and_a_lift_restores_it(folder, folder_coder, notes,
                                                                          baseline) -> None:
    bundle_id = folder_coder.bundle_id
    where = publish_status(folder, _status(bundle_id, SUSPENDED))
    assert where == str(status_path(folder)) and read_status(folder).suspended
    _assert_held(folder_coder.predict(*notes, progress=False), AUDIT_ALARM, baseline)
    assert folder_coder.audit_state().label == SUSPENDED

    publish_status(folder, _status(bundle_id, ACTIVE))  # an admin lifts it
    assert _decisions(folder_coder.predict(*notes, progress=False)) == baseline
    status_path(folder).unlink()
    assert _decisions(folder_coder.predict(*notes, progress=False)) == baseline


def test_folder_corrupt_status_fails_closed_with_one_warning(folder, folder_coder, notes, baseline, caplog) -> None:
    status_path(folder).write_text('{"bundle_id": "x", "state": ')
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                _assert_held(folder_coder.predict(*notes, progress=False), AUDIT_STATUS_UNREADABLE, baseline)
        warned = _warnings(caplog)
        assert len(warned) == 1 and str(status_path(folder)) in warned[0]
        assert not any(t[:40] in m for t in notes[0] for m in warned)  # no note text in the log
    finally:
        status_path(folder).unlink()
    assert _decisions(folder_coder.predict(*notes, progress=False)) == baseline


def test_batch_prediction_sees_a_suspension(folder, folder_coder, tiny_bundle, baseline, tmp_path) -> None:
    publish_status(folder, _status(folder_coder.bundle_id, SUSPENDED))
    try:
        out = tmp_path / "pred.jsonl"
        summary = predict_file(folder_coder, tiny_bundle["corpus"]["test"], out, block_size=2)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        codes = [c for r in rows for c in r["codes"]]
        assert codes and all(c["decision"] == "human_review" and AUDIT_ALARM in c["reasons"] for c in codes)
        assert summary.auto_accepted == 0
    finally:
        status_path(folder).unlink()


@pytest.fixture(scope="module")
def registered(tiny_bundle):
    """The tiny bundle registered again under a name of its own (its tags are this module's), at
    alias ``champion``; deleted at the end so no status reaches other tests' served models."""
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    client = MlflowClient()
    result = tiny_bundle["result"]
    mv = mlflow.register_model(result.model_uri, AUDIT_MODEL)
    client.set_model_version_tag(AUDIT_MODEL, mv.version, BUNDLE_ID_TAG, result.manifest.bundle_id)
    client.set_registered_model_alias(AUDIT_MODEL, "champion", mv.version)
    yield {"version": str(mv.version), "bundle_id": result.manifest.bundle_id}
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    client.delete_registered_model(AUDIT_MODEL)


def test_models_uri_suspension_through_the_registry_tag(registered, tiny_bundle, notes, baseline, caplog) -> None:
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    uri = f"models:/{AUDIT_MODEL}@champion"
    coder = Coder.load(uri, audit_status_ttl_s=0)
    assert coder.audit_state().label == "none"
    assert _decisions(coder.predict(*notes, progress=False)) == baseline
    client, version = MlflowClient(), registered["version"]
    try:
        where = publish_status(uri, _status(registered["bundle_id"], SUSPENDED))
        assert where == f"models:/{AUDIT_MODEL}/{version} tag {AUDIT_STATUS_TAG}" and read_status(uri).suspended
        _assert_held(coder.predict(*notes, progress=False), AUDIT_ALARM, baseline)

        publish_status(uri, _status(registered["bundle_id"], ACTIVE))  # lifted
        assert _decisions(coder.predict(*notes, progress=False)) == baseline
        coder.audit_status_ttl_s = 3600  # the last read (active) is now trusted for an hour
        publish_status(uri, _status(registered["bundle_id"], SUSPENDED))
        assert _decisions(coder.predict(*notes, progress=False)) == baseline  # within the TTL: cached
        coder.audit_status_ttl_s = 0
        _assert_held(coder.predict(*notes, progress=False), AUDIT_ALARM, baseline)

        client.set_model_version_tag(AUDIT_MODEL, version, AUDIT_STATUS_TAG, "{corrupt")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                _assert_held(coder.predict(*notes, progress=False), AUDIT_STATUS_UNREADABLE, baseline)
        warned = _warnings(caplog)
        assert len(warned) == 1 and f"models:/{AUDIT_MODEL}/{version}" in warned[0]
    finally:
        client.delete_model_version_tag(AUDIT_MODEL, version, AUDIT_STATUS_TAG)
    assert _decisions(coder.predict(*notes, progress=False)) == baseline


def test_served_model_reads_the_tag_of_its_registered_version(registered, tiny_bundle, notes, monkeypatch) -> None:
    """``mlflow.pyfunc.load_model`` (what ``mlflow models serve`` and Spark's UDF run) loads the bundle
    from the model's artifacts, with no status file beside it: it obeys its version's tag."""
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    monkeypatch.setenv("MEDCODER_AUDIT_STATUS_TTL_S", "0")
    version = registered["version"]
    uri = f"models:/{AUDIT_MODEL}/{version}"
    client = MlflowClient()
    frame = {"id": notes[1], "text": notes[0]}
    import pandas as pd

    for config in ({"audit_status_uri": uri}, None):  # named explicitly, or found by its bundle_id tag
        model = mlflow.pyfunc.load_model(uri, model_config=config)
        try:
            publish_status(uri, _status(registered["bundle_id"], SUSPENDED))
            out = model.predict(pd.DataFrame(frame))
            codes = [c for row in out["codes"] for c in row]
            assert codes and all(AUDIT_ALARM in c["reasons"] and c["decision"] == "human_review" for c in codes)
        finally:
            client.delete_model_version_tag(AUDIT_MODEL, version, AUDIT_STATUS_TAG)
        out = model.predict(pd.DataFrame(frame))
        assert not any(AUDIT_ALARM in c["reasons"] for row in out["codes"] for c in row)


@pytest.fixture(scope="module")
def model_dir(tiny_bundle, tmp_path_factory) -> Path:
    """The registered tiny MLflow model, downloaded: loadable with no registry at hand."""
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    dst = tmp_path_factory.mktemp("served_model")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=tiny_bundle["result"].model_uri, dst_path=str(dst)))


def _served_codes(model_dir: Path, notes) -> list[dict]:
    import pandas as pd

    out = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame({"id": notes[1], "text": notes[0]}))
    return [c for row in out["codes"] for c in row]


@pytest.mark.parametrize("store", ["no tracking URI", "a registry without this bundle"])
def test_served_model_without_a_readable_status_fails_closed(store, model_dir, tiny_bundle, notes, tmp_path,
                                                            monkeypatch, caplog) -> None:
    """Issue 21 review: a served model used to read *active* when no tracking URI was set, or when
    no registered version carried its bundle id. Both fail closed now, with one warning; only
    ``MEDCODER_AUDIT_STATUS_URI=none`` serves without a status."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MEDCODER_AUDIT_STATUS_URI"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(None if store == "no tracking URI" else f"sqlite:///{tmp_path / 'other.db'}")
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            codes = _served_codes(model_dir, notes)
        assert codes and all(c["decision"] == "human_review" and AUDIT_STATUS_UNREADABLE in c["reasons"]
                             for c in codes), [(c["code"], c["decision"], c["reasons"]) for c in codes]
        warned = _warnings(caplog)
        assert len(warned) == 1 and "audit status unreadable" in warned[0], warned
        monkeypatch.setenv("MEDCODER_AUDIT_STATUS_URI", "none")  # the one, explicit, opt-out
        codes = _served_codes(model_dir, notes)
        assert any(c["decision"] == "auto_accept" for c in codes)
        assert not any(AUDIT_STATUS_UNREADABLE in c["reasons"] for c in codes)
    finally:
        mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
