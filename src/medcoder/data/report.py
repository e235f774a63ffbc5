"""What a loader skipped, so callers can log it, test it and put it in a run's metadata.

Why a report object and not just log lines: a silent skip policy is only acceptable when the
numbers are visible to the caller (a test, the train script, a data-quality check).
Only document ids are recorded — never note text, which may be sensitive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger("medcoder.data")


@dataclass
class SplitReport:
    """Counts for one split; ``*_ids`` list the affected document ids (sorted, unique)."""

    n_docs: int = 0
    n_labels: int = 0
    n_docs_without_codes: int = 0
    empty_note_ids: list[str] = field(default_factory=list)
    n_labels_without_text: int = 0
    labels_without_text_ids: list[str] = field(default_factory=list)
    n_duplicate_labels: int = 0

    @property
    def n_skipped(self) -> int:
        """Rows (notes + label rows) dropped by the ``on_error="skip"`` policy."""
        return len(self.empty_note_ids) + self.n_labels_without_text


@dataclass
class LoadReport:
    """Per-split :class:`SplitReport` for one load call."""

    splits: dict[str, SplitReport] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(s.n_skipped for s in self.splits.values())

    def log(self, source: str) -> None:
        """Log one line per split; a warning when anything was skipped (ids only, never text)."""
        for name, s in self.splits.items():
            logger.info(
                "%s %s: %d docs, %d labels, %d docs without codes, %d duplicate labels",
                source, name, s.n_docs, s.n_labels, s.n_docs_without_codes, s.n_duplicate_labels,
            )
            if s.empty_note_ids:
                logger.warning(
                    "%s %s: skipped %d empty notes: %s",
                    source, name, len(s.empty_note_ids), ", ".join(s.empty_note_ids),
                )
            if s.n_labels_without_text:
                logger.warning(
                    "%s %s: skipped %d label rows for %d ids without a text file: %s",
                    source, name, s.n_labels_without_text, len(s.labels_without_text_ids),
                    ", ".join(s.labels_without_text_ids),
                )
