"""``scripts/review.py``: the review workbench from a Hydra config, one ``action`` per run.

* ``action=import``: a predictions file from ``scripts/predict.py`` plus its notes
  (``predictions=... notes=...``), or a notes folder/file plus a bundle (``notes=... bundle=...``):
  the notes are predicted through the one inference path, ``Coder.load(bundle).predict``, the
  predictions written under ``review.predicted_dir`` and imported. One transaction; re-importing
  the same file changes nothing.
* ``action=serve``: the web app on ``host:port`` (127.0.0.1 by default) over ``db_url``; before the
  first request it recomputes and publishes every bundle's audit status (as ``action=audit_status``
  does), so a publish lost in a crash is made good at the restart.
* ``action=create_user``: ``username=... role=...``; the password comes from the environment
  variable named by ``password_env`` or, on a terminal, a prompt; there is never a default.
* ``action=export``: labels (``{id, text, codes}`` JSONL, the ``data=jsonl`` format), the per-code
  decision table (CSV) and the event log (JSONL) into ``export_dir``.
* ``action=audit_status``: recompute each bundle's audited precision from the store's events and
  publish its :class:`~medcoder.inference.audit_status.AuditStatus` (a file beside a bundle
  folder, a tag on a ``models:/`` version). Run after a crash, it restores what the web app would
  have published: the status is always a function of the events, never stored state. Tolerant per
  bundle: one that cannot be published says why and the others are still published; the run then
  exits with code 2. Run it on a schedule (docs/review.md): the "no audit for N days" warning is
  computed when a status is published.
* ``action=lift``: an admin (``admin=``) lifts a bundle's suspension with a recorded ``reason=``,
  then the status is republished (active).
* ``action=report``: the agreement report of a bundle, logged to MLflow against its registered
  model version (metrics + the precision plot).

The audit settings (``audit`` group) go to the import (the seeded draw) and to every
recomputation of the monitor; the web app gets a hook that republishes a bundle's status after
every audit verdict and lift, so the web layer never imports MLflow.

This is the only module of the workbench that reads a DictConfig: it turns the config into
plain values and objects (:class:`~medcoder.web.WebSettings`, an open
:class:`~medcoder.review.ReviewStore`) at the door.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medcoder.atomic import atomic_open, atomic_write_text
from medcoder.errors import BundleError, ConfigError
from medcoder.inference.audit_status import ACTIVE, SUSPENDED, AuditStatus
from medcoder.review import ROLES, ReviewError, ReviewStore
from medcoder.review.monitor import EvidenceRule
from medcoder.web import WebSettings, create_app
from medcoder.web.reports import ReportSettings, build_report
from medcoder.web.security import AccessLogFilter

__all__ = ["ACTIONS", "AuditPublisher", "AuditSettings", "ReviewResult", "audit_settings_from_config",
           "publisher_from_config", "republish_all", "review_from_config", "settings_from_config",
           "status_from_state"]

log = logging.getLogger("medcoder.review")

ACTIONS = ("serve", "import", "create_user", "export", "audit_status", "lift", "report")
SECRET_ENV = "MEDCODER_REVIEW_SECRET"


@dataclass
class ReviewResult:
    """What one run did, as the one line the script prints."""

    line: str


def _text(cfg: Any, key: str) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={value!r} is not valid", hint=f"set {key}=<value> or leave it null")
    return value


#: Bundle ids are the first 16 hex digits of a sha256 (``bundle_id_from_hashes``).
_BUNDLE_ID_DIGITS = 16


def _bundle_id_text(cfg: Any, key: str) -> str | None:
    """A bundle id given on the command line. Why not :func:`_text`: Hydra reads an id made only of
    decimal digits (about 1 in 2,000 ids) as an integer, dropping leading zeros, so an integer is
    turned back into its 16-digit text. An id Hydra read as a float (digits around one ``e``)
    cannot be restored and is refused with how to quote it."""
    value = cfg.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**_BUNDLE_ID_DIGITS:
        return f"{value:0{_BUNDLE_ID_DIGITS}d}"
    if isinstance(value, float):
        raise ConfigError(f"{key}={value!r} is not valid: the command line read the id as a number",
                          hint=f"quote it: {key}=\"'<id>'\"")
    return _text(cfg, key)


def _positive(cfg: Any, key: str, *, low: int = 1, high: int | None = None) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{key}={value!r} is not valid", hint=f"an integer {span}")
    return value


def _sqlite_dir(db_url: str) -> None:
    """Create the folder of a SQLite file database (the default lives under outputs/review/)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if db_url.startswith(prefix):
            path = db_url[len(prefix):].split("?", 1)[0]
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def open_store(cfg: Any) -> ReviewStore:
    db_url = _text(cfg, "db_url")
    if db_url is None:
        raise ConfigError("db_url is not set", hint="e.g. db_url=sqlite:///outputs/review/review.db")
    _sqlite_dir(db_url)
    # Alembic logs every migration step at INFO under Hydra's logging; one line per run is enough.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return ReviewStore.open(db_url)


