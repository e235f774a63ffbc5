"""The hybrid scorer: several views (the registered ones, :mod:`medcoder.modeling.views`) fused by a
:class:`Stacker`.

One object scores notes for training evaluation, calibration and the inference path, so a fused
logit means the same everywhere. With one view and no stacker it is exactly that view (the
neural-only coder of earlier bundles).

Folder layout (inside a run's outputs and a bundle)::

    model/                 the neural view (HF save_pretrained + tokenizer), when present
    scorers/<name>/        every other view, as written by its ``save`` (JSON / npz, no pickle)
    stacker.json           the fitted stacker (absent: a single view, used as is)

Nothing here is about one particular view except the neural one's folder and inference options
(``model/``, batch size, cache: :data:`~medcoder.modeling.views.NEURAL`): the evidence order and the
routing flags come from each view's class (:attr:`Scorer.evidence_rank`, :meth:`Scorer.routing_flags`).

:func:`note_flags` is every per-(note, code) fact the routing rules read for fused scores: the views'
own flags and :func:`evidence_flags` (``no_evidence``). Calibration and ``Coder.predict`` both call it
(through :func:`medcoder.inference.coder.routing_inputs`), so τ is certified on the codes the bundle
will accept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.atomic import atomic_write_text
from medcoder.modeling import views as view_table
from medcoder.modeling.scorer import Scorer, Scores, Span
from medcoder.modeling.stacker import BlendedStacker, Stacker, rank_in_note, stacker_from_dict
from medcoder.modeling.views import NEURAL, routing_flags

__all__ = ["FusedScores", "HybridScorer", "NO_EVIDENCE_FLAG", "STACKER_FILE", "SCORERS_DIR", "NEURAL_DIR", "TUNING_MODEL_DIR",
           "evidence_flags", "note_flags", "routing_flags", "view_names"]

STACKER_FILE = "stacker.json"
SCORERS_DIR = "scorers"
NEURAL_DIR = "model"
#: A run refitted on its tuning notes (``certification.refit``) keeps here the model that scored
#: them before it saw them (scorers/, stacker.json, labels.json): calibrate fits on its scores.
TUNING_MODEL_DIR = "tuning_model"

#: The routing reason the evidence flag feeds (``medcoder.routing.reasons.NO_EVIDENCE``; spelled
#: here because modeling sits below routing, as the dictionary's ``negated_mention``; a unit test
#: checks both names agree).
NO_EVIDENCE_FLAG = "no_evidence"


@dataclass
class FusedScores:
    """Fused logits plus each view's own scores, flags and evidence for the same notes."""

    logits: np.ndarray
    views: dict[str, Scores]
    truncated: np.ndarray
    support_top_k: int = 15
    _ranks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _evidence: dict[tuple[int, int], list[Span]] = field(default_factory=dict, repr=False)

    def _rank(self, view: str) -> np.ndarray:
        if view not in self._ranks:
            self._ranks[view] = rank_in_note(self.views[view].scores)
        return self._ranks[view]

    def sources_for(self, i: int, j: int) -> list[str]:
        """Views that support code ``j`` in note ``i``: a non-negated dictionary match, or the
        code among the view's ``support_top_k`` highest scores for the note."""
        out = []
        for name, s in self.views.items():
            if "hit" in s.flags:
                negated = s.flags.get("negated")
                supported = bool(s.flags["hit"][i, j]) and not (negated is not None and bool(negated[i, j]))
            else:
                supported = bool(self._rank(name)[i, j] < self.support_top_k)
            if supported:
                out.append(name)
        return out

    def evidence_for(self, i: int, j: int) -> list[Span]:
        """Every view's evidence spans for code ``j`` in note ``i`` (each span names its source), in
        the views' ``evidence_rank`` order (exact mention matches first, then attention, ...).

        Computed once per (note, code) (the routing flag and the prediction both ask); each call
        returns fresh span dicts, so a caller may change its copy."""
        key = (int(i), int(j))
        if key not in self._evidence:
            names = sorted(self.views, key=view_table.evidence_rank)
            spans: list[Span] = []
            for name in names:
                spans += [{**sp, "source": sp.get("source", name)} for sp in self.views[name].evidence_for(i, j)]
            self._evidence[key] = spans
        return [dict(sp) for sp in self._evidence[key]]

    def flag(self, view: str, name: str) -> np.ndarray | None:
        """A view's flag matrix, or None when the view or flag is absent."""
        s = self.views.get(view)
        return None if s is None else s.flags.get(name)


def evidence_flags(fused: FusedScores, candidates: np.ndarray) -> dict[str, np.ndarray]:
    """``{"no_evidence": (n_notes, n_codes) bool}``: the ``candidates`` for which no view gave a span.

    Why only candidates: evidence is costly for some views (attention spans are built per code on
    demand), and a rule only ever fires on predicted codes. Callers pass the policy's predicted
    codes (:meth:`~medcoder.routing.RoutingPolicy.predicted_mask`); every code the policy can
    auto-accept is predicted, so the flag is exact for the accepted set (not an estimate on a
    superset of it). Outside ``candidates`` the flag is False: no decision reads it there.
    Evidence comes from :meth:`FusedScores.evidence_for` (the spans ``Coder.predict`` shows), so a
    code is flagged exactly when its prediction would carry no evidence; scores computed without
    evidence (``evidence=False``) flag every candidate.
    """
    mask = np.asarray(candidates, dtype=bool)
    if mask.shape != fused.logits.shape:
        raise ValueError(f"candidates have shape {mask.shape}, the fused scores {fused.logits.shape}")
    missing = np.zeros_like(mask)
    for i, j in zip(*np.nonzero(mask), strict=True):
        missing[i, j] = not fused.evidence_for(int(i), int(j))
    return {NO_EVIDENCE_FLAG: missing}


