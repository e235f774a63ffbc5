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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medcoder.atomic import atomic_write_text
from medcoder.errors import BundleError

__all__ = [
    "ACTIVE",
    "AUDIT_STATUS_TAG",
    "STATES",
    "SUSPENDED",
    "AuditStatus",
    "AuditStatusError",
    "read_status_file",
    "status_path",
    "write_status_file",
]

ACTIVE = "active"
SUSPENDED = "suspended"
STATES = (ACTIVE, SUSPENDED)
#: The registry tag of a model version that carries its :class:`AuditStatus` as JSON.
AUDIT_STATUS_TAG = "medcoder.audit_status"
STATUS_SUFFIX = ".audit-status.json"
SCHEMA = 1


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