def _secret(cfg: Any) -> str:
    """The cookie-signing secret: ``$MEDCODER_REVIEW_SECRET``, else the secret file (created once,
    mode 0600, so sessions survive a restart)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        if len(env) < 32:
            raise ConfigError(f"${SECRET_ENV} is too short", hint="use at least 32 random characters")
        return env
    path = Path(str(cfg.serve.secret_file)).expanduser()
    if path.is_file():
        value = path.read_text().strip()
        if len(value) < 32:
            raise ConfigError(f"{path}: the session secret is too short", hint="delete it to make a new one")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def settings_from_config(cfg: Any) -> WebSettings:
    """The web app's settings from the ``serve`` group (checked)."""
    s = cfg.serve
    for key in ("lease_seconds", "max_body_bytes", "page_size", "search_limit"):
        _positive(s, key)
    hours = s.session_hours
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours <= 0:
        raise ConfigError(f"serve.session_hours={hours!r} is not valid", hint="a number of hours > 0")
    if not isinstance(s.cookie_secure, bool):
        raise ConfigError(f"serve.cookie_secure={s.cookie_secure!r} is not valid", hint="true or false")
    audit = audit_settings_from_config(cfg)
    return WebSettings(secret_key=_secret(cfg), lease_seconds=s.lease_seconds, max_body_bytes=s.max_body_bytes,
                       session_hours=float(hours), cookie_secure=s.cookie_secure, page_size=s.page_size,
                       search_limit=s.search_limit, evidence_rule=audit.evidence,
                       report=report_settings_from_config(cfg, audit))


# -- the audit loop's settings --------------------------------------------------------------------
AUDIT_KEYS = ("rate", "seed", "min_per_import", "double_review_rate", "n_opt", "evidence", "publish", "refs_file")
EVIDENCE_KEYS = ("max_days_without_audit", "min_audited", "per_accepted")
REPORT_KEYS = ("n_boot", "seed", "level", "top_codes", "registered_model")


@dataclass(frozen=True)
class AuditSettings:
    """The ``audit`` group as checked plain values.

    ``publish``: bundle_id -> the refs its status is published to (bundle folders or ``models:/``
    refs), from the config; ``refs_file`` adds those recorded by imports (``bundle=``/``audit_bundle=``).
    """

    rate: float = 0.05
    seed: int = 0
    min_per_import: int = 1
    double_review_rate: float = 0.0
    n_opt: int = 200
    evidence: EvidenceRule = EvidenceRule()
    publish: dict[str, list[str]] | None = None
    refs_file: Path | None = None


