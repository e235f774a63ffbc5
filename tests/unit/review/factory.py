"""Small synthetic predictions for the review store's tests: a handful of notes with real
FY2026 codes, written as ``scripts/predict.py`` would (one JSON object per line)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcoder.review import ReviewStore

SECRET = "Mrs Jane Roe QUOKKA-7731"
"""Text that must never reach an error message or a log line."""

NOTES: dict[str, str] = {
    "n1": f"{SECRET} has type 2 diabetes and high blood pressure. Cough for a week.",
    "n2": "Asthma, mild; hyperlipidemia on statin. No fever.",
    "n3": "Type 1 diabetes mellitus without complications. Pneumonia ruled out.",
    "n4": "Routine follow-up, obesity; long-term insulin use.",
}


def code(code: str, p: float, decision: str = "human_review", reasons: list[str] | None = None,
         evidence: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    return {
        "code": code, "description": f"model description of {code}", "probability": p, "decision": decision,
        "reasons": reasons if reasons is not None else (["low_confidence"] if decision == "human_review" else []),
        "evidence": [{"start": s, "end": e, "weight": 0.5, "source": "dictionary"} for s, e in evidence or []],
        "sources": ["dictionary", "neural"],
    }


CODES: dict[str, list[dict[str, Any]]] = {
    "n1": [code("E11.9", 0.62, evidence=[(29, 44)]), code("I10", 0.97, "auto_accept"),
           code("R05.9", 0.40, reasons=["low_confidence", "no_evidence"])],
    "n2": [code("J45.909", 0.55), code("E78.5", 0.93, "auto_accept")],
    "n3": [code("E10.9", 0.71, reasons=["rare_code"]), code("J18.9", 0.30)],
    "n4": [code("E66.9", 0.91, "auto_accept"), code("Z79.4", 0.95, "auto_accept")],
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prediction(note_id: str, text: str, codes: list[dict[str, Any]], *, bundle_id: str = "bundle-A",
               fy: int | None = 2026, policy: str = "policy-1", **extra: Any) -> dict[str, Any]:
    routed = any(c["decision"] == "human_review" for c in codes)
    return {
        "id": note_id, "codes": copy.deepcopy(codes), "document_decision": "human_review" if routed else "auto_accept",
        "document_reasons": [], "bundle_id": bundle_id, "codeset_fy": fy, "policy_version": policy,
        "input_sha256": sha(text), "timestamp": "2026-11-30T12:00:00+00:00", "truncated": False, **extra,
    }


def write_predictions(path: Path, notes: dict[str, str] | None = None, *, bundle_id: str = "bundle-A",
                      lines: list[str] | None = None) -> Path:
    """The predictions JSONL of ``notes`` (default :data:`NOTES`); ``lines`` overrides the text."""
    notes = NOTES if notes is None else notes
    if lines is None:
        lines = [json.dumps(prediction(i, t, CODES.get(i, []), bundle_id=bundle_id)) for i, t in notes.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def key_of(store: ReviewStore, note_id: str, bundle_id: str = "bundle-A") -> str:
    """The note key of ``note_id`` in ``bundle_id``'s queue."""
    return next(i.note_key for i in store.queue(bundle_id=bundle_id, limit=500).items if i.note_id == note_id)
