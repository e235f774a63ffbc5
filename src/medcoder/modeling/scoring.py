"""Scoring notes with a trained model: the one place logits come from.

Training evaluation, calibration, batch prediction and the MLflow model all call
:func:`score_features`, so a probability means the same thing everywhere. When the model's encoder
is frozen and its token states are already in the disk cache (keyed by a hash of the encoder's
weights), the cached states are used: the result is identical (tested), only faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from scipy.special import expit
from tqdm.auto import tqdm

from medcoder.modeling import MedCoderForICDCoding
from medcoder.modeling.batching import collate_chunks, collate_states
from medcoder.modeling.state_cache import cached_states


@dataclass
class Scores:
    """Logits plus, when asked for, where each code attended most (evidence).

    ``top_positions``/``top_weights`` are ``(n_notes, k, n_labels)``: the ``k`` compacted,
    span-pooled token positions with the highest label attention, and that attention.
    """

    logits: np.ndarray
    top_positions: np.ndarray | None = None
    top_weights: np.ndarray | None = None


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
    return score_notes(model, split, batch_size=batch_size, cache_dir=cache_dir, progress=progress).logits


@torch.inference_mode()
def score_notes(
    model: MedCoderForICDCoding,
    split: Dataset,
    *,
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    evidence_top_k: int = 0,
) -> Scores:
    """:func:`score_features` plus, with ``evidence_top_k > 0``, the top attended positions."""
    model.eval()
    n = len(split)
    n_labels = model.config.num_labels
    logits = np.zeros((n, n_labels), dtype=np.float32)
    k = int(evidence_top_k)
    top_pos = np.zeros((n, k, n_labels), dtype=np.int32) if k else None
    top_w = np.zeros((n, k, n_labels), dtype=np.float32) if k else None
    if n == 0:
        return Scores(logits, top_pos, top_w)
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
        out = model(**{key: v.to(model.device) for key, v in batch.items()}, return_label_attention=bool(k))
        logits[idx] = out.logits.float().cpu().numpy()
        if k:
            attn = out.attentions.float()
            kk = min(k, attn.shape[1])
            w, pos = torch.topk(attn, kk, dim=1)  # (B, kk, L)
            top_w[idx, :kk] = w.cpu().numpy()
            top_pos[idx, :kk] = pos.cpu().numpy().astype(np.int32)
    if not np.isfinite(logits).all():
        raise FloatingPointError("the model produced non-finite logits (diverged training or corrupt weights)")
    return Scores(logits, top_pos, top_w)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Uncalibrated probabilities from logits (scipy's numerically stable logistic)."""
    return expit(x)
