"""The label space: which codes the model predicts, in which column order, and how often each was
seen in training.

Why a dedicated object: the column order of the classifier head, the multi-hot targets, the
bundle's ``labels.json`` and the recall ceiling (``label_coverage``) must all agree. Building the
space once from the training split and serialising it with the bundle keeps them in lock-step.

Order is by descending training frequency, then code, so the same training data always gives the
same columns (and ``top_k`` keeps the most frequent codes).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcoder.atomic import atomic_write_text
from medcoder.errors import DataError

SCHEMA_VERSION = 1


@dataclass
class LabelSpace:
    """Ordered codes plus their training frequency, descriptions and code-set fiscal year.

    Treat ``codes`` as immutable after construction: :attr:`index` is computed once.
    """

    codes: list[str]
    frequency: dict[str, int] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    codeset_fy: int | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.codes = list(self.codes)
        self._index = {c: i for i, c in enumerate(self.codes)}
        if len(self._index) != len(self.codes):
            dupes = sorted(c for c, n in Counter(self.codes).items() if n > 1)
            raise ValueError(f"duplicate codes in label space: {dupes[:10]}")

    @classmethod
    def from_codes(
        cls,
        code_lists: Iterable[list[str]],
        *,
        min_count: int = 1,
        top_k: int | None = None,
        codeset_fy: int | None = None,
    ) -> LabelSpace:
        """Build a space from training labels: codes seen in >= ``min_count`` documents, the
        ``top_k`` most frequent of those if given. Frequency counts documents, not mentions."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
        counts: Counter[str] = Counter()
        for codes in code_lists:
            counts.update(set(codes))
        ranked = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        if top_k is not None:
            ranked = ranked[:top_k]
        return cls(codes=ranked, frequency={c: counts[c] for c in ranked}, codeset_fy=codeset_fy)

    @property
    def index(self) -> dict[str, int]:
        """Code -> column index."""
        return self._index

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: object) -> bool:
        return code in self._index

    def encode(self, code_lists: Iterable[list[str]]) -> np.ndarray:
        """Multi-hot float32 matrix ``(n_docs, n_labels)``; codes outside the space are ignored
        (they still count against recall through :meth:`coverage` and the evaluation)."""
        lists = list(code_lists)
        out = np.zeros((len(lists), len(self.codes)), dtype=np.float32)
        for row, codes in enumerate(lists):
            cols = [self._index[c] for c in codes if c in self._index]
            out[row, cols] = 1.0
        return out

    def coverage(self, code_lists: Iterable[list[str]]) -> float:
        """Share of gold (document, code) pairs whose code is in the space: the recall ceiling.

        Returns ``nan`` when there are no gold codes at all: a ceiling of 1.0 would make an
        empty or unlabeled split look perfect, and nan is loud in metrics tables.
        """
        total = inside = 0
        for codes in code_lists:
            unique = set(codes)
            total += len(unique)
            inside += sum(1 for c in unique if c in self._index)
        return inside / total if total else math.nan

    def frequency_array(self) -> np.ndarray:
        """Training frequency of each code, in label order, float32 (what the stacker and the
        scorers read; 0 for a code the space lists without a count)."""
        return np.array([self.frequency.get(c, 0) for c in self.codes], dtype=np.float32)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "codes": self.codes,
            "frequency": {c: self.frequency[c] for c in self.codes if c in self.frequency},
            "descriptions": {c: self.descriptions[c] for c in self.codes if c in self.descriptions},
            "codeset_fy": self.codeset_fy,
        }

    def to_json(self, path: str | Path) -> None:
        """Write atomically (temp file + ``os.replace``) so a crash never leaves half a file."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> LabelSpace:
        """Read a file written by :meth:`to_json`; any problem is a ``DataError`` naming it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: label file not found", hint="is this a bundle directory?")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})", hint="the file is corrupt") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}: expected a JSON object")
        version = obj.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(
                f"{path}: schema_version={version!r}, this medcoder reads {SCHEMA_VERSION}",
                hint="re-export the labels with a matching medcoder version",
            )
        codes, freq, desc, fy = (obj.get(k) for k in ("codes", "frequency", "descriptions", "codeset_fy"))
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise DataError(f"{path}: field 'codes' must be a list of strings")
        if not isinstance(freq, dict) or not all(isinstance(v, int) for v in freq.values()):
            raise DataError(f"{path}: field 'frequency' must map codes to integers")
        if not isinstance(desc, dict) or not all(isinstance(v, str) for v in desc.values()):
            raise DataError(f"{path}: field 'descriptions' must map codes to strings")
        if fy is not None and (isinstance(fy, bool) or not isinstance(fy, int)):
            raise DataError(f"{path}: field 'codeset_fy' must be an integer or null, got {fy!r}")
        try:
            return cls(codes=codes, frequency=freq, descriptions=desc, codeset_fy=fy)
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from exc