def note_flags(fused: FusedScores, candidates: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-(note, code) flag the routing rules read for fused scores, named by reason: the
    views' own (:func:`routing_flags`, e.g. ``negated_mention``) and :func:`evidence_flags` for
    ``candidates``. The one source of flags for calibration and ``Coder.predict``; a reason flagged
    twice is OR-ed (either one sends the code to a human)."""
    out = routing_flags(fused.views)
    for reason, flag in evidence_flags(fused, candidates).items():
        out[reason] = out[reason] | flag if reason in out else flag
    return out


def view_names(directory: str | Path) -> list[str]:
    """The views a run or bundle folder holds: those its ``stacker.json`` names (in the stacker's
    order; without ``neural`` the folder has no ``model/``), else the lone neural view."""
    path = Path(directory) / STACKER_FILE
    if not path.is_file():
        return [NEURAL]
    return [str(v) for v in json.loads(path.read_text())["params"]["views"]]


class HybridScorer:
    """Views + optional stacker over one code list (the LabelSpace's order)."""

    def __init__(self, views: Mapping[str, Scorer], stacker: Stacker | BlendedStacker | None, frequency: Sequence[int] | np.ndarray,
                 *, support_top_k: int = 15) -> None:
        if not views:
            raise ValueError("a hybrid scorer needs at least one view")
        self.views = dict(views)
        codes = {name: list(v.codes) for name, v in self.views.items()}
        first = next(iter(codes.values()))
        for name, c in codes.items():
            if c != first:
                raise ValueError(f"view {name!r} has a different code list than {next(iter(codes))!r}")
        if stacker is None and len(self.views) > 1:
            raise ValueError("several views need a fitted stacker to be fused")
        if stacker is not None and set(stacker.views) - set(self.views):
            raise ValueError(f"the stacker needs views {stacker.views}, have {list(self.views)}")
        self.codes = first
        self.stacker = stacker
        self.frequency = np.asarray(frequency, dtype=np.float32)
        if self.frequency.shape != (len(first),):
            raise ValueError(f"{self.frequency.shape[0]} frequencies for {len(first)} codes")
        self.support_top_k = int(support_top_k)

    @property
    def neural(self) -> Scorer | None:
        return self.views.get(NEURAL)

    def score_views(self, texts: Sequence[str], *, evidence: bool = False, exclude: Sequence[str] = (),
                    **neural_kw: Any) -> dict[str, Scores]:
        """Each view's :class:`Scores` (except ``exclude``: views the caller already scored);
        ``neural_kw`` (batch size, progress, cache, evidence_top_k) go to the neural view only."""
        out = {}
        for name, view in self.views.items():
            if name not in exclude:
                out[name] = view.score(texts, evidence=evidence, **(neural_kw if name == NEURAL else {}))
        return out

    def fuse(self, view_scores: Mapping[str, Scores]) -> np.ndarray:
        """Fused logits of already computed view scores (one view and no stacker: that view's)."""
        if self.stacker is None:
            return next(iter(view_scores.values())).scores
        return self.stacker.decision_function(view_scores, self.frequency)

    def score(self, texts: Sequence[str], *, evidence: bool = False, **neural_kw: Any) -> FusedScores:
        texts = list(texts)
        views = self.score_views(texts, evidence=evidence, **neural_kw)
        truncated = np.zeros(len(texts), dtype=bool)
        for s in views.values():
            if s.truncated is not None:
                truncated |= np.asarray(s.truncated, dtype=bool)
        return FusedScores(self.fuse(views), views, truncated, self.support_top_k)

    # -- folders ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        root = Path(directory)
        neural = self.views.get(NEURAL)
        if neural is not None:
            (root / NEURAL_DIR).mkdir(parents=True, exist_ok=True)
            neural.save(root / NEURAL_DIR)
        self.save_extra(root)

    def save_extra(self, directory: str | Path) -> None:
        """Everything but the neural view's ``model/`` (which training saves with its tokenizer)."""
        root = Path(directory)
        for name, view in self.views.items():
            if name == NEURAL:
                continue
            target = root / SCORERS_DIR / name
            target.mkdir(parents=True, exist_ok=True)
            view.save(target)
        if self.stacker is not None:
            atomic_write_text(root / STACKER_FILE, json.dumps(
                {**self.stacker.to_dict(), "support_top_k": self.support_top_k}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, frequency: Sequence[int] | np.ndarray, *, device: str = "cpu") -> HybridScorer:
        """Views named by ``stacker.json`` (or the lone neural view in ``model/``), by registry
        name: no code from the folder is imported or run."""
        root = Path(directory)
        stacker, support_top_k = None, 15
        if (root / STACKER_FILE).is_file():
            d = json.loads((root / STACKER_FILE).read_text())
            stacker = stacker_from_dict(d)
            support_top_k = int(d.get("support_top_k", 15))
        views: dict[str, Scorer] = {}
        for name in view_names(root):
            if not view_table.is_view(name):
                raise ValueError(f"unknown view {name!r} (known: {sorted(view_table.registered_views())})")
            cls_ = view_table.scorer_class(name)
            if name == NEURAL:
                views[name] = cls_.load(root / NEURAL_DIR, device=device)  # type: ignore[call-arg]
            else:
                views[name] = cls_.load(root / SCORERS_DIR / name)
        return cls(views, stacker, frequency, support_top_k=support_top_k)
