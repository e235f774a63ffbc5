"""``ReviewStore``: the one door into the review database for the web app, the scripts and the
benchmarks.

Why one class with plain values in and out: the web layer may not touch SQLAlchemy (import-linter
contract ``web-goes-through-review``), and every rule of the issue lives here once, whoever
calls: decisions are append-only events with the note's audit fields; the current state is
replayed from them; a write names the version it saw (``expected_version``) and the event is
inserted with ``seq = expected_version + 1`` under ``UNIQUE(note_key, seq)``, so of two
concurrent writers exactly one wins and the other gets :class:`ConflictError`; a reviewer writes
only under a live lease; replacements and additions must be billable codes of the bundle's
fiscal-year code set.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from medcoder.atomic import remove_stale_temps
from medcoder.codesets import CodeSet, dotless, dotted, load_codeset
from medcoder.errors import ConfigError
from medcoder.review import export as ex
from medcoder.review import models as m
from medcoder.review.audit import AUDIT_ROLES, VERDICTS, AuditPlan, audit_counts
from medcoder.review.codes import CodesetLoader, code_index, excludes1_conflicts, shown
from medcoder.review.codes import normalise_code as _normalise
from medcoder.review.db import Database
from medcoder.review.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    LeaseError,
    NotFoundError,
    ReviewError,
)
from medcoder.review.events import ACTIONS, NoteState, replay
from medcoder.review.importer import ImportWrite, read_notes, read_predictions, write_import
from medcoder.review.monitor import (
    DEFAULT_N_OPT,
    EvidenceRule,
    alarm_step,
    evidence_warnings,
    monitor,
)
from medcoder.review.queue import queue_page
from medcoder.review.users import (
    DECIDING_ROLES,
    Passwords,
    Throttle,
    check_new_password,
    check_role,
    check_username,
)
from medcoder.review.views import (
    AuditCode,
    AuditEvent,
    AuditItem,
    AuditLift,
    AuditPoint,
    AuditState,
    AuditVerdict,
    AuditView,
    CodeView,
    DoubleReviewPair,
    Event,
    ImportResult,
    Lease,
    NoteView,
    QueuePage,
    RoutedOutcome,
    User,
)

__all__ = ["ReviewStore"]

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
MAX_COMMENT = 2000
MAX_LEASE_S = 24 * 3600


def normalise_code(code: str) -> str:
    """A code a user typed, normalised (``e119`` -> ``E11.9``), or a ReviewError that does not
    repeat it (it may be pasted note text)."""
    try:
        return _normalise(code)
    except ValueError as exc:
        raise ReviewError(f"the code given is {exc}") from None


def _version(value: Any) -> int:
    """``expected_version`` as an int (a form or JSON body may send anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ReviewError("expected_version must be a whole number")
    try:
        version = int(value)
    except ValueError:
        raise ReviewError("expected_version must be a whole number") from None
    if version < 0:
        raise ReviewError("expected_version must be a whole number")
    return version


def _check_n_opt(n_opt: Any) -> None:
    if isinstance(n_opt, bool) or not isinstance(n_opt, int) or n_opt < 1:
        raise ReviewError(f"n_opt={n_opt!r} must be a whole number >= 1 (audited codes where the bound is "
                          "tightest)")


def _pinned_n_opt(bundle: Any, fallback: int) -> int:
    """The bundle's pinned ``n_opt``, or ``fallback`` for a guarantee set before it was pinned."""
    return int(bundle.n_opt) if bundle.n_opt is not None else int(fallback)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _event(row: Any) -> Event:
    return Event(
        id=row.id, note_key=row.note_key, seq=row.seq, at=row.at, username=row.username, action=row.action,
        code=row.code, code_before=row.code_before, code_after=row.code_after, comment=row.comment,
        bundle_id=row.bundle_id, codeset_fy=row.codeset_fy, policy_version=row.policy_version,
        input_sha256=row.input_sha256, evidence=json.loads(row.evidence) if row.evidence else None,
    )


class _Code:
    """One predicted code of ``codes_json`` with attribute access."""

    __slots__ = ("code", "decision", "description", "evidence", "probability", "reasons", "sources")

    def __init__(self, d: dict[str, Any]) -> None:
        self.code, self.description, self.probability = d["code"], d["description"], d["probability"]
        self.decision, self.reasons, self.evidence, self.sources = (
            d["decision"], d["reasons"], d["evidence"], d["sources"])


class ReviewStore:
    """The review store over one database (SQLite file or PostgreSQL); see the module docstring.

    Open it with :meth:`open`; it is safe to share between threads (each call runs in its own
    transaction on a pooled connection).
    """

    def __init__(self, db: Database, *, clock: Clock, codeset_loader: CodesetLoader | None,
                 throttle: Throttle, passwords: Passwords) -> None:
        self._db = db
        self._passwords = passwords
        self._clock = clock
        self._loader: CodesetLoader = codeset_loader or load_codeset
        self._codesets: dict[int, CodeSet] = {}
        self.throttle = throttle

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, db_url: str, *, create: bool = True, clock: Clock | None = None,
             codeset_loader: CodesetLoader | None = None, busy_timeout_s: float = 5.0,
             lock_retries: int = 3, throttle: Throttle | None = None,
             password_hasher: PasswordHasher | None = None) -> ReviewStore:
        """Open (and migrate to the newest schema) the store at ``db_url``.

        ``create``: make the database when it does not exist (False: refuse). ``clock``: a
        function returning the UTC-aware now (tests move it to expire leases).
        ``codeset_loader``: ``fiscal_year -> CodeSet`` (default :func:`load_codeset`).
        ``throttle``: the failed-login policy; ``password_hasher``: argon2id parameters (default:
        argon2-cffi's recommended ones).
        """
        db = Database(db_url, create=create, busy_timeout_s=busy_timeout_s, lock_retries=lock_retries)
        try:
            db.migrate(create=create)
        except BaseException:
            db.dispose()
            raise
        return cls(db, clock=clock or _utcnow, codeset_loader=codeset_loader, throttle=throttle or Throttle(),
                   passwords=Passwords(password_hasher))

    def close(self) -> None:
        self._db.dispose()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ReviewError("the store's clock returned a naive datetime; it must be UTC-aware")
        return now.astimezone(timezone.utc)

    # -- users ----------------------------------------------------------------------------
    def create_user(self, username: str, password: str, role: str) -> User:
        """A new account (argon2id hash); refuses a taken name, an unknown role, a short password."""
        check_username(username)
        check_role(role)
        check_new_password(password)
        pw_hash = self._passwords.hash(password)
        now = self._now()

        def add(conn: Connection) -> User:
            try:
                with conn.begin_nested():
                    uid = conn.execute(insert(m.users).values(
                        username=username, role=role, password_hash=pw_hash, created_at=now, active=True,
                    )).inserted_primary_key[0]
            except IntegrityError:
                raise ReviewError(f"user {username!r} already exists") from None
            return User(int(uid), username, role)

        user = self._db.run(add, write=True)
        log.info("created review user %s (%s)", username, role)
        return user

    def set_password(self, username: str, password: str) -> None:
        """Replace a user's password (same rules as :meth:`create_user`)."""
        check_new_password(password)
        pw_hash = self._passwords.hash(password)

        def change(conn: Connection) -> None:
            res = conn.execute(update(m.users).where(m.users.c.username == username).values(password_hash=pw_hash))
            if res.rowcount != 1:
                raise NotFoundError(f"no user {username!r}")

        self._db.run(change, write=True)

    def get_user(self, username: str) -> User | None:
        def get(conn: Connection) -> User | None:
            row = conn.execute(select(m.users).where(m.users.c.username == username,
                                                     m.users.c.active.is_(True))).first()
            return User(row.id, row.username, row.role) if row else None

        return self._db.run(get, write=False)

    def users(self) -> list[User]:
        def get(conn: Connection) -> list[User]:
            rows = conn.execute(select(m.users).order_by(m.users.c.username))
            return [User(r.id, r.username, r.role) for r in rows]

        return self._db.run(get, write=False)

    def authenticate(self, username: str, password: str, *, client: str = "") -> User:
        """The user, if the password is right and the (username, client) pair is not throttled.

        Every failure is one ``AuthError`` that does not say whether the user exists; after
        :attr:`Throttle.free` failures the pair must wait (the message says how long)."""
        username = (username or "").replace("\x00", "")[:64]
        client = (client or "").replace("\x00", "")[:255]
        now = self._now()
        lf = m.login_failures
        key = (lf.c.username == username, lf.c.client == client)
        failure = self._db.run(lambda c: c.execute(select(lf).where(*key)).first(), write=False)
        if failure is not None and failure.locked_until is not None and failure.locked_until > now:
            raise AuthError(Throttle.wait_message(failure.locked_until, now))
        row = self._db.run(lambda c: c.execute(select(m.users).where(m.users.c.username == username)).first(),
                           write=False)
        ok = self._passwords.verify(row.password_hash if row is not None else None, password or "")
        if ok and row is not None and row.active:
            if failure is not None:
                self._db.run(lambda c: c.execute(delete(lf).where(*key)), write=True)
            return User(row.id, row.username, row.role)

        def record(conn: Connection) -> datetime | None:
            old = conn.execute(select(lf).where(*key)).first()
            if old is None or old.first_at + self.throttle.window < now:
                if old is not None:
                    conn.execute(delete(lf).where(*key))
                failures = 1
                conn.execute(insert(lf).values(username=username, client=client, failures=1, first_at=now,
                                               locked_until=self.throttle.lock_after(1, now)))
            else:
                failures = old.failures + 1
                conn.execute(update(lf).where(*key).values(failures=failures,
                                                           locked_until=self.throttle.lock_after(failures, now)))
            return self.throttle.lock_after(failures, now)

        try:
            locked_until = self._db.run(record, write=True)
        except IntegrityError:  # a concurrent failure inserted the row first: count on it
            locked_until = self._db.run(record, write=True)
        log.info("failed review login for %s", username)
        if locked_until is not None:
            raise AuthError("invalid username or password; " + Throttle.wait_message(locked_until, now))
        raise AuthError("invalid username or password")

    # -- import -----------------------------------------------------------------------------
    def import_predictions(self, predictions: str | Path, notes: str | Path | Mapping[str, str], *,
                           codeset_loader: CodesetLoader | None = None, audit_rate: float = 0.05,
                           audit_seed: int = 0, min_audit: int = 1,
                           double_review_rate: float = 0.0) -> ImportResult:
        """Import a predictions file and its notes in one transaction (see
        :mod:`medcoder.review.importer`). ``codeset_loader`` replaces the store's loader of
        fiscal-year code sets (for a year loaded from a user's order file).

        In the same transaction, ``audit_rate`` of the new notes with an auto-accepted code (at
        least ``min_audit``; 0 draws none) go into the blind audit sample, and
        ``double_review_rate`` of those with a routed code get a second, independent review;
        both draws are seeded by ``audit_seed`` and the file's sha256 and recorded
        (``review_audit_draws``)."""
        plan = AuditPlan(audit_rate=audit_rate, audit_seed=audit_seed, min_audit=min_audit,
                         double_review_rate=double_review_rate)
        predictions = Path(predictions)
        if codeset_loader is not None:
            self._loader = codeset_loader
            self._codesets.clear()
        parsed = read_predictions(predictions)
        read_notes(parsed, notes if isinstance(notes, Mapping) else Path(notes), predictions)
        now = self._now()

        def write(conn: Connection) -> ImportWrite:
            return write_import(conn, parsed, predictions=predictions, now=now, for_update=self._db.for_update(),
                                plan=plan)

        try:
            done = self._db.run(write, write=True)
        except IntegrityError:  # another process imported the same bundle at the same moment
            done = self._db.run(write, write=True)
        new, unchanged = done.new, done.unchanged
        n_routed = sum(1 for note in new for c in note.codes if c["decision"] == "human_review")
        result = ImportResult(parsed[0].bundle_id, len(parsed), len(new), unchanged, n_routed,
                              n_audit=done.n_audit, n_double=done.n_double)
        log.info("imported %s: bundle %s, %d notes (%d new, %d unchanged), %d routed codes, %d drawn for audit, "
                 "%d for a second review", predictions.name, result.bundle_id, result.n_notes, result.n_imported,
                 result.n_unchanged, result.n_routed_codes, result.n_audit, result.n_double)
        return result

    def warm(self) -> None:
        """Load the code set and search index of every bundle's fiscal year now (a few seconds
        the first time), so the first note page or search a reviewer opens is not the slow one."""
        fys = self._db.run(lambda c: list(c.execute(select(m.bundles.c.codeset_fy).distinct()).scalars()),
                           write=False)
        for fy in fys:
            codeset = self._codeset_or_none(fy)
            if codeset is not None:
                code_index(codeset)

    def bundles(self) -> list[str]:
        return self._db.run(lambda c: list(c.execute(select(m.bundles.c.bundle_id)
                                                     .order_by(m.bundles.c.bundle_id)).scalars()), write=False)

    # -- queue and notes ----------------------------------------------------------------------
    def queue(self, *, bundle_id: str | None = None, reason: str | None = None, code: str | None = None,
              p_min: float | None = None, p_max: float | None = None, status: str | None = None,
              offset: int = 0, limit: int = 50, user: User | None = None) -> QueuePage:
        """A page of the queue (import order) with progress counts; see :mod:`.queue`.

        ``user``: who asks. For a user whose role may audit (auditor, admin) the notes drawn for
        audit that still wait for verdicts (and their second-review twins) are left out of the
        page, the totals and the counts: their rows and filters would show the model's reasons
        and decisions of a blind audit sample. Every caller serving a person should pass it;
        without it (scripts, benchmarks) the whole queue is shown."""
        now = self._now()
        hide = user is not None and user.role in AUDIT_ROLES
        return self._db.run(lambda c: queue_page(c, now, bundle_id=bundle_id, reason=reason, code=code,
                                                 p_min=p_min, p_max=p_max, status=status, offset=offset,
                                                 limit=limit, hide_audit_pending=hide), write=False)

    def _note_row(self, conn: Connection, note_key: str, *, lock: bool = False) -> Any:
        stmt = select(m.notes).where(m.notes.c.note_key == note_key)
        if lock and self._db.for_update():
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"no note {note_key!r} in the review store")
        return row

    def _load(self, conn: Connection, note_key: str, *, lock: bool = False) -> tuple[Any, list[Any], NoteState]:
        """The note row, its predicted codes (``_Code`` values, file order) and its replayed
        state, read in the caller's transaction."""
        note = self._note_row(conn, note_key, lock=lock)
        codes = [_Code(c) for c in json.loads(note.codes_json)]
        evs = conn.execute(select(m.events).where(m.events.c.note_key == note_key).order_by(m.events.c.seq)).all()
        return note, codes, replay([c.code for c in codes], [_event(e) for e in evs])

    def note(self, note_key: str) -> NoteView:
        """The note with its codes and the state replayed from its events."""
        now = self._now()
        note, codes, state = self._db.run(lambda c: self._load(c, note_key), write=False)
        codeset = self._codeset_or_none(note.codeset_fy)

        def describe(code: str, fallback: str) -> str:
            return (codeset.description(code) if codeset is not None else None) or fallback

        views = []
        for c in codes:
            st = state.codes[c.code]
            views.append(CodeView(
                code=c.code, description=describe(c.code, c.description), probability=c.probability,
                decision=c.decision, reasons=list(c.reasons), evidence=list(c.evidence),
                sources=list(c.sources), current=st.current, replaced_by=st.replaced_by,
                comment=st.comment, decided_by=st.decided_by,
            ))
        views.sort(key=lambda v: (v.decision != "human_review", -(v.probability or 0.0)))
        added = [CodeView(code=code, description=describe(code, ""), probability=None, decision="added",
                          reasons=[], evidence=st.evidence or [], sources=["reviewer"], current=st.current,
                          replaced_by=st.replaced_by, comment=st.comment, decided_by=st.decided_by)
                 for code, st in state.added.items()]
        live = note.holder is not None and note.lease_expires is not None and note.lease_expires > now
        status = "submitted" if state.submitted else ("in_progress" if state.version else "open")
        return NoteView(
            note_key=note.note_key, note_id=note.note_id, bundle_id=note.bundle_id, codeset_fy=note.codeset_fy,
            policy_version=note.policy_version, input_sha256=note.input_sha256, text=note.text,
            codes=views, added=added, status=status, version=state.version,
            holder=note.holder if live else None, lease_expires=note.lease_expires if live else None,
            final_codes=state.final_codes([(c.code, c.decision) for c in codes]),
        )

    # -- leases ---------------------------------------------------------------------------------
    def claim(self, note_key: str, user: User, *, lease_seconds: int = 900) -> Lease:
        """Hold the note for ``lease_seconds``; the holder re-claiming renews (same token)."""
        self._require_role(user, DECIDING_ROLES, "claim a note")
        if not 1 <= int(lease_seconds) <= MAX_LEASE_S:
            raise ReviewError(f"lease_seconds must be between 1 and {MAX_LEASE_S}")
        now = self._now()
        expires = now + timedelta(seconds=int(lease_seconds))

        def take(conn: Connection) -> Lease:
            note = self._note_row(conn, note_key, lock=True)
            self._check_independent(conn, note, user)
            if note.submitted_at is not None:
                raise LeaseError(f"note {note_key} was already submitted by {note.submitted_by}",
                                 hint="an admin can correct it")
            live = note.holder is not None and note.lease_expires is not None and note.lease_expires > now
            if live and note.holder != user.username:
                raise LeaseError(f"note {note_key} is held by {note.holder} until "
                                 f"{note.lease_expires:%H:%M:%S} UTC", hint="pick another note")
            token = note.lease_token if note.holder == user.username and note.lease_token else secrets.token_urlsafe(24)
            conn.execute(update(m.notes).where(m.notes.c.note_key == note_key)
                         .values(holder=user.username, lease_token=token, lease_expires=expires))
            return Lease(note_key, user.username, token, expires)

        return self._db.run(take, write=True)

    def release(self, note_key: str, user: User, token: str) -> None:
        """Give the note back (only its holder, with the lease's token)."""
        def give(conn: Connection) -> None:
            note = self._note_row(conn, note_key, lock=True)
            if note.holder != user.username or not token or note.lease_token != token:
                raise LeaseError(f"you do not hold note {note_key}")
            conn.execute(update(m.notes).where(m.notes.c.note_key == note_key)
                         .values(holder=None, lease_token=None, lease_expires=None))

        self._db.run(give, write=True)

    @staticmethod
    def _check_lease(note: Any, user: User, token: str | None, now: datetime) -> None:
        if note.holder != user.username or not token or note.lease_token != token:
            holder = f" (now held by {note.holder})" if note.holder and note.holder != user.username else ""
            raise LeaseError(f"you do not hold note {note.note_key}{holder}; your decision was not saved",
                             hint="claim the note again, then redo the decision")
        if note.lease_expires is None or note.lease_expires <= now:
            raise LeaseError(f"your lease on note {note.note_key} expired at {note.lease_expires:%H:%M:%S} UTC; "
                             "your decision was not saved", hint="claim the note again, then redo the decision")

    @staticmethod
    def _rounds(conn: Connection, note: Any) -> list[str]:
        """The note keys of every review of one note: the first review and its second ones."""
        first = note.twin_of or note.note_key
        twins = conn.execute(select(m.notes.c.note_key).where(m.notes.c.twin_of == first)).scalars()
        return [first, *twins]

    def _check_independent(self, conn: Connection, note: Any, user: User) -> None:
        """A reviewer who audited the note, or who reviewed its other round (double review), may
        not review it: the audit and the second review are only evidence if they are another
        person's."""
        rounds = self._rounds(conn, note)
        ae, ev = m.audit_events, m.events
        if conn.execute(select(ae.c.id).where(ae.c.note_key.in_(rounds), ae.c.username == user.username)
                        .limit(1)).first() is not None:
            raise ReviewError(f"{user.username} audited note {note.note_key}; a reviewer must be another person "
                              "than its auditor", hint="leave this note to another reviewer")
        others = [k for k in rounds if k != note.note_key]
        if others and conn.execute(select(ev.c.id).where(ev.c.note_key.in_(others),
                                                         ev.c.username == user.username).limit(1)).first():
            raise ReviewError(f"{user.username} reviewed the other round of note {note.note_key}; a second "
                              "review must be another person's", hint="leave this note to another reviewer")

    @staticmethod
    def _require_role(user: User, roles: tuple[str, ...], what: str) -> None:
        if user.role not in roles:
            raise ForbiddenError(f"role {user.role} may not {what}")

    # -- code sets ------------------------------------------------------------------------------
    def _codeset_or_none(self, fy: int | None) -> CodeSet | None:
        if fy is None:
            return None
        if fy not in self._codesets:
            try:
                self._codesets[fy] = self._loader(int(fy))
            except ConfigError as exc:
                log.warning("code set FY%s unavailable: %s", fy, exc.message)
                return None
        return self._codesets[fy]

    def _codeset(self, fy: int | None, where: str) -> CodeSet:
        codeset = self._codeset_or_none(fy)
        if codeset is None:
            raise ReviewError(f"{where}: the code set of fiscal year {fy} is not available",
                              hint="load the year's CMS order file (load_codeset order_file=...)")
        return codeset

    def _bundle_fy(self, bundle_id: str) -> int | None:
        row = self._db.run(lambda c: c.execute(select(m.bundles.c.codeset_fy)
                                               .where(m.bundles.c.bundle_id == bundle_id)).first(), write=False)
        if row is None:
            raise NotFoundError(f"no bundle {bundle_id!r} in the review store")
        return row[0]

    def search_codes(self, bundle_id: str, query: str, *, limit: int = 20) -> list[tuple[str, str]]:
        """Billable codes of the bundle's fiscal year by code prefix or description words."""
        codeset = self._codeset(self._bundle_fy(bundle_id), f"bundle {bundle_id}")
        return code_index(codeset).search(query, max(0, min(int(limit), 200)))

    def excludes1_conflicts(self, bundle_id: str, code: str, others: list[str]) -> list[str]:
        """Codes of ``others`` an Excludes1 note keeps apart from ``code`` (bundle's year)."""
        codeset = self._codeset(self._bundle_fy(bundle_id), f"bundle {bundle_id}")
        return excludes1_conflicts(codeset, normalise_code(code), [normalise_code(o) for o in others])

    def _billable(self, note: Any, code: str) -> str:
        """``code`` in the code set's spelling (``E11.9``) if it is billable in the note's year."""
        codeset = self._codeset(note.codeset_fy, f"note {note.note_key}")
        if not codeset.is_billable(code):
            kind = "not billable (a header)" if codeset.is_valid(code) else "not a code"
            raise ReviewError(f"{shown(code)} is {kind} in the FY{note.codeset_fy} code set of bundle "
                              f"{note.bundle_id}",
                              hint="choose a billable code from the search")
        return dotted(code)

    @staticmethod
    def _on_note(state: NoteState, code: str, note_key: str) -> str:
        """The note's own spelling of ``code`` (predicted or added), or a ReviewError."""
        key = dotless(code)
        for known in (*state.codes, *state.added):
            if dotless(known) == key:
                return known
        raise ReviewError(f"{shown(code)} is not a code of note {note_key}")

    # -- decisions ------------------------------------------------------------------------------
    def _append(self, conn: Connection, note: Any, user: User, *, expected_version: int, action: str,
                code: str | None, before: str | None, after: str | None, comment: str | None,
                evidence: list[dict[str, Any]] | None, projection: dict[str, Any]) -> Event:
        """Insert the event with ``seq = expected_version + 1`` and move the note's projection;
        a lost race (UNIQUE violation, or the version moved) is a ConflictError."""
        seq = expected_version + 1
        now = self._now()
        values = dict(note_key=note.note_key, seq=seq, at=now, username=user.username, action=action, code=code,
                      code_before=before, code_after=after, comment=comment,
                      evidence=json.dumps(evidence) if evidence is not None else None,
                      bundle_id=note.bundle_id, codeset_fy=note.codeset_fy,
                      policy_version=note.policy_version, input_sha256=note.input_sha256)
        try:
            with conn.begin_nested():
                event_id = conn.execute(insert(m.events).values(**values)).inserted_primary_key[0]
        except IntegrityError:
            raise ConflictError(f"note {note.note_key} changed while you were deciding (event {seq} exists)",
                                hint="reload the note and decide again") from None
        res = conn.execute(update(m.notes).where(m.notes.c.note_key == note.note_key,
                                                 m.notes.c.version == expected_version)
                           .values(version=seq, **projection))
        if res.rowcount != 1:
            raise ConflictError(f"note {note.note_key} changed while you were deciding",
                                hint="reload the note and decide again")
        values.pop("evidence")
        return Event(id=int(event_id), evidence=evidence, **values)

    def _check_version(self, note: Any, state: NoteState, expected_version: int) -> None:
        if state.submitted:
            raise ConflictError(f"note {note.note_key} was already submitted by {state.submitted_by}",
                                hint="reload the note; an admin can correct it")
        if int(expected_version) != state.version:
            raise ConflictError(f"note {note.note_key} changed since you loaded it (version {state.version}, "
                                f"you saw {expected_version})", hint="reload the note and decide again")

    def decide(self, note_key: str, user: User, *, action: str, code: str | None, new_code: str | None = None,
               comment: str | None = None, evidence: list[dict[str, Any]] | None = None,
               lease_token: str | None, expected_version: int) -> Event:
        """Record one decision on a code of the note (see :data:`ACTIONS`).

        ``add`` names the added code in ``code`` (or ``new_code``); ``replace`` names the
        replacement in ``new_code``; ``query`` needs a ``comment`` (the question to the
        provider). Raises LeaseError, ConflictError or ReviewError; nothing is written then."""
        self._require_role(user, DECIDING_ROLES, "decide codes")
        expected_version = _version(expected_version)
        if action not in ACTIONS:
            raise ReviewError(f"the action given is not one of {', '.join(ACTIONS)}")
        comment = (comment or "").strip() or None
        if comment is not None and (len(comment) > MAX_COMMENT or "\x00" in comment):
            raise ReviewError(f"a comment is at most {MAX_COMMENT} characters, without NUL characters")
        if action == "query" and comment is None:
            raise ReviewError("a query to the provider needs a comment (the question)")
        code_n = normalise_code(code) if code else None
        new_n = normalise_code(new_code) if new_code else None
        if action == "add":
            if code_n and new_n and code_n != new_n:
                raise ReviewError("add names one code: give it as code (or new_code), not two different ones")
            code_n = code_n or new_n
        if not code_n:
            raise ReviewError(f"{action} needs a code")
        now = self._now()

        def write(conn: Connection) -> Event:
            note, codes, state = self._load(conn, note_key, lock=True)
            self._check_independent(conn, note, user)
            self._check_version_and_lease(note, state, user, lease_token, expected_version, now)
            spans = self._check_evidence(evidence, len(note.text)) if action == "add" else None
            code, before, after = self._change(note, codes, state, action, code_n, new_n)
            routed = [c.code for c in codes if c.decision == "human_review"]
            n_decided = state.n_decided(routed) + (1 if code in routed and state.codes[code].current is None
                                                    else 0)
            return self._append(conn, note, user, expected_version=int(expected_version), action=action,
                                code=code, before=before, after=after, comment=comment, evidence=spans,
                                projection={"n_decided": n_decided, "status": "in_progress"})

        event = self._db.run(write, write=True)
        log.info("note %s: %s %s by %s", note_key, action, code_n, user.username)
        return event

    def _change(self, note: Any, codes: list[Any], state: NoteState, action: str, code: str,
                new_code: str | None) -> tuple[str, str | None, str | None]:
        """``(code, code_before, code_after)`` of a decision, after checking it: the code is on the
        note (an added one must be new and billable), a replacement is billable and different."""
        if action == "add":
            added = self._billable(note, code)
            final = {dotless(c) for c in state.final_codes([(c.code, c.decision) for c in codes])}
            if dotless(added) in final:
                raise ReviewError(f"{added} is already a code of note {note.note_key}")
            return added, None, added
        on_note = self._on_note(state, code, note.note_key)
        if action == "replace":
            if not new_code or dotless(new_code) == dotless(on_note):
                raise ReviewError("replace needs a new_code different from the code")
            return on_note, on_note, self._billable(note, new_code)
        return on_note, on_note, None if action == "reject" else on_note

    def _check_version_and_lease(self, note: Any, state: NoteState, user: User, token: str | None,
                                 expected_version: int, now: datetime) -> None:
        if state.submitted:  # "already submitted" says more than "you do not hold the note"
            self._check_version(note, state, expected_version)
        self._check_lease(note, user, token, now)
        self._check_version(note, state, expected_version)

    @staticmethod
    def _check_evidence(evidence: list[dict[str, Any]] | None, n_chars: int) -> list[dict[str, Any]] | None:
        if not evidence:
            return None
        spans = []
        for span in evidence[:50]:
            start, end = (span.get("start"), span.get("end")) if isinstance(span, dict) else (None, None)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)) \
                    or not 0 <= start < end <= n_chars:
                raise ReviewError(f"evidence spans need 0 <= start < end <= {n_chars} (the note's length)")
            spans.append({"start": start, "end": end, "source": "reviewer"})
        return spans

    def submit(self, note_key: str, user: User, *, lease_token: str | None, expected_version: int) -> Event:
        """Close the note: every routed code must have a decision. Releases the lease."""
        self._require_role(user, DECIDING_ROLES, "submit notes")
        expected_version = _version(expected_version)
        now = self._now()

        def write(conn: Connection) -> Event:
            note, codes, state = self._load(conn, note_key, lock=True)
            self._check_independent(conn, note, user)
            self._check_version_and_lease(note, state, user, lease_token, expected_version, now)
            undecided = state.undecided([c.code for c in codes if c.decision == "human_review"])
            if undecided:
                raise ReviewError(f"note {note_key}: {len(undecided)} routed code(s) still need a decision: "
                                  f"{', '.join(undecided[:10])}")
            return self._append(conn, note, user, expected_version=int(expected_version), action="submit",
                                code=None, before=None, after=None, comment=None, evidence=None,
                                projection={"status": "submitted", "submitted_at": now,
                                            "submitted_by": user.username, "holder": None,
                                            "lease_token": None, "lease_expires": None})

        event = self._db.run(write, write=True)
        log.info("note %s submitted by %s", note_key, user.username)
        return event

    def correct(self, note_key: str, admin: User, *, code: str, action: str, new_code: str | None = None,
                comment: str) -> Event:
        """An admin's correction of a note (typically submitted): a new ``correct`` event whose
        before/after say what changed (``action`` in accept, reject, replace, add); the comment
        (why) is required. Earlier events stay as they were. An admin who audited the note (or
        reviewed its other round) may not correct it: its audit is only evidence if it is another
        person's than its review's."""
        self._require_role(admin, ("admin",), "correct notes")
        if action not in ("accept", "reject", "replace", "add"):
            raise ReviewError("a correction is accept, reject, replace or add")
        comment = (comment or "").strip()
        if not comment or len(comment) > MAX_COMMENT or "\x00" in comment:
            raise ReviewError(f"a correction needs a comment (why), at most {MAX_COMMENT} characters")
        code_n = normalise_code(code) if code else None
        new_n = normalise_code(new_code) if new_code else None
        if not code_n:
            raise ReviewError("a correction needs a code")

        def write(conn: Connection) -> Event:
            note, codes, state = self._load(conn, note_key, lock=True)
            self._check_independent(conn, note, admin)  # an admin who audited the note may not correct it
            code, before, after = self._change(note, codes, state, action, code_n, new_n)
            routed = [c.code for c in codes if c.decision == "human_review"]
            n_decided = state.n_decided(routed) + (1 if code in routed and state.codes[code].current is None
                                                    else 0)
            return self._append(conn, note, admin, expected_version=state.version, action="correct",
                                code=code, before=before, after=after, comment=comment, evidence=None,
                                projection={"n_decided": n_decided,
                                            "status": "submitted" if state.submitted else "in_progress"})

        event = self._db.run(write, write=True)
        log.info("note %s: correction (%s %s) by %s", note_key, action, code_n, admin.username)
        return event

    def events(self, note_key: str | None = None, *, after_id: int = 0, limit: int | None = None) -> list[Event]:
        """Events in id order (all, or one note's), after ``after_id``."""
        def get(conn: Connection) -> list[Event]:
            stmt = select(m.events).where(m.events.c.id > int(after_id)).order_by(m.events.c.id)
            if note_key is not None:
                stmt = stmt.where(m.events.c.note_key == note_key)
            if limit is not None:
                stmt = stmt.limit(max(0, int(limit)))
            return [_event(r) for r in conn.execute(stmt)]

        return self._db.run(get, write=False)

    def count_events(self) -> int:
        return self._db.run(lambda c: int(c.execute(select(func.count()).select_from(m.events)).scalar_one()),
                            write=False)

    # -- exports -------------------------------------------------------------------------------
    def _output(self, path: str | Path) -> Path:
        """An export's target, refused when it is an input: the database, or a predictions file
        imported into it. What killed exports left beside it is swept (:mod:`medcoder.atomic`)."""
        path = Path(path)
        if path.is_dir():
            raise ReviewError(f"{path} is a folder; give a file path")
        target = path.resolve()
        db_file = self._db.sqlite_path
        if db_file is not None and target in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
            raise ReviewError(f"{path} is the review database itself; refusing to overwrite it")
        imported = self._db.run(lambda c: list(c.execute(select(m.imports.c.file_name).distinct()).scalars()),
                                write=False)
        if any(Path(name).resolve() == target for name in imported):
            raise ReviewError(f"{path} is a predictions file imported into the store; refusing to overwrite it",
                              hint="write exports to a new file")
        remove_stale_temps(path)
        return path

    def export_labels(self, path: str | Path, *, bundle_id: str | None = None) -> int:
        """Reviewed notes as ``{id, text, codes, verified}`` JSONL (``data=jsonl``); returns the
        count. The submitted notes, and the fully audited notes without routed codes; audit
        verdicts become labels; ``verified`` is true when every auto-accepted code of the note was
        decided by a reviewer or audited (see :func:`medcoder.review.export.note_labels`). Two
        bundles' reviews of one note id would collide in a training file, so then give
        ``bundle_id``."""
        path = self._output(path)

        def write(conn: Connection) -> int:
            if bundle_id is None:
                n = m.notes
                dup = conn.execute(select(n.c.note_id).where(ex.labelled(), n.c.review_round == 1)
                                   .group_by(n.c.note_id)
                                   .having(func.count() > 1).limit(1)).first()
                if dup is not None:
                    raise ReviewError(f"note id {dup[0]} was reviewed in more than one bundle",
                                      hint="export one bundle at a time (bundle_id=...)")
            return ex.write_labels(conn, path, bundle_id=bundle_id)

        count = self._db.run(write, write=False)
        log.info("exported %d reviewed notes to %s", count, path)
        return count

    def export_decisions_csv(self, path: str | Path, *, bundle_id: str | None = None,
                             submitted_only: bool = False) -> int:
        """One CSV row per code with the model's decision and the human one; returns the rows."""
        path = self._output(path)
        count = self._db.run(lambda c: ex.write_decisions(c, path, bundle_id=bundle_id,
                                                          submitted_only=submitted_only), write=False)
        log.info("exported %d code decisions to %s", count, path)
        return count

    def export_events(self, path: str | Path) -> int:
        """The event log as JSONL; returns the number of events."""
        path = self._output(path)
        count = self._db.run(lambda c: ex.write_events(c, path, lambda r: _event(r).to_dict()), write=False)
        log.info("exported %d events to %s", count, path)
        return count

    # -- the audit loop ---------------------------------------------------------------------------
    def set_bundle_guarantee(self, bundle_id: str, target: float, delta: float, n_opt: int = DEFAULT_N_OPT) -> None:
        """The certified guarantee the audit monitor checks: auto-accepted codes at least
        ``target`` precise, at level ``delta`` (the bundle's calibration.json), watched with the
        boundary setting ``n_opt`` (:data:`~medcoder.review.monitor.DEFAULT_N_OPT`).

        The first call pins all three: the monitor's verdict on a stream depends on them, so a
        past alarm must not vanish by changing them. A later call with the same target and delta
        is a no-op (the workflow sets the guarantee at every import); another target or delta is
        refused (a recalibrated bundle is a new bundle id); another ``n_opt`` is ignored with a
        warning, and the pinned one stays (a guarantee set before ``n_opt`` was pinned gets it
        now)."""
        for name, value in (("target", target), ("delta", delta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ReviewError(f"audit {name}={value!r} must be a number strictly between 0 and 1",
                                  hint="give the bundle's certified target and delta (calibration.json)")
        _check_n_opt(n_opt)
        b = m.bundles

        def write(conn: Connection) -> int | None:
            stmt = select(b.c.target_precision, b.c.delta, b.c.n_opt).where(b.c.bundle_id == bundle_id)
            row = conn.execute(stmt.with_for_update() if self._db.for_update() else stmt).first()
            if row is None:
                raise NotFoundError(f"no bundle {bundle_id!r} in the review store",
                                    hint="import the bundle's predictions first")
            if row.target_precision is None or row.delta is None:
                conn.execute(update(b).where(b.c.bundle_id == bundle_id)
                             .values(target_precision=float(target), delta=float(delta), n_opt=int(n_opt)))
                return None
            if (float(row.target_precision), float(row.delta)) != (float(target), float(delta)):
                raise ReviewError(f"bundle {bundle_id}'s audit guarantee is pinned at target {row.target_precision:g}, "
                                  f"delta {row.delta:g}; refusing target {target:g}, delta {delta:g}",
                                  hint="a bundle's guarantee does not change: a recalibrated bundle has a new bundle_id")
            if row.n_opt is None:
                conn.execute(update(b).where(b.c.bundle_id == bundle_id).values(n_opt=int(n_opt)))
                return None
            return int(row.n_opt)

        pinned = self._db.run(write, write=True)
        if pinned is not None and pinned != n_opt:
            log.warning("bundle %s: the audit monitor keeps its pinned n_opt=%d (n_opt=%d ignored)", bundle_id,
                        pinned, n_opt)
        log.info("bundle %s: audit target %.4g at delta %.4g", bundle_id, target, delta)

    def set_code_frequencies(self, bundle_id: str, frequencies: Mapping[str, int]) -> None:
        """The training frequency of each code of the bundle (its labels.json), replacing any
        given before; the agreement reports bin routed codes by it."""
        rows = []
        for code, n in frequencies.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ReviewError(f"training frequency of {shown(str(code))} is {n!r}; it must be a whole "
                                  "number >= 0")
            rows.append({"bundle_id": bundle_id, "code": normalise_code(code), "n": int(n)})
        if len({r["code"] for r in rows}) != len(rows):
            raise ReviewError("training frequencies name one code twice (after normalising its spelling)")

        def write(conn: Connection) -> None:
            if conn.execute(select(m.bundles.c.bundle_id).where(m.bundles.c.bundle_id == bundle_id)).first() is None:
                raise NotFoundError(f"no bundle {bundle_id!r} in the review store",
                                    hint="import the bundle's predictions first")
            conn.execute(delete(m.code_frequency).where(m.code_frequency.c.bundle_id == bundle_id))
            if rows:
                conn.execute(insert(m.code_frequency), rows)

        self._db.run(write, write=True)

    def audit_queue(self, user: User | None = None, bundle_id: str | None = None, limit: int = 50,
                    offset: int = 0) -> list[AuditItem]:
        """Notes drawn for audit with auto-accepted codes still without a verdict, in import
        order; for ``user``, without the notes they reviewed (they may not audit those)."""
        if user is not None:
            self._require_role(user, AUDIT_ROLES, "audit codes")
        n, ev = m.notes, m.events
        n_codes, n_audited = audit_counts(n)
        stmt = select(n.c.note_key, n.c.note_id, n.c.bundle_id, n_codes.label("n_codes"),
                      n_audited.label("n_audited")).where(n.c.audit.is_(True), n_audited < n_codes)
        if bundle_id is not None:
            stmt = stmt.where(n.c.bundle_id == bundle_id)
        if user is not None:
            twin = m.notes.alias("twin")
            stmt = stmt.where(
                ~select(ev.c.id).where(ev.c.note_key == n.c.note_key, ev.c.username == user.username).exists(),
                ~select(ev.c.id).join(twin, twin.c.note_key == ev.c.note_key)
                .where(twin.c.twin_of == n.c.note_key, ev.c.username == user.username).exists())
        stmt = stmt.order_by(n.c.id).offset(max(0, int(offset))).limit(max(0, min(int(limit), 500)))
        return self._db.run(lambda c: [AuditItem(r.note_key, r.note_id, r.bundle_id, int(r.n_codes), int(r.n_audited))
                                       for r in c.execute(stmt)], write=False)

    @staticmethod
    def _audit_event(row: Any) -> AuditEvent:
        return AuditEvent(id=int(row.id), bundle_id=row.bundle_id, note_key=row.note_key, code=row.code,
                          verdict=row.verdict, replaced_by=row.replaced_by, comment=row.comment,
                          username=row.username, at=row.at, codeset_fy=row.codeset_fy,
                          policy_version=row.policy_version, input_sha256=row.input_sha256)

    def _audited_note(self, conn: Connection, note_key: str, *, lock: bool = False) -> tuple[Any, list[_Code]]:
        """The note drawn for audit and its auto-accepted codes, or a ReviewError."""
        note = self._note_row(conn, note_key, lock=lock)
        if not note.audit:
            raise ReviewError(f"note {note_key} was not drawn for audit", hint="pick a note from the audit queue")
        accepted = [c for c in (_Code(d) for d in json.loads(note.codes_json)) if c.decision == "auto_accept"]
        return note, accepted

    def audit_view(self, note_key: str, user: User) -> AuditView:
        """The BLIND audit page of a drawn note: its text, its auto-accepted codes (code and
        description, sorted by code) and the verdicts so far; nothing of the model's probability,
        decision, reasons or evidence (see :class:`~medcoder.review.views.AuditView`)."""
        self._require_role(user, AUDIT_ROLES, "audit codes")

        def read(conn: Connection) -> tuple[Any, list[_Code], list[Any]]:
            note, accepted = self._audited_note(conn, note_key)
            ae = m.audit_events
            return note, accepted, conn.execute(select(ae).where(ae.c.note_key == note_key).order_by(ae.c.id)).all()

        note, accepted, verdicts = self._db.run(read, write=False)
        codeset = self._codeset_or_none(note.codeset_fy)
        codes = [AuditCode(c.code, (codeset.description(c.code) if codeset is not None else None) or c.description)
                 for c in sorted(accepted, key=lambda c: c.code)]
        return AuditView(note_key=note.note_key, note_id=note.note_id, bundle_id=note.bundle_id, text=note.text,
                         codes=codes, verdicts=[AuditVerdict(v.code, v.verdict, v.replaced_by, v.username, v.at)
                                                for v in verdicts])

    def audit(self, note_key: str, user: User, *, code: str, verdict: str, replaced_by: str | None = None,
              comment: str | None = None) -> AuditEvent:
        """One blind verdict (``correct`` or ``wrong``; ``replaced_by``: the code that is right
        instead, billable in the bundle's year) on an auto-accepted code of a note drawn for
        audit, by an auditor or admin who did not review the note. One verdict per code; the
        event is append-only."""
        self._require_role(user, AUDIT_ROLES, "audit codes")
        if verdict not in VERDICTS:
            raise ReviewError(f"the verdict given is not one of {', '.join(VERDICTS)}")
        comment = (comment or "").strip() or None
        if comment is not None and (len(comment) > MAX_COMMENT or "\x00" in comment):
            raise ReviewError(f"a comment is at most {MAX_COMMENT} characters, without NUL characters")
        code_n = normalise_code(code) if code else None
        if not code_n:
            raise ReviewError("an audit verdict needs a code")
        new_n = normalise_code(replaced_by) if replaced_by else None
        if new_n is not None and verdict != "wrong":
            raise ReviewError("replaced_by goes with the verdict wrong (the code that is right instead)")
        if new_n is not None:  # load the year's code set before taking the write lock (seconds, once)
            self._codeset_or_none(self._db.run(lambda c: self._note_row(c, note_key).codeset_fy, write=False))
        now = self._now()

        def write(conn: Connection) -> AuditEvent:
            note, accepted = self._audited_note(conn, note_key, lock=True)
            match = [c.code for c in accepted if dotless(c.code) == dotless(code_n)]
            if not match:
                raise ReviewError(f"audit decision on a code that was not auto-accepted: refused ({shown(code_n)} "
                                  f"on note {note_key})", hint="audit only the codes the audit page shows")
            reviewed = conn.execute(select(m.events.c.id).where(m.events.c.note_key.in_(self._rounds(conn, note)),
                                                                m.events.c.username == user.username)
                                    .limit(1)).first()
            if reviewed is not None:
                raise ReviewError(f"{user.username} reviewed note {note_key}; an auditor must be another person",
                                  hint="leave this note to another auditor")
            instead = self._billable(note, new_n) if new_n is not None else None
            values = dict(bundle_id=note.bundle_id, note_key=note_key, code=match[0], verdict=verdict,
                          replaced_by=instead, comment=comment, username=user.username, at=now,
                          codeset_fy=note.codeset_fy, policy_version=note.policy_version,
                          input_sha256=note.input_sha256)
            try:
                with conn.begin_nested():
                    event_id = conn.execute(insert(m.audit_events).values(**values)).inserted_primary_key[0]
            except IntegrityError:
                raise ConflictError(f"code {match[0]} of note {note_key} already has an audit verdict",
                                    hint="one verdict per code; reload the audit page") from None
            return AuditEvent(id=int(event_id), **values)

        event = self._db.run(write, write=True)
        log.info("note %s: audit %s %s by %s", note_key, event.code, verdict, user.username)
        return event

    def lift(self, bundle_id: str, admin: User, *, reason: str) -> AuditLift:
        """An admin lifts the bundle's suspension, with a recorded reason: the audited stream
        restarts after the newest verdict (append-only, like the verdicts). Refused (one-line
        ReviewError) unless the bundle is suspended now: a lift of a running stream would only
        throw its evidence away."""
        self._require_role(admin, ("admin",), "lift a suspension")
        reason = (reason or "").strip() if isinstance(reason, str) else ""
        if not reason or len(reason) > MAX_COMMENT or "\x00" in reason:
            raise ReviewError(f"a lift needs a reason (why), at most {MAX_COMMENT} characters")
        now = self._now()

        def write(conn: Connection) -> AuditLift:
            stmt = select(m.bundles).where(m.bundles.c.bundle_id == bundle_id)
            bundle = conn.execute(stmt.with_for_update() if self._db.for_update() else stmt).first()
            if bundle is None:
                raise NotFoundError(f"no bundle {bundle_id!r} in the review store")
            if not self._suspended(conn, bundle):  # in the write transaction: of two lifts, the second is refused
                raise ReviewError(f"bundle {bundle_id} is not suspended: there is no suspension to lift",
                                  hint="a lift restarts the audited stream only after the alarm fired")
            last = conn.execute(select(func.max(m.audit_events.c.id))
                                .where(m.audit_events.c.bundle_id == bundle_id)).scalar_one()
            values = dict(bundle_id=bundle_id, username=admin.username, reason=reason, at=now,
                          last_audit_event_id=int(last or 0))
            lift_id = conn.execute(insert(m.audit_lifts).values(**values)).inserted_primary_key[0]
            return AuditLift(id=int(lift_id), **values)

        lifted = self._db.run(write, write=True)
        log.info("bundle %s: audit suspension lifted by %s", bundle_id, admin.username)
        return lifted

    def _suspended(self, conn: Connection, bundle: Any) -> bool:
        """Whether the monitor's alarm has fired since the bundle's last lift (False without a
        guarantee), read in the caller's transaction with the pinned settings."""
        if bundle.target_precision is None or bundle.delta is None:
            return False
        lift = self._last_lift(conn, bundle.bundle_id)
        stream = self._stream(conn, bundle.bundle_id, lift.last_audit_event_id if lift else 0)
        return alarm_step([p.correct for p in stream], target=float(bundle.target_precision),
                          delta=float(bundle.delta), n_opt=_pinned_n_opt(bundle, DEFAULT_N_OPT)) is not None

    @staticmethod
    def _last_lift(conn: Connection, bundle_id: str) -> AuditLift | None:
        al = m.audit_lifts
        row = conn.execute(select(al).where(al.c.bundle_id == bundle_id).order_by(al.c.id.desc()).limit(1)).first()
        return None if row is None else AuditLift(int(row.id), row.bundle_id, row.username, row.reason, row.at,
                                                  int(row.last_audit_event_id))

    @staticmethod
    def _stream(conn: Connection, bundle_id: str, after_id: int) -> list[AuditPoint]:
        ae = m.audit_events
        rows = conn.execute(select(ae.c.id, ae.c.at, ae.c.code, ae.c.verdict)
                            .where(ae.c.bundle_id == bundle_id, ae.c.id > after_id).order_by(ae.c.id))
        return [AuditPoint(int(r.id), r.at, r.code, r.verdict == "correct") for r in rows]

    def audit_stream(self, bundle_id: str, *, since_lift: bool = True) -> list[AuditPoint]:
        """The audited auto-accepted codes of the bundle in verdict order (since the last lift,
        or all), for the precision-over-time plot."""
        def read(conn: Connection) -> list[AuditPoint]:
            lift = self._last_lift(conn, bundle_id) if since_lift else None
            return self._stream(conn, bundle_id, lift.last_audit_event_id if lift else 0)

        return self._db.run(read, write=False)

    def audit_state(self, bundle_id: str, *, n_opt: int = DEFAULT_N_OPT, evidence_rule: EvidenceRule | None = None,
                    now: datetime | None = None) -> AuditState:
        """The bundle's audit state, RECOMPUTED from the verdicts and lifts every time (nothing
        of it is stored), so a crash between a verdict and a status update loses nothing: the
        monitor over the verdicts since the last lift (in verdict order), whether it suspends the
        bundle, and the too-little-evidence warnings.

        The monitor runs with the ``n_opt`` pinned with the bundle's guarantee
        (:meth:`set_bundle_guarantee`); the ``n_opt`` given here is checked and then IGNORED when
        one is pinned (used only for a guarantee set before pinning existed), so no caller's
        setting can make a past alarm disappear. ``report.n_opt`` says which was used."""
        rule = evidence_rule or EvidenceRule()
        _check_n_opt(n_opt)
        if now is not None and now.tzinfo is None:
            raise ReviewError("audit_state: now must be a UTC-aware datetime")
        now = self._now() if now is None else now

        def read(conn: Connection) -> tuple[Any, AuditLift | None, list[AuditPoint], int, datetime | None]:
            bundle = conn.execute(select(m.bundles).where(m.bundles.c.bundle_id == bundle_id)).first()
            if bundle is None:
                raise NotFoundError(f"no bundle {bundle_id!r} in the review store")
            lift = self._last_lift(conn, bundle_id)
            stream = self._stream(conn, bundle_id, lift.last_audit_event_id if lift else 0)
            n, nc, imp = m.notes, m.note_codes, m.imports
            since = [n.c.bundle_id == bundle_id, n.c.review_round == 1]
            if lift is not None:
                since.append(imp.c.at > lift.at)
            accepted = conn.execute(select(func.count()).select_from(
                nc.join(n, n.c.note_key == nc.c.note_key).join(imp, imp.c.id == n.c.import_id))
                .where(nc.c.decision == "auto_accept", *since)).scalar_one()
            first = conn.execute(select(func.min(imp.c.at)).select_from(
                nc.join(n, n.c.note_key == nc.c.note_key).join(imp, imp.c.id == n.c.import_id))
                .where(nc.c.decision == "auto_accept", *since)).scalar_one()
            if first is not None and first.tzinfo is None:  # an aggregate skips the column's type on SQLite
                first = m.UTCDateTime().process_result_value(
                    datetime.fromisoformat(first) if isinstance(first, str) else first, conn.dialect)
            return bundle, lift, stream, int(accepted), first

        bundle, lift, stream, accepted, first = self._db.run(read, write=False)
        if bundle.target_precision is None or bundle.delta is None:
            raise ReviewError(f"bundle {bundle_id} has no audit target/delta",
                              hint="import with the bundle (or give audit target and delta: set_bundle_guarantee)")
        last_audit_at = stream[-1].at if stream else None
        warnings = evidence_warnings(rule, audited=len(stream), accepted=accepted, last_audit=last_audit_at,
                                     first_accepted=first, now=now)
        report = monitor([p.correct for p in stream], target=float(bundle.target_precision),
                         delta=float(bundle.delta), n_opt=_pinned_n_opt(bundle, n_opt), warnings=warnings)
        alarm_at_time = stream[report.alarm_at - 1].at if report.alarm_at else None
        return AuditState(bundle_id=bundle_id, target=float(bundle.target_precision), delta=float(bundle.delta),
                          report=report, suspended=report.alarm, alarm_at_time=alarm_at_time, last_lift=lift,
                          n_accepted_since=accepted, last_audit_at=last_audit_at, warnings=warnings)

    # -- reads for the agreement reports -------------------------------------------------------
    def _frequencies(self, conn: Connection, bundle_id: str) -> dict[str, int]:
        cf = m.code_frequency
        return {dotless(code): int(n) for code, n in conn.execute(select(cf.c.code, cf.c.n)
                                                                  .where(cf.c.bundle_id == bundle_id))}

    def routed_outcomes(self, bundle_id: str) -> list[RoutedOutcome]:
        """Per routed code of every submitted (first-round) note of the bundle: its reasons, its
        training frequency (None when not given) and the reviewer's final action
        (``accept``/``reject``/``replace``/``query``/``undecided``) with the replacement."""
        def read(conn: Connection) -> list[RoutedOutcome]:
            freq = self._frequencies(conn, bundle_id)
            out = []
            for rec in ex.iter_notes(conn, submitted_only=True, bundle_id=bundle_id, first_round_only=True):
                for c in rec.codes:
                    if c.decision != "human_review":
                        continue
                    st = rec.state.codes.get(c.code)
                    action = (st.current if st is not None else None) or "undecided"
                    out.append(RoutedOutcome(rec.note.note_id, c.code, list(c.reasons), freq.get(dotless(c.code)),
                                             action, st.replaced_by if st is not None else None))
            return out

        return self._db.run(read, write=False)

    def double_review_pairs(self, bundle_id: str) -> list[DoubleReviewPair]:
        """Per (note id, routed code) of each note reviewed twice, both reviews submitted: the
        first and the second reviewer's final action (for Cohen's kappa)."""
        def read(conn: Connection) -> list[DoubleReviewPair]:
            records = {rec.note.note_key: rec for rec in ex.iter_notes(conn, submitted_only=True, bundle_id=bundle_id)}
            out = []
            for second in records.values():
                first = records.get(second.note.twin_of) if second.note.twin_of else None
                if first is None:
                    continue
                for c in first.codes:
                    if c.decision != "human_review":
                        continue
                    a = first.state.codes.get(c.code)
                    b = second.state.codes.get(c.code)
                    out.append(DoubleReviewPair(
                        note_id=first.note.note_id, code=c.code,
                        first_action=(a.current if a else None) or "undecided",
                        second_action=(b.current if b else None) or "undecided",
                        first_replaced_by=a.replaced_by if a else None, second_replaced_by=b.replaced_by if b else None,
                        first_reviewer=first.note.submitted_by, second_reviewer=second.note.submitted_by))
            return out

        return self._db.run(read, write=False)
