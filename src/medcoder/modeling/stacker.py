"""The stacker: a small learned combiner over the views' scores, one row per (note, code).

Why stacking and not a fixed weighted sum: the views disagree in scale (logits, ridge outputs,
match precisions) and in where they are reliable (the dictionary is precise but sparse, the neural
view ranks well but is overconfident on rare codes). A logistic regression over per-pair features
learns that from data, and its coefficients stay readable (``coef_`` by feature name).

Features of a (note, code) pair, for each view ``v``: its score, ``-log(1 + rank of the code in
the note)`` and "in the note's top ``top_k``"; the dictionary's ``hit`` / ``negated`` flags; the
code's log training frequency; how many views put the code in their top ``top_k`` (agreement).
With ``interactions=True``, features that matter at the top of a note (issue 23): per view "in
the note's top 3" and how many views agree there, the dictionary's score where another view also
ranks the code in its top ``top_k``, and the best and worst ``-log(1 + rank)`` over the views.
A linear model cannot form these products or extremes itself; on the tuning split of CodiEsp-D
Spanish they raised MAP by 0.010 on 3 of 3 seeds (benchmarks/results/choices.md section 5).

Honesty contract (../shared/DESIGN.md): the stacker is fitted on **out-of-fold** scores over the
training split (each note scored by views that never saw it), or, for :class:`BlendedStacker`'s
second member, on the fitted views' scores of the tuning notes carved from train; never on the
labels that certify τ, nor on test. Its state is plain JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression

from medcoder.constraints import Constraint, int_at_least, is_bool, positive, validate
from medcoder.modeling.scorer import Scores

__all__ = ["BlendedStacker", "Stacker", "blend_logits", "interaction_features", "rank_in_note", "stacker_from_dict", "top3_features"]

_EPS = 1e-12


def rank_in_note(scores: np.ndarray) -> np.ndarray:
    """0-based rank of each code within its note (0 = highest score), ties broken by column."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(scores.shape[1])[None, :]
    return ranks


