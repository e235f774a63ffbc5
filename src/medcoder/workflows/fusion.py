"""The fused (hybrid) coder inside ``scripts/train.py``: extra views, out-of-fold scores, stacker.

Who fits what (the honesty contract, ../shared/DESIGN.md, and README "Which split fits what"):

* every view (neural head, tfidf, dictionary) is fitted on **train**; the dictionary's mentions
  are the CodiEsp-X spans of **train** only;
* the stacker is fitted on **out-of-fold** scores over **train** (K-fold cross-fitting:
  :mod:`medcoder.training.oof`), or, with ``fusion.stacker_fit=tuning`` (no refit; in no shipped
  recipe), on the fitted views' scores of the tuning notes carved from train
  (:func:`fit_stacker_on_tuning`; never the labels that certify τ), or, with
  ``fusion.stacker_fit=blend``, both, their logits averaged
  (:class:`~medcoder.modeling.stacker.BlendedStacker`, kept through the refit);
* **dev** only early-stops the neural head (as before) — the calibrator, the decision threshold
  and τ are fitted / certified on dev later by ``scripts/calibrate.py``;
* **test** is scored for evaluation only.

``fusion.views`` may omit the neural view (e.g. ``[tfidf,dictionary]``): then no encoder exists at
all and :func:`fit_fusion` is called without :class:`NeuralInputs`; even a single such view goes
through the stacker, so the run's ``stacker.json`` names its views (what ``HybridScorer.load``
reads in place of a ``model/`` folder).

Nothing here reads the config or knows a view by name but the neural one (trained by
:mod:`medcoder.training`, not by ``fit``): the views, their parameters and the fold counts come in
a :class:`FusionPlan` built once at the door of ``train()`` (``factories.build_fusion_plan``);
what each view's ``fit`` takes beyond ``(texts, labels, codes)`` is the view's own declaration
(``Scorer.fit_resources``), served from :func:`fit_resources` — the one place that knows where a
corpus keeps gold mention spans and code wording.

Why :class:`FusionPlan` lives here and not in ``modeling``: it is a *run's* choice — which of the
registered views this training fuses, the K of its out-of-fold fits, the fit resources its corpus
offers (derived from the ``data`` group) — and :func:`fit_fusion` is its only reader. The modeling
layer keeps what a view *is* (its class, its hooks, the one table of views,
:mod:`medcoder.modeling.views`) and receives only the products of the plan: fresh scorers
(:meth:`FusionPlan.make`) and an unfitted stacker (:meth:`FusionPlan.stacker`). So nothing below
the workflows is handed the list of views to re-derive or re-judge it (measured with
``benchmarks/param_walk.py --walk train-views``: with the plan in ``modeling`` every question the
workflow asked it — "is there a neural view?", "which views are fitted?" — was a call into a lower
layer and back).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from datasets import DatasetDict

from medcoder.codesets import load_codeset
from medcoder.data import LabelSpace, resolve_codiesp_root
from medcoder.errors import ConfigError
from medcoder.modeling import (
    NEURAL,
    HybridScorer,
    MedCoderForICDCoding,
    NeuralScorer,
    Scorer,
    Scores,
)
from medcoder.modeling import views as view_table
from medcoder.modeling.stacker import Stacker
from medcoder.modeling.state_cache import EncodedStates
from medcoder.training.oof import neural_head_out_of_fold, scorer_out_of_fold
from medcoder.workflows.config_checks import (
    LEXICON_SOURCES,
    STACKER_FITS,
    offered_resources,
    view_fit_problems,
    view_list_problems,
)
from medcoder.workflows.factories import training_arguments

__all__ = ["STACKER_FITS", "FitResources", "FusionPlan", "FusionResult", "NeuralInputs", "TrainingCorpus",
           "cross_fitted_logits", "fit_fusion", "fit_resources", "fit_stacker_on_tuning", "fixed_epochs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionPlan:
    """Which views a training fuses and how (the ``fusion`` group, plain and validated).

    ``views``: registered view names in stacker feature order (``(NEURAL,)``: the neural view alone,
    no stacker, no out-of-fold fits). ``folds`` / ``neural_folds``: K of the out-of-fold fits of the
    fitted views / of the neural head (None: ``folds``); integers >= 2 unless the neural view is
    alone. ``seed``: the fold assignment's seed (the run's). ``view_params``: view name ->
    constructor keyword arguments. ``stacker_params``: :class:`Stacker` keyword arguments
    (``top_k``, ``C``, ``flags``). ``use_mentions`` / ``use_descriptions``: the configured switches
    of the two lexicon sources; ``lexicon_sources``: those the corpus actually has with the
    switches applied (``mentions``: CodiEsp-X train spans, ``descriptions``: ICD-10-CM wording of
    diagnosis codes), derived once from the data group at the door. ``stacker_fit``: what the
    stacker learns from, ``out_of_fold`` (the views' out-of-fold scores over train), ``tuning``
    (the fitted views' scores of the run's tuning notes, cross-fitted over ``stacker_folds`` folds:
    :func:`fit_stacker_on_tuning`) or ``blend`` (the weighted mean logit of both stackers,
    ``stacker_blend_weight`` on the tuning one).

    Derived once, here, so that nobody re-derives them: ``classes`` (view -> its class, looked up
    in the registry once), ``has_neural``, ``neural_only``, ``fitted_views`` (every view but the
    neural one: built by :meth:`make`, fitted with ``fit``), ``available_resources`` (what the run
    offers: :func:`offered_resources`) and ``view_resources`` (fitted view -> the fit resources it
    takes among those).
    """

    views: tuple[str, ...] = (NEURAL,)
    folds: int = 3
    neural_folds: int | None = None
    seed: int = 0
    view_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stacker_params: Mapping[str, Any] = field(default_factory=dict)
    use_mentions: bool = True
    use_descriptions: bool = True
    lexicon_sources: tuple[str, ...] = ()
    stacker_fit: str = "out_of_fold"
    stacker_folds: int = 5
    stacker_blend_weight: float = 0.5
    # -- derived in __post_init__ ----------------------------------------------------------------
    classes: Mapping[str, type[Scorer]] = field(init=False, repr=False, compare=False)
    has_neural: bool = field(init=False, repr=False, compare=False)
    neural_only: bool = field(init=False, repr=False, compare=False)
    fitted_views: tuple[str, ...] = field(init=False, repr=False, compare=False)
    available_resources: tuple[str, ...] = field(init=False, repr=False, compare=False)
    view_resources: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hint = "e.g. fusion.views=[neural,tfidf,dictionary] or fusion.views=[tfidf,dictionary]"
        problems = view_list_problems(self.views)  # before normalising: name the value as configured
        if problems:
            raise ConfigError(problems[0], hint=hint)
        unknown_sources = set(self.lexicon_sources) - set(LEXICON_SOURCES)
        if unknown_sources:
            raise ValueError(f"lexicon_sources {sorted(unknown_sources)} are not among {LEXICON_SOURCES}")
        views = tuple(str(v) for v in self.views)
        available = offered_resources(tuple(self.lexicon_sources))
        problems = view_fit_problems(views, available=available)
        if problems:
            raise ConfigError(problems[0])  # the problem says what to drop or switch on
        classes = {name: view_table.scorer_class(name) for name in views}
        fitted = tuple(v for v in views if v != NEURAL)
        set_ = object.__setattr__  # frozen: normalise and derive once, here
        for name, value in {
            "views": views,
            "lexicon_sources": tuple(self.lexicon_sources),
            "neural_folds": self.neural_folds or self.folds,
            "view_params": MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.view_params.items()}),
            "stacker_params": MappingProxyType(dict(self.stacker_params)),
            "classes": MappingProxyType(classes),
            "has_neural": NEURAL in views,
            "neural_only": views == (NEURAL,),
            "fitted_views": fitted,
            "available_resources": available,
            "view_resources": MappingProxyType({v: tuple(r for r in classes[v].fit_resources if r in available)
                                                for v in fitted}),
        }.items():
            set_(self, name, value)
        if self.stacker_fit not in STACKER_FITS:
            raise ConfigError(f"fusion.stacker_fit={self.stacker_fit!r} is not valid (expected one of "
                              f"{', '.join(STACKER_FITS)})")
        weight = self.stacker_blend_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < 1:
            raise ConfigError(f"fusion.stacker_blend_weight={weight!r} is not valid (expected a number in (0, 1): the "
                              "tuning-notes stacker's weight in the blend)")
        if self.neural_only:
            return  # no out-of-fold fits: the fold counts are not used
        if not (isinstance(self.stacker_folds, int) and not isinstance(self.stacker_folds, bool)
                and self.stacker_folds >= 2):
            raise ConfigError(f"fusion.stacker_folds={self.stacker_folds!r} is not valid (expected an integer >= 2: "
                              "K of the stacker's cross-fit over the tuning notes)")
        for key, value in (("folds", self.folds), ("neural_folds", self.neural_folds)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 2):
                raise ConfigError(f"fusion.{key}={value!r} is not valid (expected an integer >= 2: K of the "
                                  "out-of-fold fits)")

    def model_name(self, encoder_name: str) -> str:
        """The ``medcoder.model`` tag: the encoder config's name, or the views where there is no encoder."""
        return encoder_name if self.has_neural else "+".join(self.views)

    def make(self, name: str) -> Scorer:
        """A fresh, unfitted view ``name`` (one of :attr:`fitted_views`) with its configured parameters."""
        if name not in self.fitted_views:
            raise ValueError(f"view {name!r} is not among this plan's fitted views {list(self.fitted_views)}")
        return self.classes[name](**self.view_params.get(name, {}))

    def stacker(self) -> Stacker:
        """A fresh, unfitted :class:`Stacker` over :attr:`views` with the configured parameters."""
        return Stacker(list(self.views), **self.stacker_params)


@dataclass(frozen=True)
class TrainingCorpus:
    """Where the training notes' fit resources live: plain values from the ``data`` and ``codeset``
    groups, built once by ``train()``. ``root`` / ``cache_dir``: the CodiEsp release (for its
    CodiEsp-X mention spans); ``codeset_fy`` / ``codeset_order_file``: the ICD-10-CM code set whose
    wording describes the labels."""

    language: str = "en"
    code_type: str = "D"
    root: str | None = None
    cache_dir: str | None = None
    codeset_fy: int = 2026
    codeset_order_file: str | None = None


@dataclass(frozen=True)
class FitResources:
    """What the run offers the views' ``fit`` (:data:`medcoder.modeling.scorer.FIT_RESOURCES`):
    ``per_note`` values are aligned with the training notes (cut to each fold out of fold),
    ``shared`` ones are the same for every fit."""

    per_note: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    shared: Mapping[str, Any] = field(default_factory=dict)

    def take(self, wanted: Collection[str]) -> tuple[dict[str, Sequence[Any]], dict[str, Any]]:
        """The per-note and the shared resources among ``wanted`` (a view's ``fit_resources``)."""
        return ({k: v for k, v in self.per_note.items() if k in wanted},
                {k: v for k, v in self.shared.items() if k in wanted})


def fit_resources(lexicon_sources: Collection[str], corpus: TrainingCorpus, ids: Sequence[str],
                  codes: Sequence[str], wanted: Collection[str]) -> FitResources:
    """The ``wanted`` resources this run has (its ``lexicon_sources``, the notes' language), read
    once for all views and folds:

    * ``mentions``: gold mention spans of the *training* notes (CodiEsp-X), aligned with ``ids``;
      for the English machine translations (whose gold spans are offsets into the Spanish text),
      with the ``projected_mentions`` source, English n-grams mined where those spans' translations
      sit (:mod:`medcoder.modeling.projected_mentions`);
    * ``descriptions``: ICD-10-CM wording of each label — its description and inclusion terms in
      the configured code-set year (diagnosis corpora only) — and, with the ``spanish_titles``
      source, its Spanish WHO title (:mod:`medcoder.codesets.who_spanish`; Spanish diagnosis
      corpora, ``fusion.use_spanish_titles``);
    * ``language``: of the notes.
    """
    per_note: dict[str, Sequence[Any]] = {}
    shared: dict[str, Any] = {}
    if "mentions" in wanted and "mentions" in lexicon_sources:
        from medcoder.data.mentions import load_codiesp_mentions

        root = resolve_codiesp_root(corpus.root, cache_dir=corpus.cache_dir, download=False)
        by_doc = load_codiesp_mentions(root, "train", corpus.code_type)
        per_note["mentions"] = [by_doc.get(i, []) for i in ids]
    elif "mentions" in wanted and "projected_mentions" in lexicon_sources:
        from medcoder.modeling.projected_mentions import load_projected_mentions

        root = resolve_codiesp_root(corpus.root, cache_dir=corpus.cache_dir, download=False)
        # mined from the fitting notes only (``ids``): the tuning and certification notes never are
        by_doc = load_projected_mentions(root, "train", corpus.code_type, ids)
        per_note["mentions"] = [by_doc.get(i, []) for i in ids]
    if "descriptions" in wanted and {"descriptions", "spanish_titles"} & set(lexicon_sources):
        wording: dict[str, list[str]] = {}
        if "descriptions" in lexicon_sources:
            from medcoder.modeling.lexicon import icd10cm_descriptions

            codeset = load_codeset(corpus.codeset_fy, order_file=corpus.codeset_order_file)
            wording = icd10cm_descriptions(codes, codeset=codeset)
        if "spanish_titles" in lexicon_sources:
            from medcoder.codesets.who_spanish import spanish_title_descriptions

            for code, titles in spanish_title_descriptions(codes).items():
                wording[code] = [*wording.get(code, []), *titles]
        shared["descriptions"] = wording
    if "language" in wanted:
        shared["language"] = corpus.language
    return FitResources(per_note, shared)


@dataclass
class NeuralInputs:
    """What the neural view's out-of-fold scores need: the trained model (the fused coder's view),
    the model as initialised (each out-of-fold head starts there), its tokenizer, the cached
    encoder states of train, the epoch count the out-of-fold heads train for, and the ``trainer``
    settings (plain) their training arguments are built from."""

    model: MedCoderForICDCoding
    initial: MedCoderForICDCoding
    tokenizer: Any
    train_states: EncodedStates | None
    best_epochs: int
    trainer: Mapping[str, Any]


class FusionResult:
    """The fitted hybrid scorer and what it cost (seconds per step, for MLflow)."""

    def __init__(self, scorer: HybridScorer, seconds: dict[str, float], oof: dict[str, Scores]) -> None:
        self.scorer = scorer
        self.seconds = seconds
        self.oof = oof


def fit_fusion(plan: FusionPlan, corpus: TrainingCorpus, splits: DatasetDict, label_space: LabelSpace,
               labels_train: np.ndarray, neural: NeuralInputs | None = None) -> FusionResult:
    """Fit the plan's other views on train, out-of-fold scores of every view over train, the stacker.

    ``neural`` is given exactly when the plan has the neural view."""
    if plan.has_neural != (neural is not None):
        raise ValueError(f"fusion.views={list(plan.views)}: the neural inputs must be given exactly when "
                         "the neural view is")
    texts = list(splits["train"]["text"])
    codes = list(label_space.codes)
    seconds: dict[str, float] = {}
    wanted = {r for taken in plan.view_resources.values() for r in taken}
    resources = fit_resources(plan.lexicon_sources, corpus, list(splits["train"]["id"]), codes, wanted)

    oof: dict[str, Scores] = {}
    fitted: dict[str, Scorer] = {}
    if neural is not None:
        fitted[NEURAL] = NeuralScorer(neural.model, neural.tokenizer)
        started = time.time()
        oof[NEURAL] = _neural_out_of_fold(neural, labels_train, folds=plan.neural_folds, seed=plan.seed)
        seconds[f"oof_{NEURAL}"] = time.time() - started
    # -- the other views: K fits for out-of-fold scores, then one fit on all of train -------------
    for name in plan.fitted_views:
        per_note, shared = resources.take(plan.view_resources[name])
        started = time.time()
        oof[name] = scorer_out_of_fold(lambda n=name: plan.make(n), texts, labels_train, codes, folds=plan.folds,
                                       seed=plan.seed, per_note_fit_kwargs=per_note, fit_kwargs=shared)
        seconds[f"oof_{name}"] = time.time() - started
        started = time.time()
        fitted[name] = plan.make(name).fit(texts, labels_train, codes, **per_note, **shared)
        seconds[f"fit_{name}"] = time.time() - started
    # -- the stacker on out-of-fold scores -------------------------------------------------------
    started = time.time()
    frequency = label_space.frequency_array()
    stacker = plan.stacker().fit(oof, frequency, labels_train)
    seconds["fit_stacker"] = time.time() - started
    log.info("stacker weights (standardised): %s",
             ", ".join(f"{k}={v:+.2f}" for k, v in stacker.coefficients().items()))
    scorer = HybridScorer({v: fitted[v] for v in plan.views}, stacker, frequency, support_top_k=stacker.top_k)
    return FusionResult(scorer, seconds, oof)


def _rows(view_scores: Mapping[str, Scores], idx: np.ndarray) -> dict[str, Scores]:
    """The notes ``idx`` of each view's scores and flags."""
    return {name: Scores(scores=s.scores[idx], flags={f: np.asarray(a)[idx] for f, a in s.flags.items()})
            for name, s in view_scores.items()}


def cross_fitted_logits(make_stacker: Callable[[], Any], view_scores: Mapping[str, Scores], frequency: np.ndarray,
                        labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Fused logits of these notes, each note's from a stacker (``make_stacker()``: anything with
    :class:`Stacker`'s ``fit`` / ``decision_function``) fitted on the other folds' notes only. The
    one cross-fit of :func:`fit_stacker_on_tuning` and of the probes that measured it
    (``benchmarks/stacker_probe.py --tuning-cv``, ``benchmarks/tuning_stacker_probe.py``)."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    fold = np.random.default_rng(seed).permutation(n) % min(folds, n)
    logits = np.zeros(labels.shape, dtype=np.float32)
    for f in np.unique(fold):
        fit, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        stacker = make_stacker().fit(_rows(view_scores, fit), frequency, labels[fit])
        logits[held] = stacker.decision_function(_rows(view_scores, held), frequency)
    return logits


def fit_stacker_on_tuning(plan: FusionPlan, view_scores: Mapping[str, Scores], frequency: np.ndarray,
                          labels: np.ndarray) -> tuple[Stacker, np.ndarray]:
    """The stacker fitted on the fitted views' scores of the run's tuning notes
    (``fusion.stacker_fit=tuning``), and those notes' fused logits, each note's from a stacker fitted
    on the other ``plan.stacker_folds`` - 1 folds (so the tuning metrics and the decision threshold
    read scores of a stacker that never saw the note).

    Why: out-of-fold scores over train come from views fitted on part of the fitting notes, and
    they rank worse than the fitted views rank new notes; most of all the neural view's, whose
    out-of-fold heads train on a fraction of the notes (EN-D seed 42: out-of-fold MAP 0.27 with 2
    folds, 0.30 with 5, against 0.42 on the tuning notes). A stacker fitted on them under-trusts the
    views that gain most from more notes. The tuning notes' scores are what new notes look like to
    the fitted views. On the tuning split this raised MAP on every corpus and seed probed, but it
    made the top of the ranking a little less clean on three of four corpora, and a refit (which
    replaces the views it learned; refused with it) lost EN-P's certification
    (``benchmarks/results/choices.md`` section 8): in no shipped recipe. The labels certifying τ
    are not these, so the guarantee is unchanged; the calibrator, fitted on the same tuning notes, then reads scores of a
    stacker that saw them (16 to 30 coefficients over ~50,000 to 150,000 note-code pairs; each run
    logs the in-sample tuning MAP beside the cross-fitted one).
    """
    logits = cross_fitted_logits(plan.stacker, view_scores, frequency, labels, folds=plan.stacker_folds,
                                 seed=plan.seed)
    return plan.stacker().fit(view_scores, frequency, np.asarray(labels)), logits


def fixed_epochs(epochs: int) -> dict[str, Any]:
    """Training-argument overrides of a head trained for a known epoch count, with no dev to
    evaluate or early-stop on (the out-of-fold heads, a refitted run's head)."""
    return {"num_train_epochs": epochs, "eval_strategy": "no", "save_strategy": "no",
            "load_best_model_at_end": False, "logging_strategy": "no", "disable_tqdm": True}


def _neural_out_of_fold(neural: NeuralInputs, labels_train: np.ndarray, *, folds: int, seed: int) -> Scores:
    """K head trainings on the cached encoder states of train (no encoder pass), each scoring the
    notes it did not see."""
    if neural.train_states is None:
        raise ConfigError("fusion with the neural view needs trainer.encoder_mode=cached (trainer=cached_head)",
                          hint="out-of-fold neural scores are trained on the cached encoder states")
    with tempfile.TemporaryDirectory(prefix="medcoder-oof-") as tmp:
        args = training_arguments(neural.trainer, output_dir=Path(tmp), seed=seed,
                                  overrides=fixed_epochs(neural.best_epochs))
        return neural_head_out_of_fold(
            neural.initial, neural.train_states, labels_train, args,
            folds=folds, seed=seed,
            head_learning_rate=neural.trainer.get("head_learning_rate"),
            batch_size=int(neural.trainer["per_device_eval_batch_size"]))
