"""Small helpers shared by the corpus loaders (policy checks, dataset construction)."""

from __future__ import annotations

from collections.abc import Sequence

import datasets

from medcoder.errors import ConfigError

ON_ERROR = ("skip", "raise")

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "text": datasets.Value("string"),
        "codes": datasets.Sequence(datasets.Value("string")),
    }
)


def check_on_error(on_error: str) -> None:
    """Reject a typo'd policy up front; a wrong value must not silently mean "skip"."""
    if on_error not in ON_ERROR:
        raise ConfigError(
            f"data.on_error={on_error!r} is not a known policy",
            hint=f"use one of {', '.join(ON_ERROR)}",
        )


def is_empty_note(text: str) -> bool:
    """A note with no non-whitespace character carries no evidence for any code."""
    return not text.strip()


def build_dataset(ids: Sequence[str], texts: Sequence[str], codes: Sequence[list[str]]) -> datasets.Dataset:
    """Build a Dataset with explicit features, so an all-empty ``codes`` column keeps its type."""
    return datasets.Dataset.from_dict(
        {"id": list(ids), "text": list(texts), "codes": [list(c) for c in codes]},
        features=FEATURES,
    )
