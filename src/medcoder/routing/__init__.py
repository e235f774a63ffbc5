"""medcoder.routing: every predicted code -> auto_accept | human_review, with reasons.

Plot helpers live in :mod:`medcoder.routing.plots` (imported on demand).
"""

from medcoder.routing.evaluation import precision_coverage_curve, routing_metrics
from medcoder.routing.policy import (
    CodeDecision,
    RoutingPolicy,
    default_is_valid,
    document_decision,
)
from medcoder.routing.reasons import (
    ALL_REASONS,
    AUTO_ACCEPT,
    EMPTY_NOTE,
    EXCLUDES1_CONFLICT,
    HUMAN_REVIEW,
    INVALID_CODE,
    LOW_CONFIDENCE,
    RARE_CODE,
    TRUNCATED_NOTE,
)

__all__ = [
    "ALL_REASONS",
    "AUTO_ACCEPT",
    "EMPTY_NOTE",
    "EXCLUDES1_CONFLICT",
    "HUMAN_REVIEW",
    "INVALID_CODE",
    "LOW_CONFIDENCE",
    "RARE_CODE",
    "TRUNCATED_NOTE",
    "CodeDecision",
    "RoutingPolicy",
    "default_is_valid",
    "document_decision",
    "precision_coverage_curve",
    "routing_metrics",
]
