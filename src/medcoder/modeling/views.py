"""The one table of views: ``fusion.views`` names -> :class:`~medcoder.modeling.scorer.Scorer` classes.

Why an explicit table (:class:`medcoder.registry.Registry`) instead of a ``@register_scorer``
decorator: a decorator filled the table as a side effect of importing the view's module, so
whether ``"dictionary"`` was a known view depended on what had been imported before. Here the
shipped views are one literal, visible line each, and everything that needs a view by name (the
fusion plan, the config checks, :meth:`HybridScorer.load <medcoder.modeling.hybrid.HybridScorer.load>`,
the routing flags) asks this module.

Adding a view: its module (a :class:`Scorer` with its per-view hooks), one line below, and its
parameter block in ``configs/fusion/*.yaml``. Tests and plug-ins extend the table without editing
it: ``monkeypatch.setattr(medcoder.modeling.views, "SCORERS", SCORERS.with_entry("toy", Toy))``;
the functions here read :data:`SCORERS` when called, so such a swap is seen everywhere (a name
bound by ``from medcoder.modeling.views import SCORERS`` elsewhere is not; use the functions).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medcoder.modeling.dictionary import DictionaryScorer
from medcoder.modeling.neural import NeuralScorer
from medcoder.modeling.scorer import Scorer, Scores
from medcoder.modeling.tfidf import TfidfScorer
from medcoder.registry import Registry

__all__ = ["NEURAL", "SCORERS", "evidence_rank", "is_view", "registered_views", "routing_flags", "scorer_class"]

#: The neural label-attention view: the one view trained by :mod:`medcoder.training` (HF Trainer,
#: encoder, checkpoints) rather than by ``fit``, and the one saved as ``model/`` in a bundle. The
#: workflows name it through this constant, never by its literal.
NEURAL: str = NeuralScorer.name

SCORERS: Registry[type[Scorer]] = Registry("fusion.views", {
    "neural": NeuralScorer,
    "tfidf": TfidfScorer,
    "dictionary": DictionaryScorer,
})


def scorer_class(name: str) -> type[Scorer]:
    """The view called ``name``; an unknown name is a one-line ``ConfigError`` (``fusion.views``)."""
    return SCORERS.lookup(name)


def is_view(name: str) -> bool:
    """Whether ``name`` is a registered view."""
    return name in SCORERS


def registered_views() -> list[str]:
    """Every registered view's name, in table order."""
    return list(SCORERS)


def evidence_rank(name: str) -> int:
    """Where view ``name``'s evidence goes in a fused code's list (its class's ``evidence_rank``;
    a view outside the table goes last)."""
    cls = SCORERS.get(name)
    return cls.evidence_rank if cls is not None else Scorer.evidence_rank + 1


def routing_flags(views: Mapping[str, Scores]) -> dict[str, np.ndarray]:
    """Per-(note, code) facts the routing rules may use, named by their reason: what each view's
    :meth:`Scorer.routing_flags` contributes (today the dictionary's ``negated_mention``). Two views
    flagging the same reason are OR-ed (either one sends the code to a human). The same function
    feeds calibration (which certifies τ on the eligible codes) and inference, so both route alike."""
    out: dict[str, np.ndarray] = {}
    for name, scores in views.items():
        cls = SCORERS.get(name)
        if cls is None:
            continue
        for reason, flag in cls.routing_flags(scores).items():
            flag = np.asarray(flag, dtype=bool)
            out[reason] = out[reason] | flag if reason in out else flag
    return out
