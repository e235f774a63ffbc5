"""One exception type per failure family, so scripts can turn them into one clear line + exit 2.

Each error names *where* (file, field, line or id), *what* (the offending value) and *what to do*.
"""

from __future__ import annotations


class MedcoderError(Exception):
    """Base class: a user-facing error with a one-line message and a hint."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}" + (f" — {hint}" if hint else ""))


class DataError(MedcoderError):
    """A corpus file, row or field is missing or malformed."""


class BundleError(MedcoderError):
    """A model bundle is missing, tampered with, or of an unknown schema version."""


class ConfigError(MedcoderError):
    """A configuration value is invalid or inconsistent."""