def _mapping(cfg: Any, key: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    value = cfg.get(key) if cfg is not None else None
    if value is None:
        return {}
    plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if not isinstance(plain, dict):
        raise ConfigError(f"{key}={plain!r} is not valid", hint=f"{key} is a group of settings (a mapping)")
    return plain


def _unknown(group: str, values: dict[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(values) - set(known))
    if extra:
        raise ConfigError(f"{group}.{extra[0]} is not a setting", hint=f"the {group} settings are {', '.join(known)}")


def _number(group: str, values: dict[str, Any], key: str, *, low: float, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> Any:
    value = values.get(key)
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value <= high
    if not ok:
        what = "an integer" if integer else "a number"
        span = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ConfigError(f"{group}.{key}={value!r} is not valid", hint=f"{what} {span}")
    return value


def audit_settings_from_config(cfg: Any) -> AuditSettings:
    """The ``audit`` group, range-checked (one ConfigError line per bad value)."""
    values = _mapping(cfg, "audit")
    _unknown("audit", values, AUDIT_KEYS)
    g = "audit"
    rate = float(_number(g, values, "rate", low=0.0, high=1.0))
    double = float(_number(g, values, "double_review_rate", low=0.0, high=1.0))
    seed = _number(g, values, "seed", low=0, integer=True)
    minimum = _number(g, values, "min_per_import", low=0, integer=True)
    n_opt = _number(g, values, "n_opt", low=1, integer=True)
    ev = values.get("evidence") or {}
    if not isinstance(ev, dict):
        raise ConfigError(f"audit.evidence={ev!r} is not valid", hint=f"a group of {', '.join(EVIDENCE_KEYS)}")
    _unknown("audit.evidence", ev, EVIDENCE_KEYS)
    rule = EvidenceRule(
        max_days_without_audit=float(_number("audit.evidence", ev, "max_days_without_audit", low=0, low_open=True)),
        min_audited=_number("audit.evidence", ev, "min_audited", low=0, integer=True),
        per_accepted=_number("audit.evidence", ev, "per_accepted", low=1, integer=True))
    publish_raw = values.get("publish") or {}
    if not isinstance(publish_raw, dict):
        raise ConfigError(f"audit.publish={publish_raw!r} is not valid",
                          hint="a mapping bundle_id -> a bundle folder or models:/name/<version> (or a list of them)")
    publish: dict[str, list[str]] = {}
    for bundle_id, refs in publish_raw.items():
        listed = refs if isinstance(refs, list) else [refs]
        if not listed or not all(isinstance(r, str) and r.strip() for r in listed):
            raise ConfigError(f"audit.publish.{bundle_id}={refs!r} is not valid",
                              hint="a bundle folder or a models:/name/<version> ref, or a list of them")
        publish[str(bundle_id)] = [r.strip() for r in listed]
    refs_file = values.get("refs_file")
    return AuditSettings(rate=rate, seed=seed, min_per_import=minimum, double_review_rate=double, n_opt=n_opt,
                         evidence=rule, publish=publish,
                         refs_file=Path(str(refs_file)).expanduser() if refs_file else None)


def report_settings_from_config(cfg: Any, audit: AuditSettings) -> ReportSettings:
    values = _mapping(cfg, "report")
    _unknown("report", values, REPORT_KEYS)
    if not values:
        return ReportSettings(n_opt=audit.n_opt)
    level = float(_number("report", values, "level", low=0.0, high=1.0, low_open=True))
    if level >= 1.0:
        raise ConfigError(f"report.level={level!r} is not valid", hint="a number in (0, 1), e.g. 0.95")
    return ReportSettings(n_opt=audit.n_opt, n_boot=_number("report", values, "n_boot", low=0, integer=True),
                          seed=_number("report", values, "seed", low=0, integer=True), level=level,
                          top_codes=_number("report", values, "top_codes", low=1, integer=True))


# -- the audit status: recomputed from the events, published where serving reads it ----------------
def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds") if value is not None else None


def status_from_state(state: Any, *, now: datetime | None = None) -> AuditStatus:
    """The :class:`AuditStatus` serving reads, from the store's :class:`AuditState`.

    Suspended (reason ``audit_alarm``) exactly when the monitor's alarm has fired since the last
    lift; the numbers are the monitor's; the warnings (too little evidence) never suspend."""
    r = state.report
    lift = state.last_lift
    if state.suspended:
        state_name, reason, by = SUSPENDED, "audit_alarm", "monitor"
        since = _iso(state.alarm_at_time)
        detail = (f"audited precision below the certified target {r.target:g} at delta {r.delta:g}: "
                  f"{r.n_correct} of {r.n_audited} audited codes correct (upper confidence bound {r.cs_high:.3f}), "
                  f"alarm at audited code {r.alarm_at}")
    elif lift is not None:
        state_name, reason, by, since = ACTIVE, None, lift.username, _iso(lift.at)
        detail = f"suspension lifted: {lift.reason}"
    else:
        state_name, reason, by, since, detail = ACTIVE, None, None, None, ""
    return AuditStatus(bundle_id=state.bundle_id, state=state_name, reason=reason, since=since, by=by, detail=detail,
                       updated_at=_iso(now or datetime.now(timezone.utc)), warnings=list(state.warnings),
                       target=float(r.target), delta=float(r.delta), n_audited=int(r.n_audited),
                       n_correct=int(r.n_correct), cs_high=float(r.cs_high))


def _read_refs(path: Path | None) -> dict[str, list[str]]:
    if path is None or not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise ValueError("expected an object of bundle_id -> [refs]")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"audit.refs_file={path}: unreadable ({type(exc).__name__})",
                          hint="fix or delete it, then import with bundle= or list refs under audit.publish") from None
    return {str(k): [str(r) for r in v] for k, v in raw.items()}


@dataclass
class AuditPublisher:
    """Recomputes a bundle's audit status from the store and publishes it to every ref known for
    the bundle (``audit.publish`` plus the refs imports recorded).

    Recompute and write happen under one lock: the web app serves requests on a thread pool, and
    without it a status computed before a newer verdict could be written after that verdict's
    (an alarm overwritten by a stale "active"). Across processes, the next verdict or
    ``action=audit_status`` puts the newest status back."""

    store: Any
    settings: AuditSettings
    #: The MLflow tracking URI a ``models:/`` ref is resolved in (the ``tracking`` group's).
    tracking_uri: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refs(self, bundle_id: str) -> list[str]:
        found = list((self.settings.publish or {}).get(bundle_id, []))
        found += _read_refs(self.settings.refs_file).get(bundle_id, [])
        return list(dict.fromkeys(found))

    def record_ref(self, bundle_id: str, ref: str) -> None:
        """Remember where ``bundle_id`` lives (the import's ``bundle=``/``audit_bundle=``); an alias
        is recorded as the version it names now (:func:`_ref_path`)."""
        if self.settings.refs_file is None:
            return
        ref = _ref_path(ref)
        refs = _read_refs(self.settings.refs_file)
        listed = refs.setdefault(bundle_id, [])
        if ref not in listed:
            listed.append(ref)
            self.settings.refs_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.settings.refs_file, json.dumps(refs, indent=1, sort_keys=True) + "\n")

    def status(self, bundle_id: str) -> AuditStatus:
        state = self.store.audit_state(bundle_id, n_opt=self.settings.n_opt, evidence_rule=self.settings.evidence)
        return status_from_state(state)

    def publish(self, bundle_id: str) -> tuple[AuditStatus, list[str]]:
        """``(status, where it was written)``; nothing is written when no ref is known."""
        from medcoder.tracking.audit_status import publish_status

        with self._lock:
            status = self.status(bundle_id)
            refs = self.refs(bundle_id)
            if self.tracking_uri and any(r.startswith("models:/") for r in refs):
                import mlflow

                mlflow.set_tracking_uri(self.tracking_uri)
            return status, [publish_status(_ref_path(ref), status) for ref in refs]

    def hook(self, bundle_id: str) -> str:
        """The web app's ``on_audit``: republish, and say where (for the log)."""
        status, where = self.publish(bundle_id)
        return f"{status.state} -> {', '.join(where) if where else 'nowhere (no publish ref)'}"


def publisher_from_config(cfg: Any, store: Any, audit: AuditSettings | None = None) -> AuditPublisher:
    """The publisher over ``store`` with the config's audit settings and tracking URI."""
    from medcoder.tracking import tracking_uri
    from medcoder.workflows.factories import build_tracking

    return AuditPublisher(store, audit or audit_settings_from_config(cfg), tracking_uri=tracking_uri(build_tracking(cfg)))


def _ref_path(ref: str) -> str:
    """Where a bundle's status goes, pinned: ``models:/name@alias`` -> ``models:/name/<the version the
    alias names now>`` (resolved in the current tracking URI; a moved alias must not redirect this
    bundle's status to another bundle's version), ``models:/name/N`` as is, a folder made absolute
    (the status file goes beside it)."""
    if ref.startswith("models:/"):
        if "@" not in ref:
            return ref
        from medcoder.tracking.audit_status import pin_version

        return pin_version(ref)
    return str(Path(ref).expanduser().resolve())


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def republish_all(publisher: AuditPublisher, bundle_ids: list[str]) -> tuple[list[str], list[str]]:
    """Recompute and publish each bundle's status, one bundle at a time: ``(lines, failed ids)``.

    Tolerant per bundle: a bundle without a certified target/delta, or whose publish fails (the
    registry unreachable, a folder gone, a status refused), gives ``bundle X: not published
    (<reason>)`` and the next bundle is still published; the caller decides what a failure means
    (``action=audit_status`` exits non-zero at the end, the workbench starts anyway). Why: one
    broken bundle must not keep every other bundle's suspension from reaching serving. This is what
    ``action=audit_status`` and the workbench's start (``action=serve``) both run, so a restart after a
    crash between a verdict and its publish recomputes every status from the events."""
    from mlflow.exceptions import MlflowException

    lines: list[str] = []
    failed: list[str] = []
    for bundle_id in bundle_ids:
        try:
            status, where = publisher.publish(bundle_id)
        except (ReviewError, BundleError, MlflowException, OSError) as exc:
            failed.append(bundle_id)
            lines.append(f"bundle {bundle_id}: not published ({_one_line(exc)})")
            continue
        lines.append(_status_line(status, where))
    return lines, failed


def _status_line(status: AuditStatus, where: list[str]) -> str:
    state = status.state + (f" ({status.reason})" if status.reason else "")
    numbers = f"{status.n_correct}/{status.n_audited} audited correct"
    warn = f", {len(status.warnings)} warning(s): {'; '.join(status.warnings)}" if status.warnings else ""
    dest = (f"published to {', '.join(where)}" if where else
            f"not published (no ref: set audit.publish.{status.bundle_id}=<bundle dir | models:/name/version>)")
    return f"bundle {status.bundle_id}: {state}, {numbers}{warn}; {dest}"


def bundle_guarantee(ref: str) -> tuple[str, float, float, dict[str, int]]:
    """``(bundle_id, target precision, delta, training frequencies)`` of a bundle folder or a
    ``models:/`` ref, read from its verified ``manifest.json``, ``calibration.json`` (``targets``,
    else the certified ``policy.accept_result``) and ``labels.json``; the model is not loaded."""
    from medcoder.data.labels import LabelSpace
    from medcoder.inference.bundle import verify_bundle

    if ref.startswith(("models:/", "runs:/")):
        from medcoder.tracking.bundles import resolve_mlflow_bundle

        root, manifest = resolve_mlflow_bundle(ref)
    else:
        root = Path(ref).expanduser()
        if not root.is_dir():
            raise ConfigError(f"bundle={ref}: no such bundle folder", hint="give the folder scripts/export.py wrote")
        manifest = verify_bundle(root)
    path = root / "calibration.json"
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable ({type(exc).__name__})", hint="re-export the bundle") from None
    found = calibration.get("targets") or (calibration.get("policy") or {}).get("accept_result") or {}
    target, delta = found.get("target_precision"), found.get("delta")
    for name, value in (("target_precision", target), ("delta", delta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
            raise BundleError(f"{path}: targets.{name}={value!r} is missing or not in (0, 1)",
                              hint="calibrate the run (scripts/calibrate.py) and export the bundle again")
    labels = LabelSpace.from_json(root / "labels.json")
    return manifest.bundle_id, float(target), float(delta), {c: int(n) for c, n in labels.frequency.items()}


# -- actions --------------------------------------------------------------------------------------
def _predict_notes(cfg: Any, notes: str, bundle: str) -> Path:
    """Predict ``notes`` with ``bundle`` (``Coder.load(bundle).predict``, block by block) into a
    predictions file under ``predicted_dir``; its name is fixed by the bundle and the notes, so
    predicting the same notes again replaces the same file."""
    from medcoder.inference import Coder
    from medcoder.inference.batch import NoteSource

    batch_size = _positive(cfg, "batch_size")
    source = NoteSource(notes).scan()
    coder = Coder.load(bundle)
    out_dir = Path(str(cfg.predicted_dir)).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(f"{Path(notes).resolve()}\x00{source.fingerprint}".encode()).hexdigest()[:12]
    out = out_dir / f"{coder.bundle_id}-{tag}.jsonl"
    block: list[tuple[str, str]] = []

    def flush(fh: Any) -> None:
        preds = coder.predict([t for _, t in block], [i for i, _ in block], batch_size=batch_size, progress=False)
        for p in preds:
            fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
        block.clear()

    with atomic_open(out, "w", encoding="utf-8") as fh:
        for note_id, text in source:
            block.append((note_id, text))
            if len(block) >= 256:
                flush(fh)
        if block:
            flush(fh)
    log.info("predicted %d notes with bundle %s into %s", source.count, coder.bundle_id, out)
    return out


def import_from_config(cfg: Any) -> ReviewResult:
    predictions, notes, bundle = _text(cfg, "predictions"), _text(cfg, "notes"), _text(cfg, "bundle")
    audit_bundle = _text(cfg, "audit_bundle")
    if notes is None:
        raise ConfigError("notes is not set", hint="notes=<folder of <id>.txt | .jsonl | .csv> (the notes predicted)")
    if predictions is None and bundle is None:
        raise ConfigError("neither predictions nor bundle is set",
                          hint="predictions=<file from scripts/predict.py>, or bundle=<dir> to predict the notes")
    if predictions is not None and bundle is not None:
        raise ConfigError("both predictions and bundle are set", hint="give one: a predictions file, or a bundle")
    if audit_bundle is not None and bundle is not None:
        raise ConfigError("both audit_bundle and bundle are set",
                          hint="bundle= already records its guarantee; audit_bundle= goes with predictions=")
    audit = audit_settings_from_config(cfg)
    ref = bundle or audit_bundle
    if ref is not None and ref.startswith(("models:/", "runs:/")):
        import mlflow

        from medcoder.tracking import tracking_uri
        from medcoder.workflows.factories import build_tracking

        mlflow.set_tracking_uri(tracking_uri(build_tracking(cfg)))
    if ref is not None and ref.startswith("models:/"):
        # An alias pinned to its version now: predictions, guarantee and the recorded publish ref all
        # name that version, so a later alias move cannot redirect this bundle's status.
        ref = _ref_path(ref)
        bundle = ref if bundle is not None else None
    guarantee = bundle_guarantee(ref) if ref is not None else None  # refused before anything is written
    store = open_store(cfg)
    try:
        path = Path(predictions) if predictions is not None else _predict_notes(cfg, notes, str(bundle))
        result = store.import_predictions(path, Path(notes), audit_rate=audit.rate, audit_seed=audit.seed,
                                          min_audit=audit.min_per_import, double_review_rate=audit.double_review_rate)
        published = ""
        if guarantee is not None and ref is not None:
            bundle_id, target, delta, frequencies = guarantee
            if bundle_id != result.bundle_id:
                raise ConfigError(f"audit_bundle={ref} is bundle {bundle_id}, but the predictions were made by "
                                  f"bundle {result.bundle_id}",
                                  hint="give the bundle that made the predictions (its manifest's bundle_id)")
            store.set_bundle_guarantee(bundle_id, target, delta, n_opt=audit.n_opt)
            store.set_code_frequencies(bundle_id, frequencies)
            publisher = publisher_from_config(cfg, store, audit)
            publisher.record_ref(bundle_id, _ref_path(ref))
            status, where = publisher.publish(bundle_id)
            published = f"; target {target:g} at delta {delta:g}, audit status {status.state} -> {', '.join(where)}"
    finally:
        store.close()
    return ReviewResult(f"imported {result.n_imported} notes ({result.n_unchanged} unchanged, "
                        f"{result.n_routed_codes} routed codes, {result.n_audit} drawn for audit, "
                        f"{result.n_double} for a second review) of bundle {result.bundle_id} from {path}{published}")


def _password(cfg: Any) -> str:
    env = _text(cfg, "password_env")
    if env and os.environ.get(env):
        return os.environ[env]
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("password (12 characters or more): ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ", hint="run the command again")
        return first
    raise ConfigError(f"no password: ${env} is not set and there is no terminal to ask on",
                      hint=f"export {env}=... (never a default password)")


def create_user_from_config(cfg: Any) -> ReviewResult:
    username, role = _text(cfg, "username"), cfg.get("role")
    if username is None:
        raise ConfigError("username is not set", hint="username=<name>")
    if role not in ROLES:
        raise ConfigError(f"role={role!r} is not valid", hint=f"one of {', '.join(ROLES)}")
    password = _password(cfg)
    store = open_store(cfg)
    try:
        user = store.create_user(username, password, role)
    finally:
        store.close()
    return ReviewResult(f"created user {user.username} ({user.role})")


def export_from_config(cfg: Any) -> ReviewResult:
    out = Path(str(cfg.export_dir)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg)
    try:
        labels, decisions, events = out / "labels.jsonl", out / "decisions.csv", out / "events.jsonl"
        bundle = _bundle_id_text(cfg, "export_bundle")  # one bundle's notes only (needed when an id is in two bundles)
        n_labels = store.export_labels(labels, bundle_id=bundle)
        n_rows = store.export_decisions_csv(decisions, bundle_id=bundle)
        n_events = store.export_events(events)
    finally:
        store.close()
    return ReviewResult(f"exported {n_labels} reviewed notes to {labels}, {n_rows} code decisions to {decisions} "
                        f"and {n_events} events to {events}")


def _bundle_ids(store: ReviewStore, cfg: Any, *, required: bool) -> list[str]:
    bundle_id = _bundle_id_text(cfg, "bundle_id")
    known = list(store.bundles())
    if bundle_id is None:
        if required:
            raise ConfigError("bundle_id is not set", hint=f"bundle_id=<one of: {', '.join(known) or 'none imported'}>")
        return known
    if bundle_id not in known:
        raise ConfigError(f"bundle_id={bundle_id!r} is not in the review store",
                          hint=f"one of: {', '.join(known) or 'none imported yet'}")
    return [bundle_id]


def audit_status_from_config(cfg: Any) -> ReviewResult:
    """Recompute and publish every (or one) bundle's status: one line per bundle.

    A bundle that cannot be published says why on its line and the others are still published; if
    any failed, every line is printed and the action ends with one error line (exit code 2)."""
    audit = audit_settings_from_config(cfg)
    store = open_store(cfg)
    try:
        publisher = publisher_from_config(cfg, store, audit)
        bundle_ids = _bundle_ids(store, cfg, required=False)
        lines, failed = republish_all(publisher, bundle_ids)
    finally:
        store.close()
    if failed:
        print("\n".join(lines), flush=True)
        raise ReviewError(f"audit status not published for {len(failed)} of {len(bundle_ids)} bundle(s): "
                          f"{', '.join(failed)}", hint="see each bundle's line above, fix it, then run "
                                                      "action=audit_status again")
    return ReviewResult("\n".join(lines) if lines else "no bundle in the review store: nothing to publish")


def lift_from_config(cfg: Any) -> ReviewResult:
    """An admin lifts a bundle's suspension with a recorded reason; the status is republished."""
    audit = audit_settings_from_config(cfg)
    admin_name, reason = _text(cfg, "admin"), cfg.get("reason")
    if admin_name is None:
        raise ConfigError("admin is not set", hint="admin=<the admin's user name> (recorded with the lift)")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(f"reason={reason!r} is empty", hint='reason="<why the suspension may be lifted>"')
    store = open_store(cfg)
    try:
        (bundle_id,) = _bundle_ids(store, cfg, required=True)
        user = store.get_user(admin_name)
        if user is None or user.role != "admin":
            raise ConfigError(f"admin={admin_name!r} is not an admin of the review store",
                              hint="give an account with role admin (action=create_user role=admin)")
        store.lift(bundle_id, user, reason=reason.strip())
        status, where = publisher_from_config(cfg, store, audit).publish(bundle_id)
    finally:
        store.close()
    return ReviewResult(f"lifted by {admin_name}: " + _status_line(status, where))


def _registered_version(ref: str) -> tuple[str, str]:
    """``(name, version)`` of ``models:/name/<n>``, ``models:/name@alias`` or ``name/<n>``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    rest = ref[len("models:/"):] if ref.startswith("models:/") else ref
    rest = rest.rstrip("/")
    try:
        if "@" in rest:
            name, _, alias = rest.rpartition("@")
            return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
        name, _, version = rest.rpartition("/")
        if name and version.isdigit():
            return name, str(MlflowClient().get_model_version(name, version).version)
    except MlflowException as exc:
        raise ConfigError(f"registered model {ref!r} not found in the tracking store ({type(exc).__name__})",
                          hint="check report.registered_model (models:/name/<version> or models:/name@alias)") from None
    raise ConfigError(f"report.registered_model={ref!r} is not a registered model version",
                      hint="models:/name/<version> or models:/name@alias")


def _logged_model_id(client: Any, name: str, version: str) -> str | None:
    """The MLflow 3 logged model behind a registered version (its ``model_id``, or the
    ``models:/m-…`` source a registration from ``log_model`` records), or None (an older store, or
    a version registered from a plain path): then the metrics go to the run only."""
    from mlflow.exceptions import MlflowException

    mv = client.get_model_version(name, version)
    candidate = getattr(mv, "model_id", None)
    source = str(getattr(mv, "source", "") or "")
    if not candidate and source.startswith("models:/m-") and "/" not in source[len("models:/"):]:
        candidate = source[len("models:/"):]
    if not candidate:
        return None
    try:
        return str(client.get_logged_model(candidate).model_id)
    except MlflowException:
        return None


def report_from_config(cfg: Any) -> ReviewResult:
    """The agreement report of one bundle, logged to MLflow against its registered model version:
    tags ``medcoder.registered_model``/``medcoder.model_version`` on a run in the tracking
    experiment, metrics linked to the version's logged model where MLflow has one, the plot as an
    artifact. Codes, counts and rates only: never note text."""
    import mlflow

    from medcoder.tracking import setup_experiment
    from medcoder.workflows.factories import build_tracking

    audit = audit_settings_from_config(cfg)
    settings = report_settings_from_config(cfg, audit)
    store = open_store(cfg)
    try:
        (bundle_id,) = _bundle_ids(store, cfg, required=True)
        report = build_report(store, bundle_id, settings, evidence_rule=audit.evidence)
        refs = AuditPublisher(store, audit).refs(bundle_id)
    finally:
        store.close()
    setup_experiment(build_tracking(cfg))
    ref = _text(cfg.report, "registered_model") if cfg.get("report") is not None else None
    ref = ref or next((r for r in refs if r.startswith("models:/")), None)
    if ref is None:
        raise ConfigError(f"bundle {bundle_id} has no registered model version to log the report against",
                          hint=f"report.registered_model=models:/<name>/<version>, or audit.publish.{bundle_id}="
                               "models:/<name>/<version>")
    name, version = _registered_version(ref)
    model_id = _logged_model_id(mlflow.MlflowClient(), name, version)
    metrics = report.metrics()
    with mlflow.start_run(run_name=f"audit-report-{bundle_id[:12]}") as run:
        mlflow.set_tags({"medcoder.registered_model": name, "medcoder.model_version": version,
                         "medcoder.bundle_id": bundle_id, "medcoder.report": "audit_agreement",
                         "medcoder.audit_state": "suspended" if report.state.suspended else "active"})
        mlflow.log_params({"n_opt": settings.n_opt, "n_boot": settings.n_boot, "seed": settings.seed,
                           "level": settings.level, "audit_rate": audit.rate, "audit_seed": audit.seed})
        # MLflow 3: with the version's logged model id the metrics show on the model version too
        mlflow.log_metrics(metrics, model_id=model_id or None)
        if report.plot_png:
            with tempfile.TemporaryDirectory() as tmp:
                plot = Path(tmp) / "audit_precision.png"
                plot.write_bytes(report.plot_png)
                mlflow.log_artifact(str(plot))
        run_id = run.info.run_id
    return ReviewResult(f"report of bundle {bundle_id} logged to run {run_id} ({len(metrics)} metrics) against "
                        f"registered model {name} version {version}")


def log_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's logging: its default formats, plus the filter that drops query strings from the
    access log; or no access log at all."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config.setdefault("filters", {})["no_query"] = {"()": AccessLogFilter}
    config["handlers"]["access"]["filters"] = ["no_query"]
    if not access_log:
        config["loggers"]["uvicorn.access"]["handlers"] = []
        config["loggers"]["uvicorn.access"]["propagate"] = False
    return config


def serve_from_config(cfg: Any) -> ReviewResult:
    import uvicorn

    host = _text(cfg, "host") or "127.0.0.1"
    port = _positive(cfg, "port", low=0, high=65535)
    if not isinstance(cfg.serve.access_log, bool):
        raise ConfigError(f"serve.access_log={cfg.serve.access_log!r} is not valid", hint="true or false")
    settings = settings_from_config(cfg)
    store = open_store(cfg)
    try:
        publisher = publisher_from_config(cfg, store)
        # Every status recomputed from the events before the first request: a verdict whose publish
        # was lost (a crash, the registry down) reaches serving at the restart, and the "no audit for
        # N days" warning (computed when a status is published) is brought up to date.
        lines, failed = republish_all(publisher, list(store.bundles()))
        for line in lines:
            print(f"audit status at start-up: {line}", flush=True)
        if failed:
            log.warning("audit status not published at start-up for %d bundle(s): %s; run python "
                        "scripts/review.py action=audit_status once fixed", len(failed), ", ".join(failed))
        app = create_app(store, settings, on_audit=publisher.hook)
        print(f"review workbench on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
        uvicorn.run(app, host=host, port=port, log_config=log_config(cfg.serve.access_log),
                    access_log=cfg.serve.access_log, server_header=False, proxy_headers=False)
    finally:
        store.close()
    return ReviewResult("review workbench stopped")


def review_from_config(cfg: Any) -> ReviewResult:
    """Run the configured ``action``."""
    action = cfg.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"action={action!r} is not valid", hint=f"one of {', '.join(ACTIONS)}")
    return {"serve": serve_from_config, "import": import_from_config, "create_user": create_user_from_config,
            "export": export_from_config, "audit_status": audit_status_from_config, "lift": lift_from_config,
            "report": report_from_config}[action](cfg)

