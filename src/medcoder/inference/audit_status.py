"""A bundle's audit status: whether its auto-accept is suspended, and why.

Why a separate document and not a field of the bundle: a bundle is immutable and verified (every
file under the manifest's sha256), while its audit status changes after deployment, when audits
show that the precision it was certified with no longer holds. So the status lives *beside* the
bundle:

* a bundle folder: the file :func:`status_path` (``<bundle>.audit-status.json`` in the folder that
  holds the bundle), written atomically;
* a ``models:/`` bundle: the model version's registry tag :data:`AUDIT_STATUS_TAG` (the same JSON),
  read and written by ``medcoder.tracking`` (inference never imports MLflow).

No status at all means "active" (a bundle never audited). A status that exists but cannot be read
or parsed, or names another bundle, **fails closed**: the caller routes every code to review with
reason ``audit_status_unreadable`` (:class:`AuditStatusError`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from medcoder.atomic import atomic_write_text
from medcoder.errors import BundleError
from medcoder.routing.reasons import AUDIT_ALARM, AUDIT_STATUS_UNREADABLE

__all__ = [
    "ACTIVE",
    "AUDIT_STATUS_TAG",
    "DEFAULT_AUDIT_STATUS_TTL_S",
    "READER_GROUP",
    "STATES",
    "SUSPENDED",
    "AuditState",
    "AuditStatus",
    "AuditStatusError",
    "CachedStatusSource",
    "FileStatusSource",
    "StatusSource",
    "read_status_file",
    "registry_status_source",
    "status_path",
    "write_status_file",
]

log = logging.getLogger(__name__)

ACTIVE = "active"
SUSPENDED = "suspended"
STATES = (ACTIVE, SUSPENDED)
#: The registry tag of a model version that carries its :class:`AuditStatus` as JSON.
AUDIT_STATUS_TAG = "medcoder.audit_status"
STATUS_SUFFIX = ".audit-status.json"
SCHEMA = 1
#: Entry-point group of registry status readers (``"models:/"`` -> ``medcoder.tracking.audit_status:
#: registry_status_reader``). Why a plugin point: the same as ``medcoder.bundle_resolvers``: inference
#: must not import MLflow, yet a ``models:/`` bundle's status is a registry tag.
READER_GROUP = "medcoder.audit_status_readers"
#: How long a registry tag read is trusted before it is asked again (``Coder.audit_status_ttl_s``).
#: Why a cache at all: a tag read is a round trip to the tracking server, once per predict call would
#: double a small request's latency; 60 s bounds how long a suspension or a lift takes to be seen.
DEFAULT_AUDIT_STATUS_TTL_S = 60.0


class AuditStatusError(BundleError):
    """A status exists but cannot be trusted (unreadable, corrupt, or another bundle's)."""


@dataclass(frozen=True)
class AuditStatus:
    """The audit status of one bundle (plain JSON, no note text).

    ``state``: ``active`` or ``suspended``. ``reason``: why it is suspended (``audit_alarm``).
    ``since``/``by``/``detail``: when the state last changed, who or what changed it (``monitor``
    or an admin's user name) and a sentence saying why (for a lift: the admin's recorded reason).
    ``warnings``: the too-little-evidence warnings (they never suspend). The numbers are the
    monitor's at ``updated_at``.
    """

    bundle_id: str
    state: str = ACTIVE
    reason: str | None = None
    since: str | None = None
    by: str | None = None
    detail: str = ""
    updated_at: str | None = None
    warnings: list[str] = field(default_factory=list)
    target: float | None = None
    delta: float | None = None
    n_audited: int = 0
    n_correct: int = 0
    cs_high: float | None = None
    schema: int = SCHEMA

    @property
    def suspended(self) -> bool:
        return self.state == SUSPENDED

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str) -> AuditStatus:
        """Parse and check a status; any problem is one :class:`AuditStatusError` line."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError(f"a JSON {type(raw).__name__}, expected an object")
            unknown = set(raw) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            status = cls(**raw)
        except (ValueError, TypeError, RecursionError) as exc:
            raise AuditStatusError(f"{where}: audit status unreadable ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
                                   hint="recompute it: python scripts/review.py action=audit_status") from None
        problems = []
        if status.schema != SCHEMA:
            problems.append(f"schema={status.schema!r} (this medcoder reads {SCHEMA})")
        if status.state not in STATES:
            problems.append(f"state={status.state!r} (expected one of {list(STATES)})")
        if not isinstance(status.bundle_id, str) or not status.bundle_id:
            problems.append(f"bundle_id={status.bundle_id!r}")
        if not isinstance(status.warnings, list) or not all(isinstance(w, str) for w in status.warnings):
            problems.append("warnings is not a list of sentences")
        if problems:
            raise AuditStatusError(f"{where}: audit status unreadable ({'; '.join(problems)})",
                                   hint="recompute it: python scripts/review.py action=audit_status")
        return status

    def check_bundle(self, bundle_id: str, *, where: str) -> AuditStatus:
        """This status, if it is ``bundle_id``'s; a status copied beside another bundle fails closed."""
        if self.bundle_id != bundle_id:
            raise AuditStatusError(f"{where}: audit status names bundle {self.bundle_id!r}, not {bundle_id!r}",
                                   hint="recompute it for this bundle: python scripts/review.py action=audit_status")
        return self


