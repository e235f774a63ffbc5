"""The fused (hybrid) coder inside ``scripts/train.py``: extra views, out-of-fold scores, stacker.

Who fits what (the honesty contract, ../shared/DESIGN.md, and README "Which split fits what"):

* every view (neural head, tfidf, dictionary) is fitted on **train**; the dictionary's mentions
  are the CodiEsp-X spans of **train** only;
* the stacker is fitted on **out-of-fold** scores over **train** (K-fold cross-fitting:
  :mod:`medcoder.training.oof`);
* **dev** only early-stops the neural head (as before) — the calibrator, the decision threshold
  and τ are fitted / certified on dev later by ``scripts/calibrate.py``;
* **test** is scored for evaluation only.

``fusion.views`` may omit ``neural`` (e.g. ``[tfidf,dictionary]``): then no encoder exists at all
and :func:`fit_fusion` is called without :class:`NeuralInputs`; even a single such view goes
through the stacker, so the run's ``stacker.json`` names its views (what ``HybridScorer.load``
reads in place of a ``model/`` folder).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict
from omegaconf import DictConfig

from medcoder.codesets import load_codeset
from medcoder.data import LabelSpace, resolve_codiesp_root
from medcoder.errors import ConfigError
from medcoder.modeling import (
    SCORER_REGISTRY,
    HybridScorer,
    MedCoderForICDCoding,
    NeuralScorer,
    Scorer,
    Scores,
    Stacker,
)
from medcoder.modeling.state_cache import EncodedStates
from medcoder.training.oof import neural_head_out_of_fold, scorer_out_of_fold
from medcoder.workflows.config_checks import dictionary_sources, fusion_problems, fusion_views
from medcoder.workflows.factories import kwargs_for, plain, training_arguments

__all__ = ["FusionResult", "NeuralInputs", "fit_fusion", "views_of"]

log = logging.getLogger(__name__)


def views_of(cfg: DictConfig) -> list[str]:
    """The configured views (``fusion.views``; no ``fusion`` group: the neural view alone)."""
    problems = fusion_problems(cfg)
    if problems:
        raise ConfigError(problems[0], hint="e.g. fusion.views=[neural,tfidf,dictionary] or fusion.views=[tfidf,dictionary]")
    return list(fusion_views(cfg))


@dataclass
class NeuralInputs:
    """What the neural view's out-of-fold scores need: the trained model (the fused coder's view),
    the model as initialised (each out-of-fold head starts there), its tokenizer, the cached
    encoder states of train and the epoch count the out-of-fold heads train for."""

    model: MedCoderForICDCoding
    initial: MedCoderForICDCoding
    tokenizer: Any
    train_states: EncodedStates | None
    best_epochs: int


class FusionResult:
    """The fitted hybrid scorer and what it cost (seconds per step, for MLflow)."""

    def __init__(self, scorer: HybridScorer, seconds: dict[str, float], oof: dict[str, Scores]) -> None:
        self.scorer = scorer
        self.seconds = seconds
        self.oof = oof


def _mentions_for(cfg: DictConfig, ids: Sequence[str]) -> list[list[Any]] | None:
    """Gold mention spans of the *training* notes (CodiEsp-X), aligned with ``ids``; None when the
    corpus has none (English machine translations: the spans are offsets into the Spanish text)."""
    data = cfg.data
    if "mentions" not in dictionary_sources(cfg):
        return None
    from medcoder.data.mentions import load_codiesp_mentions

    root = resolve_codiesp_root(data.get("root"), cache_dir=data.get("cache_dir"), download=False)
    by_doc = load_codiesp_mentions(root, "train", data.get("code_type", "D"))
    return [by_doc.get(i, []) for i in ids]


def _descriptions_for(cfg: DictConfig, codes: Sequence[str]) -> dict[str, list[str]] | None:
    """ICD-10-CM wording of each label for the dictionary: its description and inclusion terms
    in the code set of the configured year (diagnosis corpora only)."""
    if "descriptions" not in dictionary_sources(cfg):
        return None
    from medcoder.modeling.dictionary import icd10cm_descriptions

    codeset = load_codeset(cfg.codeset.fiscal_year, order_file=cfg.codeset.get("order_file"))
    return icd10cm_descriptions(codes, codeset=codeset)


def _make(name: str, cfg: DictConfig) -> Scorer:
    cls = SCORER_REGISTRY[name]
    params = cfg.fusion.get(name) or {}
    return cls(**kwargs_for(cls.__init__, params))


def fit_fusion(cfg: DictConfig, splits: DatasetDict, label_space: LabelSpace, labels_train: np.ndarray,
               neural: NeuralInputs | None = None) -> FusionResult:
    """Fit the non-neural views on train, out-of-fold scores of every view over train, the stacker.

    ``neural`` is given exactly when ``fusion.views`` names the neural view."""
    views = views_of(cfg)
    if ("neural" in views) != (neural is not None):
        raise ValueError(f"fusion.views={views}: the neural inputs must be given exactly when the neural view is")
    folds, seed = int(cfg.fusion.folds), int(cfg.seed)
    texts = list(splits["train"]["text"])
    codes = list(label_space.codes)
    seconds: dict[str, float] = {}
    fit_extra: dict[str, dict[str, Any]] = {}
    per_note: dict[str, dict[str, Sequence[Any]]] = {}
    if "dictionary" in views:
        mentions = _mentions_for(cfg, list(splits["train"]["id"]))
        language = cfg.data.get("language", "en")
        fit_extra["dictionary"] = {"descriptions": _descriptions_for(cfg, codes), "language": language}
        if mentions is not None:
            per_note["dictionary"] = {"mentions": mentions}

    oof: dict[str, Scores] = {}
    fitted: dict[str, Scorer] = {}
    if neural is not None:
        fitted["neural"] = NeuralScorer(neural.model, neural.tokenizer)
        started = time.time()
        oof["neural"] = _neural_out_of_fold(cfg, neural, labels_train)
        seconds["oof_neural"] = time.time() - started
    # -- the other views: K fits for out-of-fold scores, then one fit on all of train -------------
    for name in (v for v in views if v != "neural"):
        started = time.time()
        oof[name] = scorer_out_of_fold(lambda n=name: _make(n, cfg), texts, labels_train, codes, folds=folds,
                                       seed=seed, per_note_fit_kwargs=per_note.get(name),
                                       fit_kwargs=fit_extra.get(name))
        seconds[f"oof_{name}"] = time.time() - started
        started = time.time()
        fitted[name] = _make(name, cfg).fit(texts, labels_train, codes, **per_note.get(name, {}),
                                            **fit_extra.get(name, {}))
        seconds[f"fit_{name}"] = time.time() - started
    # -- the stacker on out-of-fold scores -------------------------------------------------------
    started = time.time()
    frequency = np.array([label_space.frequency.get(c, 0) for c in codes], dtype=np.float32)
    stacker_params = plain(cfg.fusion.get("stacker") or {})
    stacker = Stacker(views, **kwargs_for(Stacker.__init__, stacker_params, exclude=("views",))).fit(
        oof, frequency, labels_train)
    seconds["fit_stacker"] = time.time() - started
    log.info("stacker weights (standardised): %s",
             ", ".join(f"{k}={v:+.2f}" for k, v in stacker.coefficients().items()))
    scorer = HybridScorer({v: fitted[v] for v in views}, stacker, frequency,
                          support_top_k=int(stacker_params.get("top_k", 15)))
    return FusionResult(scorer, seconds, oof)


def _neural_out_of_fold(cfg: DictConfig, neural: NeuralInputs, labels_train: np.ndarray) -> Scores:
    """K head trainings on the cached encoder states of train (no encoder pass), each scoring the
    notes it did not see."""
    if neural.train_states is None:
        raise ConfigError("fusion with the neural view needs trainer.encoder_mode=cached (trainer=cached_head)",
                          hint="out-of-fold neural scores are trained on the cached encoder states")
    seed = int(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="medcoder-oof-") as tmp:
        args = training_arguments(cfg.trainer, output_dir=Path(tmp), seed=seed, overrides={
            "num_train_epochs": neural.best_epochs, "eval_strategy": "no", "save_strategy": "no",
            "load_best_model_at_end": False, "logging_strategy": "no", "disable_tqdm": True,
        })
        return neural_head_out_of_fold(
            neural.initial, neural.train_states, labels_train, args,
            folds=int(cfg.fusion.get("neural_folds") or cfg.fusion.folds), seed=seed,
            head_learning_rate=cfg.trainer.get("head_learning_rate"),
            batch_size=int(cfg.trainer.per_device_eval_batch_size))
