"""medcoder.routing: every predicted code -> auto_accept | human_review, with reasons.

Plot helpers live in :mod:`medcoder.routing.plots` (imported on demand).
"""

from medcoder.routing.evaluation import accept_frontier, precision_coverage_curve, routing_metrics
from medcoder.routing.policy import (
    RULES,
    CodeDecision,
    RoutingInputs,
    RoutingPolicy,
    document_decision,
)
from medcoder.routing.reasons import (
    ALL_REASONS,
    AUDIT_ALARM,
    AUDIT_STATUS_UNREADABLE,
    AUTO_ACCEPT,
    EMPTY_NOTE,
    EXCLUDES1_CONFLICT,
    HUMAN_REVIEW,
    INVALID_CODE,
    LOW_CONFIDENCE,
    NEW_CODE,
    RARE_CODE,
    TRUNCATED_NOTE,
)

__all__ = [
    "ALL_REASONS",
    "AUDIT_ALARM",
    "AUDIT_STATUS_UNREADABLE",
    "AUTO_ACCEPT",
    "EMPTY_NOTE",
    "EXCLUDES1_CONFLICT",
    "HUMAN_REVIEW",
    "INVALID_CODE",
    "LOW_CONFIDENCE",
    "NEW_CODE",
    "RARE_CODE",
    "TRUNCATED_NOTE",
    "CodeDecision",
    "RULES",
    "RoutingInputs",
    "RoutingPolicy",
    "accept_frontier",
    "document_decision",
    "precision_coverage_curve",
    "routing_metrics",
]
