"""Request and response bodies of the JSON API: the OpenAPI spec is generated from these.

Why separate models rather than returning the store's dataclasses: the spec then names every
field and bound (what schemathesis fuzzes), inputs are length-limited before they reach the
store, and the API shape does not change when the store adds a field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["open", "in_progress", "submitted"]
Action = Literal["accept", "reject", "replace", "query", "add"]
CODE = Field(min_length=1, max_length=20)


class ErrorOut(BaseModel):
    error: str
    detail: Any = None


class OkOut(BaseModel):
    ok: bool = True


class MeOut(BaseModel):
    username: str
    role: str
    csrf_token: str


class QueueItemOut(BaseModel):
    note_key: str
    note_id: str
    bundle_id: str
    status: str
    n_routed: int
    n_decided: int
    reasons: list[str]
    holder: str | None = None
    lease_expires: datetime | None = None


class QueueOut(BaseModel):
    items: list[QueueItemOut]
    #: notes matching every filter; a lower bound when ``total_capped`` (large filtered sets are
    #: counted only past the page, so a filtered page stays fast at 100,000 notes)
    total: int
    total_capped: bool = False
    counts: dict[str, int]

    @classmethod
    def of(cls, page: Any) -> QueueOut:
        return cls(items=[QueueItemOut.model_validate(i, from_attributes=True) for i in page.items],
                   total=page.total, total_capped=bool(getattr(page, "total_capped", False)),
                   counts=dict(page.counts))


class Span(BaseModel):
    start: int = Field(ge=0, le=10_000_000)
    end: int = Field(ge=0, le=10_000_000)


class CodeOut(BaseModel):
    code: str
    description: str
    probability: float | None = None
    decision: str
    reasons: list[str]
    evidence: list[dict[str, Any]]
    sources: list[str]
    current: str | None = None
    replaced_by: str | None = None
    comment: str | None = None


class NoteOut(BaseModel):
    note_key: str
    note_id: str
    bundle_id: str
    codeset_fy: int | None = None
    policy_version: str
    input_sha256: str
    text: str
    codes: list[CodeOut]
    added: list[CodeOut]
    status: str
    version: int
    holder: str | None = None
    lease_expires: datetime | None = None

    @classmethod
    def of(cls, view: Any) -> NoteOut:
        fields = {k: getattr(view, k) for k in cls.model_fields if k not in ("codes", "added")}
        return cls(**fields, codes=[CodeOut.model_validate(c, from_attributes=True) for c in view.codes],
                   added=[CodeOut.model_validate(c, from_attributes=True) for c in view.added])


class LeaseOut(BaseModel):
    note_key: str
    username: str
    token: str
    expires_at: datetime

    @classmethod
    def of(cls, lease: Any) -> LeaseOut:
        return cls.model_validate(lease, from_attributes=True)


class ReleaseIn(BaseModel):
    lease_token: str = Field(min_length=1, max_length=200)


class DecisionIn(BaseModel):
    """One decision. ``code``: the suggested code decided on (for ``add``: the added code);
    ``new_code``: the replacement (``replace``); ``comment``: the question to the provider
    (required for ``query``)."""

    action: Action
    code: str = CODE
    new_code: str | None = Field(None, min_length=1, max_length=20)
    comment: str | None = Field(None, max_length=2000)
    evidence: list[Span] | None = Field(None, max_length=20)
    lease_token: str = Field(min_length=1, max_length=200)
    expected_version: int = Field(ge=0, le=1_000_000_000)


class SubmitIn(BaseModel):
    lease_token: str = Field(min_length=1, max_length=200)
    expected_version: int = Field(ge=0, le=1_000_000_000)


class CorrectionIn(BaseModel):
    action: Action
    code: str = CODE
    new_code: str | None = Field(None, min_length=1, max_length=20)
    comment: str = Field(min_length=1, max_length=2000)


class EventOut(BaseModel):
    id: int
    note_key: str
    seq: int
    at: datetime
    username: str
    action: str
    code: str | None = None
    code_before: str | None = None
    code_after: str | None = None
    comment: str | None = None
    bundle_id: str
    codeset_fy: int | None = None
    policy_version: str
    input_sha256: str

    @classmethod
    def of(cls, event: Any) -> EventOut:
        return cls.model_validate(event, from_attributes=True)


class CodeHit(BaseModel):
    code: str
    description: str
