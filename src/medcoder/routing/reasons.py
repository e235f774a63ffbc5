"""Stable reason names for human-review routing (**contract**: they appear in predictions files,
audit logs and metric keys ``reason_<name>``; never rename, only add).
"""

from __future__ import annotations

LOW_CONFIDENCE = "low_confidence"
"""Calibrated probability below τ_accept (or no τ_accept could be certified at all)."""

RARE_CODE = "rare_code"
"""Fewer than ``min_train_count`` training examples: the model's confidence is not trustworthy."""

EXCLUDES1_CONFLICT = "excludes1_conflict"
"""Two predicted codes that an ICD-10-CM Excludes1 note forbids together; both get the reason."""

INVALID_CODE = "invalid_code"
"""Not a valid ICD-10-CM code in the configured code set (fiscal year)."""

TRUNCATED_NOTE = "truncated_note"
"""Part of the note was never read by the model (cut at the maximum length)."""

EMPTY_NOTE = "empty_note"
"""The note has no text: no codes are predicted and the document goes to a coder."""

NEW_CODE = "new_code"
"""Added in the policy's code-set year (absent the year before), however often it was trained on:
coders are only starting to use it, and the notes the model learned it from were coded while its
usage settled. (Until issue 19 it also required ``rare_code``, which always fired with it, so it
never changed a decision.)"""

NEGATED_MENTION = "negated_mention"
"""Every dictionary match of the code in the note is negated or hypothetical ("no fever", "se
descartó tuberculosis"). Off by default: on CodiEsp negated findings are coded (measured)."""

SIBLING_CONFLICT = "sibling_conflict"
"""Another code of the same 3-character category is predicted for the note (e.g. R31.9 and
R31.0): usually only one is right."""

NO_EVIDENCE = "no_evidence"
"""No view gave a span of the note for the predicted code: an auditor must always be able to check
an accepted code against the text, so such a code is never auto-accepted. A rule like the others
(it fires with ``low_confidence`` where both apply), applied before Learn-then-Test, in calibration's
evaluation and in ``Coder.predict`` alike."""

AUDIT_ALARM = "audit_alarm"
"""The bundle's auto-accept is suspended: audits showed (anytime-valid, at the bundle's δ) that the
precision of what it auto-accepts is below its certified target. A hold on the whole bundle (every
predicted code goes to review) until an admin lifts it or a recalibrated bundle replaces it; read
from the bundle's audit status (:mod:`medcoder.inference.audit_status`) on every predict call."""

AUDIT_STATUS_UNREADABLE = "audit_status_unreadable"
"""The bundle's audit status exists but cannot be trusted (unreadable, corrupt, another bundle's,
or the registry could not be asked): the bundle fails closed, every predicted code goes to review,
because a suspension nobody can read must not turn into auto-accepting."""

ALL_REASONS: tuple[str, ...] = (
    LOW_CONFIDENCE,
    RARE_CODE,
    EXCLUDES1_CONFLICT,
    INVALID_CODE,
    TRUNCATED_NOTE,
    EMPTY_NOTE,
    NEW_CODE,
    NEGATED_MENTION,
    SIBLING_CONFLICT,
    NO_EVIDENCE,
    AUDIT_ALARM,
    AUDIT_STATUS_UNREADABLE,
)
"""Every reason, in the fixed order used when reasons are listed."""

HOLDS: tuple[str, ...] = (AUDIT_ALARM, AUDIT_STATUS_UNREADABLE)
"""Reasons that hold a whole bundle (``RoutingInputs.hold``): set by the inference path from the
bundle's audit status, never by calibration or certification."""

AUTO_ACCEPT = "auto_accept"
HUMAN_REVIEW = "human_review"
DECISIONS: tuple[str, ...] = (AUTO_ACCEPT, HUMAN_REVIEW)
