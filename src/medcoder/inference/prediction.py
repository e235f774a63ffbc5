"""What the inference path returns for one note (**contract**, ``../shared/DESIGN.md``).

``DocumentPrediction.to_dict()`` is the row written to predictions files and returned by the
MLflow model; ``audit_record()`` is the audit-log line: the same decisions and audit fields but,
by construction, no note text (the input is identified by its sha256).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

AUDIT_FIELDS = ("bundle_id", "codeset_fy", "policy_version", "input_sha256", "timestamp")


def text_sha256(text: str) -> str:
    """Identity of an input note for the audit trail (UTF-8 bytes, exactly as scored: for a note
    cut to ``max_note_chars``, flagged ``truncated``, the hash of the kept prefix)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CodePrediction:
    """One predicted code: calibrated probability, routing decision, reasons, evidence spans."""

    code: str
    description: str
    probability: float
    decision: str
    reasons: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Views that supported the code (a non-negated dictionary match; the code among a view's
    top scores for the note)."""


@dataclass
class DocumentPrediction:
    """All predicted codes of one note, the note's decision, and the audit fields."""

    id: str
    codes: list[CodePrediction]
    document_decision: str
    document_reasons: list[str]
    bundle_id: str
    codeset_fy: int | None
    policy_version: str
    input_sha256: str
    timestamp: str
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def audit_record(self, text: str | None = None) -> dict[str, Any]:
        """One audit-log line; ``text`` is added only when the caller passes it (opt-in flag)."""
        record = {
            "id": self.id,
            **{k: getattr(self, k) for k in AUDIT_FIELDS},
            "document_decision": self.document_decision,
            "document_reasons": list(self.document_reasons),
            "truncated": self.truncated,
            "codes": [
                {"code": c.code, "probability": round(c.probability, 6), "decision": c.decision,
                 "reasons": list(c.reasons)}
                for c in self.codes
            ],
        }
        if text is not None:
            record["text"] = text
        return record

    @property
    def auto_accepted(self) -> list[CodePrediction]:
        return [c for c in self.codes if c.decision == "auto_accept"]
