"""The scorer interface: notes -> one score per (note, code) over a LabelSpace, with evidence.

Why one small interface: the coder fuses several views of a note (the neural label-attention
model, a sparse TF-IDF model, a mention dictionary) and a stacker learns how much to trust each.
Each view plugs in by implementing ``fit`` / ``score`` / ``save`` / ``load``; nothing above the
modeling layer knows which views exist: the one table of views is :data:`medcoder.modeling.views.SCORERS`.

Why per-view hooks on the class (:attr:`Scorer.evidence_rank`, :attr:`Scorer.fit_resources`,
:meth:`Scorer.fit_problems`, :meth:`Scorer.routing_flags`): what used to be written about one view
in the fusion workflow ("the dictionary's fit needs mentions and descriptions", "a dictionary
without a lexicon is a config error") and in the hybrid scorer ("dictionary evidence first", "the
dictionary's ``negated`` flag is the ``negated_mention`` reason") now lives with that view. Adding
a view is its own module, one line in the registry and its parameter block in
``configs/fusion/*.yaml``; the defaults below make a plain ``fit``/``score`` view need nothing else.

Conventions every scorer follows:

* ``score`` returns :class:`Scores` whose ``scores`` are *monotone* in the view's belief (a
  logit, a probability or a match strength; higher = more likely). Fusion never assumes a scale.
* Evidence spans are character offsets into the note (``start``, ``end``, ``weight``,
  ``source``), never copied text.
* ``flags`` carry per-(note, code) booleans a view knows and routing or the stacker may use
  (e.g. ``"hit"``: the dictionary matched a mention, ``"negated"``: every match was negated).
* ``save`` writes JSON / npz / safetensors only (bundles hold no pickle, ../shared/DESIGN.md);
  ``load`` reads them back without running any code from the folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["FIT_RESOURCES", "Scorer", "Scores", "Span"]

Span = dict[str, Any]
"""``{"start": int, "end": int, "weight": float, "source": str}`` (+ optional ``"negated": bool``)."""

#: What a training run can hand a view's ``fit`` beyond ``(texts, labels, codes)``, by keyword:
#: ``mentions`` (gold mention spans per training note, aligned with ``texts``: cut to the fold in
#: out-of-fold fits), ``descriptions`` (code -> wording of the code set), ``language`` (of the notes).
#: The training workflow supplies whichever of them the corpus has (``medcoder.workflows.fusion``).
FIT_RESOURCES = ("mentions", "descriptions", "language")


@dataclass
class Scores:
    """What a scorer says about a batch of notes.

    ``scores``: ``(n_notes, n_codes)`` float32, columns in the LabelSpace's order.
    ``evidence``: per note, ``{code index: [Span, ...]}`` (only where the view has evidence);
    ``None`` when evidence was not asked for.
    ``flags``: name -> ``(n_notes, n_codes)`` bool.
    ``evidence_lookup``: ``(note, code index) -> spans`` computed on demand, for views whose
    evidence is costly to build for every code (attention: only predicted codes need it).
    ``truncated``: ``(n_notes,)`` notes the view read only in part (None: it read them whole).
    """

    scores: np.ndarray
    evidence: list[dict[int, list[Span]]] | None = None
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    evidence_lookup: Callable[[int, int], list[Span]] | None = None
    truncated: np.ndarray | None = None

    def evidence_for(self, i: int, j: int) -> list[Span]:
        """Evidence spans of code column ``j`` in note ``i`` (empty when the view has none)."""
        if self.evidence is not None:
            return list(self.evidence[i].get(j, []))
        return self.evidence_lookup(i, j) if self.evidence_lookup is not None else []

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.scores.ndim != 2:
            raise ValueError(f"scores must be (n_notes, n_codes), got shape {self.scores.shape}")
        if self.evidence is not None and len(self.evidence) != self.scores.shape[0]:
            raise ValueError(f"{len(self.evidence)} evidence rows for {self.scores.shape[0]} notes")
        for name, flag in self.flags.items():
            if np.shape(flag) != self.scores.shape:
                raise ValueError(f"flag {name!r} has shape {np.shape(flag)}, expected {self.scores.shape}")


class Scorer(ABC):
    """A view of a note: fit on (texts, label matrix), score new texts, save/load without pickle."""

    #: Stable name: the ``source`` of its evidence spans, its folder in a bundle, the config key.
    name: ClassVar[str]

    #: Where this view's evidence goes in a fused code's list (lower first): what an auditor checks
    #: fastest comes first (exact mention matches before attention before n-gram weights).
    evidence_rank: ClassVar[int] = 90

    #: The :data:`FIT_RESOURCES` this view's ``fit`` takes as keyword arguments when the run has them.
    fit_resources: ClassVar[tuple[str, ...]] = ()

    codes: list[str]

    @classmethod
    def fit_problems(cls, available: Collection[str]) -> list[str]:
        """What makes this view unusable for a run offering the ``available`` fit resources, in
        words (one clause each), checked before anything trains; empty: nothing."""
        return []

    @classmethod
    def routing_flags(cls, scores: Scores) -> dict[str, np.ndarray]:
        """Per-(note, code) facts from this view's :class:`Scores` that the routing rules use,
        named by their reason (e.g. ``negated_mention``); empty: the view feeds no rule."""
        return {}

    @abstractmethod
    def fit(self, texts: Sequence[str], labels: np.ndarray, codes: Sequence[str], **kwargs: Any) -> Scorer:
        """Learn from training notes; ``labels`` is ``(n_notes, len(codes))`` 0/1. (The neural
        view is trained by :mod:`medcoder.training` instead and raises here.)"""

    @abstractmethod
    def score(self, texts: Sequence[str], *, evidence: bool = False) -> Scores:
        """Scores for every code of ``self.codes`` (same column order)."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the fitted state as JSON / npz / safetensors files into ``directory``."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Scorer:
        """Read what :meth:`save` wrote (no code execution, no pickle)."""

