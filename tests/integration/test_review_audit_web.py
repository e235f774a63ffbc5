"""The audit loop in the workbench (FastAPI TestClient, a real SQLite store, a real verified bundle
folder without a model: manifest, calibration.json with its targets, labels.json with training
frequencies).

What is proven here: ``action=import`` with ``audit_bundle=`` draws the seeded audit sample,
records the bundle's certified target/δ and training frequencies and publishes an active status
beside the bundle; an auditor audits blind (the page carries no probability, decision, reason or
evidence) and a reviewer is refused every audit page; store refusals (a routed code, a second
verdict) are clear messages; planted wrong verdicts make the web hook publish a *suspended*
status file, and ``action=audit_status`` recomputes the same status from the events after it is
lost (the restart recovery); an admin's lift needs a reason and republishes *active*; the report
page renders with its plot, acceptance rates and Cohen's κ of double-reviewed notes; and
``action=report`` logs the metrics and the plot to a temporary SQLite MLflow against a registered
model version.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from omegaconf import open_dict

from medcoder.data.labels import LabelSpace
from medcoder.errors import ConfigError
from medcoder.inference.audit_status import read_status_file, status_path
from medcoder.inference.bundle import BUNDLE_SCHEMA_VERSION, bundle_id_from_hashes, sha256_file
from medcoder.review import ReviewError, ReviewStore
from medcoder.web import WebSettings, create_app
from medcoder.workflows.review import AuditPublisher, audit_settings_from_config, review_from_config
from tests.helpers.configs import compose_named

from .test_review_web import PASSWORD, SECRET, _code, _filler, _span, login, prediction

TARGET, DELTA = 0.9, 0.1
N_NOTES = 12
AUTO = [("E11.9", "Type 2 diabetes mellitus without complications"), ("I10", "Essential (primary) hypertension")]
FREQUENCY = {"E11.9": 120, "I10": 35, "R10.9": 4, "R50.9": 0}


def make_bundle(root: Path) -> tuple[Path, str]:
    """A bundle folder that verifies (every file under the manifest's sha256) but holds no model:
    enough for the audit loop, which reads only its targets, frequencies and id."""
    folder = root / "bundle"
    folder.mkdir(parents=True)
    (folder / "calibration.json").write_text(json.dumps(
        {"targets": {"target_precision": TARGET, "delta": DELTA, "min_coverage": 0.0}}), encoding="utf-8")
    LabelSpace(codes=list(FREQUENCY), frequency=dict(FREQUENCY), descriptions={}, codeset_fy=2026).to_json(
        folder / "labels.json")
    files = {name: sha256_file(folder / name) for name in ("calibration.json", "labels.json")}
    bundle_id = bundle_id_from_hashes(files)
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": BUNDLE_SCHEMA_VERSION, "medcoder_version": "test", "bundle_id": bundle_id,
        "created": "2026-12-01T00:00:00+00:00", "source_run_id": None, "files": files}), encoding="utf-8")
    return folder, bundle_id


def codes_for(text: str) -> list[dict[str, Any]]:
    """Two routed codes (with reasons and probabilities the audit page must not show) and two
    auto-accepted ones."""
    return [
        _code("R10.9", "Unspecified abdominal pain", 0.48, "human_review", ["low_confidence"],
              [_span(text, "dolor abdominal", "neural", 0.6)], ["neural"]),
        _code("R50.9", "Fever, unspecified", 0.31, "human_review", ["low_confidence", "rare_code"],
              [_span(text, "Afebril", "dictionary", 0.2, negated=True)], []),
        _code("E11.9", AUTO[0][1], 0.973, "auto_accept", [], [_span(text, "hipertensión", "dictionary", 0.9)],
              ["dictionary"]),
        _code("I10", AUTO[1][1], 0.961, "auto_accept", [], [_span(text, "hipertensión arterial", "neural", 0.9)],
              ["neural"]),
    ]


def write_predictions(root: Path, bundle_id: str) -> tuple[Path, Path]:
    notes = root / "notes"
    notes.mkdir(parents=True)
    lines = []
    for i in range(N_NOTES):
        text = _filler(i)
        (notes / f"n{i}.txt").write_text(text, encoding="utf-8")
        lines.append(json.dumps(prediction(f"n{i}", text, codes_for(text), bundle=bundle_id), ensure_ascii=False))
    path = root / "predictions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, notes


def base_overrides(root: Path) -> list[str]:
    return [f"paths.root_dir={root}", f"db_url=sqlite:///{root / 'review.db'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("audit_web")
    bundle_dir, bundle_id = make_bundle(root)
    predictions, notes = write_predictions(root, bundle_id)
    overrides = base_overrides(root)
    cfg = compose_named("review", [*overrides, "action=import", f"predictions={predictions}", f"notes={notes}",
                                   f"audit_bundle={bundle_dir}", "audit.rate=0.5", "audit.seed=7",
                                   "audit.double_review_rate=0.25"])
    line = review_from_config(cfg).line
    store = ReviewStore.open(f"sqlite:///{root / 'review.db'}")
    for name, role in (("alice", "reviewer"), ("bob", "reviewer"), ("audrey", "auditor"), ("adam", "admin")):
        store.create_user(name, PASSWORD, role)
    audit = audit_settings_from_config(cfg)
    app = create_app(store, WebSettings(secret_key=SECRET), on_audit=AuditPublisher(store, audit).hook)
    yield {"root": root, "bundle_dir": bundle_dir, "bundle_id": bundle_id, "store": store, "app": app,
           "import_line": line, "overrides": overrides, "predictions": predictions, "notes": notes}
    store.close()


def client_for(env: dict[str, Any], username: str) -> tuple[TestClient, str]:
    client = TestClient(env["app"])
    return client, login(client, username)


def audit_keys(env: dict[str, Any]) -> list[str]:
    return [i.note_key for i in env["store"].audit_queue(None, limit=500)]


def verdict(client: TestClient, csrf: str, key: str, code: str, value: str, **extra: str) -> Any:
    return client.post(f"/audit/{key}/verdict", data={"csrf_token": csrf, "code": code, "verdict": value, **extra},
                       follow_redirects=False)


def test_import_draws_the_audit_sample_and_records_the_bundle(env: dict[str, Any]) -> None:
    store, bundle_id = env["store"], env["bundle_id"]
    # 12 notes, each with auto-accepted codes: half drawn; a quarter of those with routed codes twice
    assert "imported 12 notes" in env["import_line"] and "6 drawn for audit" in env["import_line"], env["import_line"]
    assert "3 for a second review" in env["import_line"]
    assert len(audit_keys(env)) == 6
    state = store.audit_state(bundle_id)
    assert (state.target, state.delta) == (TARGET, DELTA)  # from the bundle's calibration.json
    assert not state.suspended and state.report.n_audited == 0
    status = read_status_file(env["bundle_dir"], bundle_id)  # published at import, beside the folder
    assert status is not None and status.state == "active" and status.target == TARGET
    # the bundle folder itself is untouched: it still verifies
    from medcoder.inference.bundle import verify_bundle

    assert verify_bundle(env["bundle_dir"]).bundle_id == bundle_id
    # the draw is seeded: the same file and seed into a fresh store draw the same notes
    again = env["root"] / "again"
    cfg = compose_named("review", [f"paths.root_dir={again}", f"db_url=sqlite:///{again / 'r.db'}", "action=import",
                                   f"predictions={env['predictions']}", f"notes={env['notes']}", "audit.rate=0.5",
                                   "audit.seed=7"])
    review_from_config(cfg)
    with ReviewStore.open(f"sqlite:///{again / 'r.db'}") as other:
        assert sorted(i.note_id for i in other.audit_queue(None, limit=500)) == sorted(
            i.note_id for i in store.audit_queue(None, limit=500))


def test_reviewer_is_refused_every_audit_page(env: dict[str, Any]) -> None:
    alice, csrf = client_for(env, "alice")
    key = audit_keys(env)[0]
    queue = alice.get("/queue")
    assert 'href="/audit"' not in queue.text and 'href="/reports"' not in queue.text
    for path in ("/audit", f"/audit/{key}", "/reports", f"/admin/audit/{env['bundle_id']}/lift"):
        r = alice.get(path)
        assert r.status_code == 403, (path, r.status_code)
        assert "dolor abdominal" not in r.text
    r = verdict(alice, csrf, key, "E11.9", "correct")
    assert r.status_code == 403
    assert env["store"].audit_stream(env["bundle_id"]) == []
    auditor, _ = client_for(env, "audrey")
    assert auditor.post(f"/admin/audit/{env['bundle_id']}/lift",
                        data={"csrf_token": _, "reason": "x"}).status_code == 403  # only an admin lifts
    assert 'href="/audit"' in auditor.get("/queue").text


def test_auditor_audits_blind(env: dict[str, Any]) -> None:
    store = env["store"]
    audrey, csrf = client_for(env, "audrey")
    queue = audrey.get("/audit")
    assert queue.status_code == 200
    keys = audit_keys(env)
    note_id = store.audit_view(keys[0], store.get_user("audrey")).note_id
    assert f">{note_id}<" in queue.text
    page = audrey.get(f"/audit/{keys[0]}")
    assert page.status_code == 200
    html = page.text
    assert "Afebril" in html  # the note's text
    for code, description in AUTO:
        assert code in html and description in html
    # blind: nothing of the model's probability, decision, reasons, evidence or routed codes
    for leak in ("97 %", "96 %", "0.97", "0.96", "auto_accept", "auto-accept", "probability", "low confidence",
                 "low_confidence", "rare code", "<mark", "R10.9", "R50.9", "dictionary", "neural"):
        assert leak not in html, leak
    r = verdict(audrey, csrf, keys[0], "E11.9", "correct")
    assert r.status_code == 303 and r.headers["location"].startswith("/audit/")
    after = audrey.get(r.headers["location"]).text
    assert "Verdict recorded." in after and "correct" in after
    assert [(p.code, p.correct) for p in store.audit_stream(env["bundle_id"])] == [("E11.9", True)]


def test_the_review_page_does_not_unblind_a_pending_audit(env: dict[str, Any]) -> None:
    """The review page and the API show probabilities and decisions: an auditor with verdicts still
    to give on the note is sent to the blind page instead, and the API refuses."""
    store = env["store"]
    audrey, _ = client_for(env, "audrey")
    pending = [i.note_key for i in store.audit_queue(store.get_user("audrey"), limit=500)]
    key = pending[-1]
    r = audrey.get(f"/notes/{key}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/audit/{key}"
    r = audrey.get(f"/api/notes/{key}")
    assert r.status_code == 403 and r.json()["error"] == "audit_blind"
    assert "0.97" not in r.text
    # an admin may audit too (AUDITORS): blinded the same way (issue 21 review: only role auditor was)
    adam_user = store.get_user("adam")
    adam_pending = [i.note_key for i in store.audit_queue(adam_user, limit=500)]
    assert key in adam_pending
    adam, _ = client_for(env, "adam")
    r = adam.get(f"/notes/{key}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/audit/{key}"
    r = adam.get(f"/api/notes/{key}")
    assert r.status_code == 403 and r.json()["error"] == "audit_blind"
    # a reviewer (who may not audit) still reads it as before
    alice, _ = client_for(env, "alice")
    assert alice.get(f"/api/notes/{key}").status_code == 200


def test_the_queue_hides_notes_awaiting_audit_from_those_who_may_audit(env: dict[str, Any]) -> None:
    """The queue's rows (reasons, progress) and filters would un-blind the audit sample: the web
    passes who asks (``store.queue(..., user=)``), so an auditor's or admin's queue, page and API,
    leaves out the notes still waiting for their verdicts; a reviewer sees the whole queue."""
    store = env["store"]
    for name in ("audrey", "adam"):
        pending = {i.note_key for i in store.audit_queue(store.get_user(name), limit=500)}
        assert pending
        client, _ = client_for(env, name)
        shown = {i["note_key"] for i in client.get("/api/queue", params={"limit": 500}).json()["items"]}
        assert shown and not shown & pending, (name, shown & pending)
        html = client.get("/queue").text
        assert not any(f"/notes/{quote(k, safe='')}" in html for k in pending), name
    alice, _ = client_for(env, "alice")
    pending = {i.note_key for i in store.audit_queue(store.get_user("audrey"), limit=500)}
    shown = {i["note_key"] for i in alice.get("/api/queue", params={"limit": 500}).json()["items"]}
    assert pending <= shown


def test_store_refusals_are_clear_messages(env: dict[str, Any]) -> None:
    audrey, csrf = client_for(env, "audrey")
    key = audit_keys(env)[0]
    n_before = len(env["store"].audit_stream(env["bundle_id"]))
    r = verdict(audrey, csrf, key, "R10.9", "wrong")  # a routed code, not auto-accepted
    assert r.status_code == 400 and "not auto-accepted" in r.text
    first = verdict(audrey, csrf, key, "I10", "correct")
    assert first.status_code in (303, 200)
    again = verdict(audrey, csrf, key, "I10", "wrong")  # one verdict per code
    assert again.status_code == 409 and "already has an audit verdict" in again.text
    r = verdict(audrey, csrf, key, "I10", "maybe")
    assert r.status_code == 400 and "correct or wrong" in r.text
    assert len(env["store"].audit_stream(env["bundle_id"])) == n_before + 1


def test_an_auditor_who_reviewed_the_note_is_refused(env: dict[str, Any]) -> None:
    store = env["store"]
    adam = store.get_user("adam")
    key = audit_keys(env)[-1]
    view = store.note(key)
    lease = store.claim(key, adam, lease_seconds=600)
    store.decide(key, adam, action="accept", code="R10.9", lease_token=lease.token, expected_version=view.version)
    client, csrf = client_for(env, "adam")
    assert f"/audit/{key}" not in client.get("/audit").text  # not offered to the person who reviewed it
    r = verdict(client, csrf, key, "E11.9", "correct")
    assert r.status_code in (400, 403) and "auditor must be another person" in r.text


def _wrong_until_suspended(env: dict[str, Any], *, publish_fails: bool = False) -> int:
    """Audrey scores auto-accepted codes wrong (a planted bad model) until the alarm fires
    (``publish_fails``: each verdict is recorded and the page says its status was not published)."""
    store, bundle_id = env["store"], env["bundle_id"]
    audrey, csrf = client_for(env, "audrey")
    n = 0
    for item in store.audit_queue(store.get_user("audrey"), limit=500):
        view = store.audit_view(item.note_key, store.get_user("audrey"))
        done = {v.code for v in view.verdicts}
        for c in view.codes:
            if c.code in done:
                continue
            r = verdict(audrey, csrf, item.note_key, c.code, "wrong", replaced_by="E11.65", comment="")
            if publish_fails:
                assert r.status_code == 200 and "could not be published" in r.text, r.text[:300]
            else:
                assert r.status_code == 303, r.text[:300]
            n += 1
            if store.audit_state(bundle_id).suspended:
                return n
    raise AssertionError("the alarm never fired")


def test_planted_wrong_verdicts_suspend_and_the_status_is_recomputed(env: dict[str, Any]) -> None:
    bundle_dir, bundle_id = env["bundle_dir"], env["bundle_id"]
    _wrong_until_suspended(env)
    status = read_status_file(bundle_dir, bundle_id)  # published by the web hook after the verdict
    assert status is not None and status.suspended and status.reason == "audit_alarm" and status.by == "monitor"
    assert status.cs_high is not None and status.cs_high < TARGET
    # a crash lost the status: action=audit_status recomputes it from the events
    status_path(bundle_dir).unlink()
    line = review_from_config(compose_named("review", [*env["overrides"], "action=audit_status"])).line
    assert f"bundle {bundle_id}: suspended (audit_alarm)" in line and str(status_path(bundle_dir)) in line, line
    again = read_status_file(bundle_dir, bundle_id)
    assert again is not None and again.suspended
    assert (again.n_audited, again.n_correct) == (status.n_audited, status.n_correct)
    # the reports page says so, with the admin's way out
    adam, _ = client_for(env, "adam")
    page = adam.get("/reports").text
    assert "suspended" in page and f"/admin/audit/{bundle_id}/lift" in page


def test_lift_needs_a_reason_and_republishes_active(env: dict[str, Any]) -> None:
    bundle_dir, bundle_id = env["bundle_dir"], env["bundle_id"]
    if not env["store"].audit_state(bundle_id).suspended:
        _wrong_until_suspended(env)
    adam, csrf = client_for(env, "adam")
    form = adam.get(f"/admin/audit/{bundle_id}/lift")
    assert form.status_code == 200 and 'name="reason"' in form.text and "suspended" in form.text
    r = adam.post(f"/admin/audit/{bundle_id}/lift", data={"csrf_token": csrf, "reason": "   "}, follow_redirects=False)
    assert r.status_code == 400 and "reason is empty" in r.text
    assert read_status_file(bundle_dir, bundle_id).suspended
    r = adam.post(f"/admin/audit/{bundle_id}/lift", data={"csrf_token": csrf, "reason": "wrong note source, fixed"},
                  follow_redirects=False)
    assert r.status_code == 303 and "msg=lifted" in r.headers["location"]
    status = read_status_file(bundle_dir, bundle_id)
    assert status is not None and status.state == "active" and status.by == "adam"
    assert "wrong note source, fixed" in status.detail
    page = adam.get(r.headers["location"]).text
    assert "Last lift: by adam" in page and "wrong note source, fixed" in page
    assert adam.post("/admin/audit/no-such-bundle/lift", data={"csrf_token": csrf, "reason": "x"}).status_code == 404


def test_lift_action_refuses_without_reason_or_admin(tmp_path: Path) -> None:
    env = fresh_env(tmp_path)  # a store of its own: a lift needs a suspension to lift
    try:
        _wrong_until_suspended(env)
        base = [*env["overrides"], "action=lift", f"bundle_id={env['bundle_id']}"]
        with pytest.raises(ConfigError, match="reason"):
            review_from_config(compose_named("review", [*base, "admin=adam"]))
        with pytest.raises(ConfigError, match="not an admin"):
            review_from_config(compose_named("review", [*base, "admin=audrey", "reason=because"]))
        line = review_from_config(compose_named("review", [*base, "admin=adam", "reason='checked again'"])).line
        assert line.startswith("lifted by adam") and "active" in line
    finally:
        env["store"].close()


def _submit(store: ReviewStore, key: str, username: str, decisions: dict[str, tuple[str, str | None]]) -> None:
    user = store.get_user(username)
    lease = store.claim(key, user, lease_seconds=600)
    for code, (action, new) in decisions.items():
        store.decide(key, user, action=action, code=code, new_code=new, lease_token=lease.token,
                     expected_version=store.note(key).version)
    store.submit(key, user, lease_token=lease.token, expected_version=store.note(key).version)


def ensure_double_reviews(env: dict[str, Any]) -> None:
    """Alice reviews the notes drawn for a second review, Bob their twins (idempotent: tests may
    run alone)."""
    store, bundle_id = env["store"], env["bundle_id"]
    items = store.queue(bundle_id=bundle_id, limit=500).items
    twins = [i for i in items if i.note_id.endswith("#2")]
    assert twins, "the import drew notes for a second review"
    firsts = {i.note_id: i for i in items if not i.note_id.endswith("#2")}
    plan = [({"R10.9": ("accept", None), "R50.9": ("reject", None)},
             {"R10.9": ("accept", None), "R50.9": ("reject", None)}),
            ({"R10.9": ("replace", "R10.84"), "R50.9": ("reject", None)},
             {"R10.9": ("accept", None), "R50.9": ("reject", None)}),
            ({"R10.9": ("accept", None), "R50.9": ("accept", None)},
             {"R10.9": ("accept", None), "R50.9": ("reject", None)})]
    for twin, (first, second) in zip(twins, plan, strict=False):
        first_item = firsts[twin.note_id[:-2]]
        if store.note(first_item.note_key).status != "submitted":
            _submit(store, first_item.note_key, "alice", first)
        if store.note(twin.note_key).status != "submitted":
            _submit(store, twin.note_key, "bob", second)


def test_reports_page_renders_plot_rates_and_kappa(env: dict[str, Any]) -> None:
    store, bundle_id = env["store"], env["bundle_id"]
    ensure_double_reviews(env)
    audrey_user = store.get_user("audrey")
    pending = store.audit_queue(audrey_user, limit=500)
    if pending:  # one wrong verdict since any lift, for the "scored wrong" table
        view = store.audit_view(pending[0].note_key, audrey_user)
        code = next(c.code for c in view.codes if c.code not in {v.code for v in view.verdicts})
        store.audit(pending[0].note_key, audrey_user, code=code, verdict="wrong")
    audrey, _ = client_for(env, "audrey")
    page = audrey.get(f"/reports?bundle={bundle_id}")
    assert page.status_code == 200
    html = page.text
    match = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert match, "no plot"
    assert base64.b64decode(match.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "low confidence" in html and "rare code" in html  # acceptance by reason
    assert ">1-9<" in html and ">0<" in html  # by training-frequency bin (R10.9: 4, R50.9: 0)
    assert "R10.84 (1)" in html  # codes replaced, and by what
    wrong_rows = html[html.index("scored wrong"):html.index("by reason")]
    stream = env["store"].audit_stream(bundle_id)
    for p in stream:
        if not p.correct:
            assert f"<td>{p.code}</td>" in wrong_rows
    if all(p.correct for p in stream):
        assert "None since the last lift" in wrong_rows
    assert "Cohen" in html and "bootstrap interval over notes" in html
    assert "hipertensión" not in html and "Afebril" not in html  # no note text on the report


def test_report_action_logs_metrics_to_mlflow(env: dict[str, Any]) -> None:
    import mlflow
    from mlflow import MlflowClient

    root, bundle_id = env["root"], env["bundle_id"]
    ensure_double_reviews(env)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")  # the config's tracking.uri
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    client.create_registered_model("audit-test-model")
    # registered as scripts/export.py's log_model does in MLflow 3: the version's source is a logged model
    logged = client.create_logged_model(client.create_experiment("export"), name="bundle")
    version = client.create_model_version("audit-test-model", source=f"models:/{logged.model_id}",
                                          tags={"medcoder.bundle_id": bundle_id}, model_id=logged.model_id)
    elsewhere = f"sqlite:///{root / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)  # the workflow must point MLflow at tracking.uri by itself
    cfg = compose_named("review", [*env["overrides"], "action=report", f"bundle_id={bundle_id}",
                                   f"report.registered_model=models:/audit-test-model/{version.version}",
                                   "report.n_boot=200"])
    line = review_from_config(cfg).line
    assert f"registered model audit-test-model version {version.version}" in line, line
    run_id = re.search(r"logged to run (\w+)", line).group(1)
    run = client.get_run(run_id)
    assert run.data.tags["medcoder.registered_model"] == "audit-test-model"
    assert run.data.tags["medcoder.model_version"] == str(version.version)
    metrics = run.data.metrics
    for key in ("audit_n", "audit_cs_low", "audit_cs_high", "review_accept_rate_low_confidence",
                "review_accept_rate_freq_1_9", "review_kappa"):
        assert key in metrics, (key, sorted(metrics))
    state = env["store"].audit_state(bundle_id)
    assert metrics["audit_n"] == state.report.n_audited
    linked = {m.key for m in client.get_logged_model(logged.model_id).metrics}  # shown on the model version too
    assert {"audit_n", "audit_cs_high", "review_kappa"} <= linked, linked
    assert [a.path for a in client.list_artifacts(run_id)] == ["audit_precision.png"]
    text = json.dumps({"params": run.data.params, "tags": run.data.tags})
    assert "Afebril" not in text and "hipertensión" not in text
    # the status can also travel as the registry tag of that version
    mlflow.set_tracking_uri(elsewhere)
    cfg = compose_named("review", [*env["overrides"], "action=audit_status", f"bundle_id={bundle_id}"])
    with open_dict(cfg):
        cfg.audit.publish[bundle_id] = f"models:/audit-test-model/{version.version}"
    line = review_from_config(cfg).line
    assert "models:/audit-test-model/" in line, line
    tag = client.get_model_version("audit-test-model", str(version.version)).tags["medcoder.audit_status"]
    assert json.loads(tag)["bundle_id"] == bundle_id


def test_audit_config_range_checks(tmp_path: Path) -> None:
    base = [f"paths.root_dir={tmp_path}", f"db_url=sqlite:///{tmp_path / 'r.db'}", "action=audit_status"]
    for override, key in (("audit.rate=1.5", "audit.rate"), ("audit.seed=-1", "audit.seed"),
                          ("audit.n_opt=0", "audit.n_opt"), ("audit.evidence.per_accepted=0",
                                                             "audit.evidence.per_accepted"),
                          ("+audit.rat=0.1", "audit.rat"), ("audit.double_review_rate=-0.1",
                                                            "audit.double_review_rate")):
        with pytest.raises(ConfigError) as exc:
            review_from_config(compose_named("review", [*base, override]))
        assert key in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


# -- issue 21 review: restart recovery, tolerant publishing, pinned publish refs -------------------
def fresh_env(root: Path, on_audit: Any = None) -> dict[str, Any]:
    """A store of its own (one bundle imported with audit_bundle=, four users) and an app whose
    audit hook is ``on_audit`` (default: the real publisher's)."""
    bundle_dir, bundle_id = make_bundle(root)
    predictions, notes = write_predictions(root, bundle_id)
    overrides = base_overrides(root)
    cfg = compose_named("review", [*overrides, "action=import", f"predictions={predictions}", f"notes={notes}",
                                   f"audit_bundle={bundle_dir}", "audit.rate=0.5", "audit.seed=7"])
    review_from_config(cfg)
    store = ReviewStore.open(f"sqlite:///{root / 'review.db'}")
    for name, role in (("alice", "reviewer"), ("audrey", "auditor"), ("adam", "admin")):
        store.create_user(name, PASSWORD, role)
    hook = on_audit or AuditPublisher(store, audit_settings_from_config(cfg)).hook
    return {"root": root, "bundle_dir": bundle_dir, "bundle_id": bundle_id, "store": store,
            "app": create_app(store, WebSettings(secret_key=SECRET), on_audit=hook), "overrides": overrides}


def test_a_restart_of_the_workbench_republishes_a_lost_suspension(tmp_path: Path, monkeypatch) -> None:
    """The verdicts' publishes all fail (a crash, the registry down): the status beside the bundle
    still says active. ``action=serve`` recomputes every status from the events before it serves
    (uvicorn replaced here by a stub): the file says suspended before the first request."""
    import uvicorn

    def lost(bundle_id: str) -> str:
        raise OSError("crashed before the status was written")

    env = fresh_env(tmp_path, on_audit=lost)
    try:
        _wrong_until_suspended(env, publish_fails=True)
        status = read_status_file(env["bundle_dir"], env["bundle_id"])
        assert status is not None and status.state == "active"  # the publish was lost
        served: list[Any] = []
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(
            read_status_file(env["bundle_dir"], env["bundle_id"])))
        monkeypatch.setenv("MEDCODER_REVIEW_SECRET", SECRET)
        review_from_config(compose_named("review", [*env["overrides"], "action=serve"]))
        assert len(served) == 1 and served[0].suspended and served[0].reason == "audit_alarm"
    finally:
        env["store"].close()


def test_audit_status_publishes_every_bundle_it_can_and_then_fails(tmp_path: Path, capsys) -> None:
    """A bundle without a certified target/delta (imported without its bundle) cannot be published:
    its line says why, the other bundle is still published, and the action ends in one error."""
    env = fresh_env(tmp_path)
    try:
        other = tmp_path / "other"
        other.mkdir()
        predictions, notes = write_predictions(other, "f" * 64)
        review_from_config(compose_named("review", [*env["overrides"], "action=import", f"predictions={predictions}",
                                                    f"notes={notes}"]))
        status_path(env["bundle_dir"]).unlink()
        capsys.readouterr()
        with pytest.raises(ReviewError) as info:
            review_from_config(compose_named("review", [*env["overrides"], "action=audit_status"]))
        assert "1 of 2 bundle(s)" in str(info.value) and "f" * 64 in str(info.value)
        assert "\n" not in str(info.value)
        out = capsys.readouterr().out
        assert f"bundle {'f' * 64}: not published (ReviewError: bundle {'f' * 64} has no audit target/delta" in out
        assert f"bundle {env['bundle_id']}: active" in out
        assert read_status_file(env["bundle_dir"], env["bundle_id"]) is not None  # published all the same
    finally:
        env["store"].close()


def test_a_recorded_alias_is_pinned_to_its_version(tmp_path: Path) -> None:
    """``record_ref`` stores ``models:/name@alias`` as the version it names at import: when the
    alias moves to another bundle's version, this bundle's status still goes to its own version
    (before: the alias followed, and the publish was refused there)."""
    import mlflow
    from mlflow import MlflowClient

    env = fresh_env(tmp_path)
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        client.create_registered_model("pin-test")
        v1 = client.create_model_version("pin-test", source=str(env["bundle_dir"]),
                                         tags={"medcoder.bundle_id": env["bundle_id"]}).version
        v2 = client.create_model_version("pin-test", source=str(env["bundle_dir"]),
                                         tags={"medcoder.bundle_id": "e" * 64}).version
        client.set_registered_model_alias("pin-test", "champion", v1)
        cfg = compose_named("review", [*env["overrides"], "action=audit_status"])
        publisher = AuditPublisher(env["store"], audit_settings_from_config(cfg), tracking_uri=uri)
        publisher.record_ref(env["bundle_id"], "models:/pin-test@champion")
        assert f"models:/pin-test/{v1}" in publisher.refs(env["bundle_id"])
        assert "models:/pin-test@champion" not in publisher.refs(env["bundle_id"])
        client.set_registered_model_alias("pin-test", "champion", v2)  # promoted: another bundle
        status, where = publisher.publish(env["bundle_id"])
        assert f"models:/pin-test/{v1} tag medcoder.audit_status" in where
        assert json.loads(client.get_model_version("pin-test", v1).tags["medcoder.audit_status"])["bundle_id"] == \
            env["bundle_id"]
        assert "medcoder.audit_status" not in client.get_model_version("pin-test", v2).tags
    finally:
        mlflow.set_tracking_uri(previous)
        env["store"].close()