def status_path(bundle_dir: str | Path) -> Path:
    """Where a bundle folder's status lives: ``<parent>/<bundle name>.audit-status.json``."""
    bundle_dir = Path(bundle_dir)
    return bundle_dir.parent / f"{bundle_dir.name}{STATUS_SUFFIX}"


def read_status_file(bundle_dir: str | Path, bundle_id: str) -> AuditStatus | None:
    """The status beside ``bundle_dir`` (None: no status file, the bundle is active).

    Raises :class:`AuditStatusError` when the file exists but is unreadable, corrupt or another
    bundle's: the caller fails closed.
    """
    path = status_path(bundle_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditStatusError(f"{path}: audit status unreadable ({exc.strerror or exc})",
                               hint="check its permissions, or recompute it: python scripts/review.py "
                                    "action=audit_status") from None
    return AuditStatus.from_json(data, where=str(path)).check_bundle(bundle_id, where=str(path))


def write_status_file(bundle_dir: str | Path, status: AuditStatus) -> Path:
    """Write ``status`` beside ``bundle_dir`` atomically (temp file + rename); returns its path."""
    path = status_path(bundle_dir)
    atomic_write_text(path, status.to_json() + "\n")
    return path


def status_dict(status: AuditStatus) -> dict[str, Any]:
    """``status`` as a plain dict (for MLflow params, the web page)."""
    return json.loads(status.to_json())


# -- status sources: what ``Coder.predict`` asks on every call ------------------------------------
@dataclass(frozen=True)
class AuditState:
    """What a status source says right now: the ``status`` (None: none, the bundle is active) or the
    ``problem`` that makes it untrustworthy (one line, no note text; the caller fails closed)."""

    status: AuditStatus | None = None
    problem: str | None = None
    where: str = ""

    @property
    def hold(self) -> str | None:
        """The bundle hold this state puts on routing (a reason name of ``medcoder.routing.reasons``)."""
        if self.problem is not None:
            return AUDIT_STATUS_UNREADABLE
        if self.status is not None and self.status.suspended:
            return AUDIT_ALARM
        return None

    @property
    def label(self) -> str:
        """``none``, ``active``, ``suspended`` or ``unreadable`` (for logs and summaries)."""
        if self.problem is not None:
            return "unreadable"
        return "none" if self.status is None else self.status.state


class StatusSource(Protocol):
    """Where a loaded bundle's audit status comes from; asked once per ``Coder.predict`` call."""

    where: str

    def current(self, *, ttl_s: float) -> AuditState:
        """The state now (``ttl_s``: how stale a remote read may be; a file source ignores it)."""
        ...


class FileStatusSource:
    """The status file beside a bundle folder, re-read only when it changed.

    Why stat and not a timer: a ``stat`` is microseconds, so every predict call sees the file as it
    is now (a suspension is seen by the next call), yet the JSON is parsed only when the file's
    identity changed: inode and device (an atomic rewrite is a new inode), size, mtime and ctime
    (ctime catches a ``chmod`` that makes an unreadable file readable again). A problem is kept like
    a status, so an unchanged broken file is not re-read (nor re-reported) on every call.
    """

    def __init__(self, bundle_dir: str | Path, bundle_id: str) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.bundle_id = bundle_id
        self.where = str(status_path(self.bundle_dir))
        self._key: tuple[int, ...] | None = None
        self._state = AuditState(where=self.where)

    def current(self, *, ttl_s: float = 0.0) -> AuditState:
        path = status_path(self.bundle_dir)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._key, self._state = None, AuditState(where=self.where)
            return self._state
        except OSError as exc:  # e.g. the folder holding it is not searchable
            return AuditState(problem=f"{path}: audit status unreadable ({exc.strerror or exc})", where=self.where)
        key = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key != self._key:
            try:
                self._state = AuditState(read_status_file(self.bundle_dir, self.bundle_id), where=self.where)
            except AuditStatusError as exc:
                self._state = AuditState(problem=str(exc), where=self.where)
            self._key = key
        return self._state


StatusReader = Callable[[], "AuditStatus | None"]


class CachedStatusSource:
    """A status read through a callable (a registry tag), asked again at most every ``ttl_s``.

    Any exception of the reader (an :class:`AuditStatusError`, the registry unreachable) is a
    problem: the caller fails closed until a later read succeeds. A problem is cached like a status,
    so a broken registry is asked once per TTL, not once per request.
    """

    def __init__(self, reader: StatusReader, bundle_id: str, *, where: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.bundle_id = bundle_id
        self.where = where
        self.clock = clock
        self._read_at: float | None = None
        self._state = AuditState(where=where)

    def current(self, *, ttl_s: float = DEFAULT_AUDIT_STATUS_TTL_S) -> AuditState:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < ttl_s:
            return self._state
        try:
            status = self.reader()
            if status is not None:
                status.check_bundle(self.bundle_id, where=self.where)
            self._state = AuditState(status, where=self.where)
        except AuditStatusError as exc:
            self._state = AuditState(problem=str(exc), where=self.where)
        except Exception as exc:  # noqa: BLE001 -- any failure to read fails closed, named by its type
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            self._state = AuditState(problem=f"{self.where}: audit status unreadable ({type(exc).__name__}: {detail})",
                                     where=self.where)
        self._read_at = now
        return self._state

    def invalidate(self) -> None:
        """Forget the cached read: the next call asks the reader again (an admin just published)."""
        self._read_at = None


class _Unavailable:
    """A source that always fails closed (no reader installed, or the version could not be resolved)."""

    def __init__(self, problem: str, where: str) -> None:
        self.problem, self.where = problem, where

    def current(self, *, ttl_s: float = 0.0) -> AuditState:
        return AuditState(problem=self.problem, where=self.where)


def registry_status_source(uri: str, bundle_id: str) -> StatusSource:
    """The status source of a registry bundle (``models:/name@alias`` or ``models:/name/N``), through
    the reader registered under :data:`READER_GROUP` for the URI's prefix (longest wins).

    The reader is bound to the version the URI names *now* and checked against ``bundle_id`` (the
    bundle that was loaded), so an alias moved meanwhile fails closed instead of mixing versions. No
    reader installed: a source that always fails closed (never a silent "active"). The registry
    unreachable (or the URI naming no version, e.g. a stage) at load: every read fails closed and
    tries to bind again, once per TTL.
    """
    found = sorted((ep for ep in entry_points(group=READER_GROUP) if uri.startswith(ep.name)),
                   key=lambda ep: len(ep.name), reverse=True)
    if not found:
        return _Unavailable(f"bundle={uri}: no audit status reader is installed for this URI scheme "
                            "(reinstall medcoder: pip install -e .)", uri)
    factory = found[0].load()
    try:
        reader = factory(uri, bundle_id=bundle_id)
    except Exception:  # noqa: BLE001 -- the registry is down at load: bind at the first read that works
        bound: list[StatusReader] = []

        def reader() -> AuditStatus | None:
            if not bound:
                bound.append(factory(uri, bundle_id=bundle_id))  # raises: this read fails closed
            return bound[0]()

    return CachedStatusSource(reader, bundle_id, where=getattr(reader, "where", uri))
