"""The review store's failure families, all :class:`~medcoder.errors.MedcoderError` subclasses.

Why separate types: the web app turns each into its own answer (a conflict page, a "your lease
expired" banner, a login form with a wait) without parsing messages. Every message names ids and
codes only, never note text (note text is PHI).
"""

from __future__ import annotations

from medcoder.errors import MedcoderError

__all__ = ["AuthError", "ConflictError", "ForbiddenError", "LeaseError", "NotFoundError", "ReviewError"]


class ReviewError(MedcoderError):
    """A review action or store operation was refused (bad code, missing comment, locked DB...)."""


class NotFoundError(ReviewError):
    """No such note, bundle or user."""


class ConflictError(ReviewError):
    """Someone else wrote to the note first (stale version, already submitted): reload, re-decide."""


class LeaseError(ReviewError):
    """The note is held by another reviewer, or the caller's lease expired / is not theirs."""


class AuthError(ReviewError):
    """Bad credentials, or too many failed logins (the message says how long to wait)."""


class ForbiddenError(AuthError):
    """The user is authenticated but their role may not do this (an auditor deciding a code)."""
