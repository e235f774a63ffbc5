"""Scoring notes with a trained model: the one place logits come from.

Training evaluation, calibration, batch prediction and the MLflow model all call
:func:`score_features`, so a probability means the same thing everywhere. When the model's encoder
is frozen and its token states are already in the disk cache (keyed by a hash of the encoder's
weights), the cached states are used: the result is identical (tested), only faster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from scipy.special import expit
from tqdm.auto import tqdm

from medcoder.modeling import MedCoderForICDCoding
from medcoder.training.batching import collate_chunks, collate_states
from medcoder.training.state_cache import cached_states


@torch.inference_mode()
def score_features(
    model: MedCoderForICDCoding,
    split: Dataset,
    *,
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits ``(n_notes, n_labels)`` for a featurised split (``input_ids``/``attention_mask``)."""
    model.eval()
    n = len(split)
    logits = np.zeros((n, model.config.num_labels), dtype=np.float32)
    if n == 0:
        return logits
    states = None
    if cache_dir is not None:
        states = cached_states(
            model.encoder, split, chunk_size=model.config.chunk_size,
            max_chunks=model.config.max_chunks, cache_dir=Path(cache_dir),
        )
    lengths = np.asarray(split["n_tokens"])
    order = np.argsort(-lengths, kind="stable")  # length-sorted batches: little padding
    columns = split.with_format(None, columns=["input_ids", "attention_mask"])
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="scoring", unit="batch"):
        idx = order[start : start + batch_size].tolist()
        if states is not None:
            items = [{"encoder_states": states.note(i), "labels": np.zeros(0, np.float32)} for i in idx]
            batch = collate_states(items)
        else:
            items = [{**columns[i], "labels": []} for i in idx]
            batch = collate_chunks(items)
        batch.pop("labels")
        out = model(**{k: v.to(model.device) for k, v in batch.items()})
        logits[idx] = out.logits.float().cpu().numpy()
    if not np.isfinite(logits).all():
        raise FloatingPointError("the model produced non-finite logits (diverged training or corrupt weights)")
    return logits


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Uncalibrated probabilities from logits (scipy's numerically stable logistic)."""
    return expit(x)