def top3_features(views: Sequence[str], ranks: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Per view "the code is in the note's top 3", and how many views agree on that."""
    cols = [(ranks[v] < 3).astype(np.float32) for v in views]
    return [*cols, np.sum(cols, axis=0, dtype=np.float32)], [*(f"{v}_top3" for v in views), "agreement_top3"]


def interaction_features(view_scores: Mapping[str, Scores], views: Sequence[str], ranks: Mapping[str, np.ndarray],
                         top_k: int) -> tuple[list[np.ndarray], list[str]]:
    """The dictionary's score where each other view ranks the code in its top ``top_k`` (a precise
    match another view also believes), and the best / worst ``-log(1 + rank)`` over the views."""
    cols: list[np.ndarray] = []
    names: list[str] = []
    if "dictionary" in views:
        for v in views:
            if v != "dictionary":
                cols.append(view_scores["dictionary"].scores * (ranks[v] < top_k))
                names.append(f"dictionary_x_{v}_top")
    log_ranks = [-np.log1p(ranks[v].astype(np.float32)) for v in views]
    return [*cols, np.maximum.reduce(log_ranks), np.minimum.reduce(log_ranks)], [*names, "best_rank", "worst_rank"]


class Stacker:
    """Logistic regression over per-(note, code) features of several views.

    Parameters
    ----------
    views:
        View names, in feature order (a view missing at scoring time is an error).
    top_k:
        "In the top k" threshold for the rank and agreement features.
    C:
        Inverse L2 regularisation of the logistic regression.
    flags:
        Flag names (from the views' ``Scores.flags``) used as 0/1 features when present.
    interactions:
        Add :func:`top3_features` and :func:`interaction_features` (off by default: chosen per
        recipe on the tuning split).

    Fitted state: ``coef_`` (one weight per feature name in ``feature_names_``), ``intercept_``,
    ``mean_``/``scale_`` (feature standardisation), ``n_rows_``.
    """

    #: Valid ranges of what a config sets (``fusion.stacker.*``), read by the config checks too.
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "top_k": Constraint(int_at_least(1), "an integer >= 1"),
        "C": Constraint(positive, "a number > 0"),
        "interactions": Constraint(is_bool, "true or false"),
    }

    def __init__(self, views: Sequence[str], top_k: int = 15, C: float = 1.0,
                 flags: Sequence[str] = ("hit", "negated"), interactions: bool = False) -> None:
        validate("fusion.stacker", {"top_k": top_k, "C": C, "interactions": interactions}, self.parameter_constraints)
        self.views = list(views)
        self.top_k = int(top_k)
        self.C = float(C)
        self.flags = list(flags)
        self.interactions = interactions

    # -- features -----------------------------------------------------------------------------
    def _interaction_columns(self, view_scores: Mapping[str, Scores], ranks: Mapping[str, np.ndarray]
                             ) -> tuple[list[np.ndarray], list[str]]:
        if not self.interactions:
            return [], []
        top3, top3_names = top3_features(self.views, ranks)
        inter, inter_names = interaction_features(view_scores, self.views, ranks, self.top_k)
        return [*top3, *inter], [*top3_names, *inter_names]

    def features(self, view_scores: Mapping[str, Scores], frequency: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """``(n_notes * n_codes, n_features)`` float32 matrix and its column names."""
        missing = [v for v in self.views if v not in view_scores]
        if missing:
            raise ValueError(f"stacker needs views {self.views}, missing {missing}")
        first = view_scores[self.views[0]].scores
        n, n_codes = first.shape
        cols: list[np.ndarray] = []
        names: list[str] = []
        agreement = np.zeros((n, n_codes), dtype=np.float32)
        ranks: dict[str, np.ndarray] = {}
        for v in self.views:
            s = view_scores[v].scores
            if s.shape != (n, n_codes):
                raise ValueError(f"view {v!r} scores have shape {s.shape}, expected {(n, n_codes)}")
            rank = ranks[v] = rank_in_note(s)
            top = (rank < self.top_k).astype(np.float32)
            agreement += top
            flags = [f for f in self.flags if f in view_scores[v].flags]
            cols += [s, -np.log1p(rank.astype(np.float32)), top, *(view_scores[v].flags[f].astype(np.float32)
                                                                   for f in flags)]
            names += [f"{v}_score", f"{v}_rank", f"{v}_top", *(f"{v}_{f}" for f in flags)]
        freq = np.log1p(np.asarray(frequency, dtype=np.float32))
        cols += [np.broadcast_to(freq[None, :], (n, n_codes)), agreement]
        names += ["log_train_frequency", "agreement"]
        extra, extra_names = self._interaction_columns(view_scores, ranks)
        x = np.stack([np.asarray(c, dtype=np.float32).reshape(-1) for c in [*cols, *extra]], axis=1)
        return x, names + extra_names

    # -- fit / score --------------------------------------------------------------------------
    def fit(self, view_scores: Mapping[str, Scores], frequency: np.ndarray, labels: np.ndarray) -> Stacker:
        """Fit on out-of-fold ``view_scores`` of the training notes and their 0/1 ``labels``."""
        x, names = self.features(view_scores, frequency)
        y = np.asarray(labels).reshape(-1).astype(np.int8)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"labels have {y.shape[0]} cells, features {x.shape[0]} rows")
        if y.min() == y.max():
            raise ValueError("the stacker needs both positive and negative (note, code) pairs")
        self.mean_ = x.mean(axis=0)
        self.scale_ = x.std(axis=0) + 1e-6
        lr = LogisticRegression(C=self.C, max_iter=1000)
        lr.fit((x - self.mean_) / self.scale_, y)
        self.coef_ = lr.coef_[0].astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        self.feature_names_ = names
        self.n_rows_ = int(x.shape[0])
        return self

    def decision_function(self, view_scores: Mapping[str, Scores], frequency: np.ndarray) -> np.ndarray:
        """Fused logits ``(n_notes, n_codes)``."""
        x, names = self.features(view_scores, frequency)
        if names != self.feature_names_:
            raise ValueError(f"features {names} differ from the fitted {self.feature_names_}")
        z = ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
        n, n_codes = view_scores[self.views[0]].scores.shape
        return z.reshape(n, n_codes).astype(np.float32)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"params": {"views": self.views, "top_k": self.top_k, "C": self.C, "flags": self.flags,
                                        "interactions": self.interactions}}
        if hasattr(self, "coef_"):
            d["state"] = {
                "feature_names": self.feature_names_,
                "coef": [float(c) for c in self.coef_],
                "intercept": self.intercept_,
                "mean": [float(m) for m in self.mean_],
                "scale": [float(s) for s in self.scale_],
                "n_rows": self.n_rows_,
            }
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Stacker:
        obj = cls(**d["params"])
        state = d.get("state")
        if state:
            obj.feature_names_ = list(state["feature_names"])
            obj.coef_ = np.asarray(state["coef"], dtype=np.float64)
            obj.intercept_ = float(state["intercept"])
            obj.mean_ = np.asarray(state["mean"], dtype=np.float32)
            obj.scale_ = np.asarray(state["scale"], dtype=np.float32)
            obj.n_rows_ = int(state["n_rows"])
        return obj

    def coefficients(self) -> dict[str, float]:
        """Standardised weight per feature name (what the stacker learned to trust)."""
        return dict(zip(self.feature_names_, (float(c) for c in self.coef_), strict=True))


class BlendedStacker:
    """The weighted mean of several fitted stackers' logits over the same views
    (``fusion.stacker_fit=blend``).

    Why: a stacker fitted on the fitted views' scores of held-out notes ranks a note's codes better
    than one fitted on out-of-fold train scores (tuning MAP +0.011 to +0.036), but alone, kept
    through the refit, it dirtied the very top of the global ranking that certification reads
    (dev lost 0.90 on ES-P and EN-P; ``benchmarks/results/choices.md`` sections 8-10). The mean of
    the two logits keeps one score (calibrator, τ and the coder's ranking stay one thing), and on
    all of train held out fifth by fifth it kept most of the MAP gain with the top as clean as the
    out-of-fold stacker's (section 10). Fixed weights and not learned ones: learning them would need
    labels that neither stacker saw, and there are none left to spare, so a recipe sets them
    (``fusion.stacker_blend_weight``, chosen on that same held-out judge).

    ``members``: name -> fitted :class:`Stacker`, every one over the same views in the same order;
    ``weights``: name -> its weight in the mean (positive, summing to 1; default equal).
    """

    def __init__(self, members: Mapping[str, Stacker], weights: Mapping[str, float] | None = None) -> None:
        if len(members) < 2:
            raise ValueError("a blend needs at least two stackers")
        first = next(iter(members.values()))
        for name, m in members.items():
            if m.views != first.views:
                raise ValueError(f"stacker {name!r} fuses views {m.views}, the first {first.views}")
        weights = dict(weights) if weights is not None else {n: 1.0 / len(members) for n in members}
        if set(weights) != set(members) or min(weights.values()) <= 0 or abs(sum(weights.values()) - 1) > 1e-9:
            raise ValueError(f"blend weights {weights} must be positive, one per stacker {list(members)}, summing to 1")
        self.members = dict(members)
        self.weights = {n: float(weights[n]) for n in members}
        self.views = list(first.views)
        self.top_k = first.top_k

    def decision_function(self, view_scores: Mapping[str, Scores], frequency: np.ndarray) -> np.ndarray:
        """The members' weighted mean fused logits ``(n_notes, n_codes)``."""
        return blend_logits({n: m.decision_function(view_scores, frequency) for n, m in self.members.items()},
                            self.weights)

    def to_dict(self) -> dict[str, Any]:
        """The first member's ``params`` on top (what :func:`medcoder.modeling.hybrid.view_names` and
        the model card read), the members under ``blend``, their weights under ``weights``."""
        first = next(iter(self.members.values()))
        return {"params": first.to_dict()["params"], "blend": {n: m.to_dict() for n, m in self.members.items()},
                "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BlendedStacker:
        return cls({str(n): Stacker.from_dict(m) for n, m in d["blend"].items()}, d.get("weights"))

    def coefficients(self) -> dict[str, float]:
        """Each member's standardised weights, prefixed by its name."""
        return {f"{n}:{k}": v for n, m in self.members.items() for k, v in m.coefficients().items()}


def blend_logits(logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_n weights[n] * logits[n]`` as float32: the one blend formula, for a
    :class:`BlendedStacker` and for a run's cross-fitted tuning logits alike."""
    return sum(float(weights[n]) * np.asarray(z, dtype=np.float64) for n, z in logits.items()).astype(np.float32)


def stacker_from_dict(d: Mapping[str, Any]) -> Stacker | BlendedStacker:
    """A ``stacker.json``'s stacker: a blend where it has ``blend`` members, else one stacker."""
    return BlendedStacker.from_dict(d) if "blend" in d else Stacker.from_dict(d)
