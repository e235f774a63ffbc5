"""Out-of-fold (cross-fitted) scores over the training split, for fitting the stacker.

Why: a stacker fitted on a view's *in-sample* training scores learns to trust that view far more
than it deserves (every training note was seen; the dictionary even contains each note's own
mentions). Each training note is therefore scored by a copy of the view fitted on the other
folds, so the stacker sees scores distributed like those on new notes. Dev and test are never
touched here (the honesty contract, ../shared/DESIGN.md).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold
from transformers import TrainingArguments

from medcoder.modeling.batching import StatesDataset, collate_states
from medcoder.modeling.model import MedCoderForICDCoding
from medcoder.modeling.scorer import Scorer, Scores
from medcoder.modeling.state_cache import EncodedStates
from medcoder.training.trainer import MedCoderTrainer

__all__ = ["fold_indices", "out_of_fold", "scorer_out_of_fold", "neural_head_out_of_fold"]

log = logging.getLogger(__name__)

FitPredict = Callable[[np.ndarray, np.ndarray], Scores]


def fold_indices(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit, held_out)`` index pairs of a shuffled K-fold split (scikit-learn's ``KFold``)."""
    if folds < 2 or folds > n:
        raise ValueError(f"folds={folds} must be between 2 and the number of training notes ({n})")
    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.arange(n)))


def out_of_fold(n: int, folds: int, seed: int, fit_predict: FitPredict) -> Scores:
    """Assemble ``fit_predict(fit_idx, held_idx)`` over the folds into one :class:`Scores` row per note."""
    scores: np.ndarray | None = None
    flags: dict[str, np.ndarray] = {}
    for k, (fit_idx, held_idx) in enumerate(fold_indices(n, folds, seed)):
        part = fit_predict(fit_idx, held_idx)
        if scores is None:
            scores = np.zeros((n, part.scores.shape[1]), dtype=np.float32)
            flags = {name: np.zeros((n, part.scores.shape[1]), dtype=bool) for name in part.flags}
        scores[held_idx] = part.scores
        for name, value in part.flags.items():
            flags[name][held_idx] = value
        log.info("out-of-fold: fold %d/%d scored (%d notes)", k + 1, folds, len(held_idx))
    assert scores is not None
    return Scores(scores, flags=flags)


def scorer_out_of_fold(make: Callable[[], Scorer], texts: Sequence[str], labels: np.ndarray, codes: Sequence[str],
                       *, folds: int, seed: int, per_note_fit_kwargs: dict[str, Sequence[Any]] | None = None,
                       fit_kwargs: dict[str, Any] | None = None) -> Scores:
    """K-fold scores of a view with a ``fit``/``score`` (tfidf, dictionary): fit a fresh one on
    the other folds, score the held-out notes. ``per_note_fit_kwargs`` are sequences aligned with
    ``texts`` (e.g. the dictionary's gold mentions) and are cut to the fitting fold."""
    texts = list(texts)

    def fit_predict(fit_idx: np.ndarray, held_idx: np.ndarray) -> Scores:
        per_note = {k: [v[i] for i in fit_idx] for k, v in (per_note_fit_kwargs or {}).items()}
        view = make().fit([texts[i] for i in fit_idx], labels[fit_idx], codes, **per_note, **(fit_kwargs or {}))
        return view.score([texts[i] for i in held_idx])

    return out_of_fold(len(texts), folds, seed, fit_predict)


@torch.inference_mode()
def _logits_from_states(model: MedCoderForICDCoding, states: EncodedStates, idx: np.ndarray,
                        batch_size: int) -> np.ndarray:
    model.eval()
    out = np.zeros((len(idx), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        batch = collate_states([{"encoder_states": states.note(int(i)), "labels": np.zeros(0, np.float32)}
                                for i in rows])
        batch.pop("labels")
        out[start : start + len(rows)] = model(**batch).logits.float().numpy()
    return out


def neural_head_out_of_fold(initial_model: MedCoderForICDCoding, states: EncodedStates, labels: np.ndarray,
                            args: TrainingArguments, *, folds: int, seed: int, head_learning_rate: float | None,
                            batch_size: int = 16) -> Scores:
    """K-fold logits of the frozen-encoder neural view: for each fold a copy of the *initial*
    model (same description/prevalence initialisation as the final one) has its label-attention
    head trained on the other folds' cached states for ``args.num_train_epochs`` epochs (no dev
    evaluation: the final model's early-stopped epoch count is passed in), then scores the held-out
    notes from their cached states. Costs ``folds`` head trainings and no encoder pass."""

    def fit_predict(fit_idx: np.ndarray, held_idx: np.ndarray) -> Scores:
        model = copy.deepcopy(initial_model)
        model.freeze_encoder(0)
        trainer = MedCoderTrainer(model=model, args=args, train_dataset=StatesDataset(states, labels, fit_idx),
                                  data_collator=collate_states, head_learning_rate=head_learning_rate)
        trainer.train()
        return Scores(_logits_from_states(trainer.model, states, held_idx, batch_size))

    return out_of_fold(len(states), folds, seed, fit_predict)
