"""Scoring notes with a trained model: the one place logits come from.

Training evaluation, calibration, batch prediction and the MLflow model all call
:func:`score_features`, so a probability means the same thing everywhere. When the model's encoder
is frozen and its token states are already in the disk cache (keyed by a hash of the encoder's
weights), the cached states are used: the result is identical (tested), only faster.

Without a cache the encoder runs on **length-sorted chunks**: the chunks of a window of notes are
sorted by their number of real tokens and encoded in groups trimmed to their longest chunk, so the
padded tail of each note's last chunk (~11 % of a CodiEsp note's chunk tokens) is not computed; the
head then reads each note's real-token states, exactly as it reads cached states (the model
compacts padding away in both paths, so the logits are the same up to float rounding; tested).

A **quantised** encoder (``dynamic-int8``) is run on each note's chunks alone instead: dynamic
quantisation scales a layer's activations by the range of everything in the call, so chunks of
other notes in the same call would change a note's scores (by up to 2.4 logits on the quickstart
coder). One call per note makes a note's probability the same whether it is scored alone (one
served request) or among thousands (batch prediction, calibration); tested.
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
from medcoder.modeling.batching import collate_states
from medcoder.modeling.loading import quantization_of
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


#: Notes whose chunks are length-sorted and encoded together (rounded up to whole scoring batches).
#: Why bounded: their fp32 states are held at once (64 MiniLM notes of 4.5 chunks: ~55 MB).
ENCODE_WINDOW_NOTES = 64
#: Chunks per encoder call on the length-sorted path (~the chunks of 8 notes).
ENCODE_BATCH_CHUNKS = 32


def encode_notes(model: MedCoderForICDCoding, notes: list[dict], *,
                 batch_chunks: int = ENCODE_BATCH_CHUNKS, per_note: bool = False) -> list[torch.Tensor]:
    """Each note's real-token encoder states ``(tokens, hidden)``, its chunks in order.

    ``notes``: items with ``input_ids``/``attention_mask`` (chunks x chunk_size, padding at the end
    of a chunk). All chunks are sorted by real length and encoded ``batch_chunks`` at a time, each
    group trimmed to its longest chunk (as :func:`~medcoder.modeling.state_cache.compute_states`
    does for the cache, here in the model's own dtype and in memory). ``per_note``: one encoder
    call per note instead (its chunks only, trimmed to its longest), so that no other note can
    change its states (dynamic quantisation; module docstring).
    """
    ids = [torch.as_tensor(c, dtype=torch.long) for it in notes for c in it["input_ids"]]
    masks = [torch.as_tensor(c, dtype=torch.long) for it in notes for c in it["attention_mask"]]
    counts = [len(it["input_ids"]) for it in notes]
    hidden = model.config.hidden_size
    per_chunk = [torch.zeros(0, hidden, dtype=model.dtype) for _ in ids]
    if ids:
        ids_t, mask_t = torch.stack(ids), torch.stack(masks)
        lengths = mask_t.sum(1)
        if per_note:
            bounds = np.cumsum([0, *counts])
            groups = [torch.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        else:
            order = torch.argsort(lengths, descending=True, stable=True)
            groups = list(torch.split(order, batch_chunks))
        for idx in groups:
            idx = idx[lengths[idx] > 0]  # a chunk without a real token adds nothing (as the model skips it)
            if not len(idx):
                continue
            width = int(lengths[idx].max())
            states = model.encode_chunks(ids_t[idx, :width].to(model.device), mask_t[idx, :width].to(model.device))
            for row, j in enumerate(idx.tolist()):
                per_chunk[j] = states[row, : int(lengths[j])].to(model.dtype)
    out, pos = [], 0
    for c in counts:
        out.append(torch.cat(per_chunk[pos : pos + c]) if c else torch.zeros(0, hidden, dtype=model.dtype))
        pos += c
    return out


def _collate_note_states(states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pad real-token states to the longest note of the batch (as :func:`collate_states`, in torch)."""
    width = max(1, max(len(s) for s in states))
    batch = states[0].new_zeros((len(states), width, states[0].shape[1]))
    mask = torch.zeros(len(states), width, dtype=torch.long, device=batch.device)
    for b, s in enumerate(states):
        batch[b, : len(s)] = s
        mask[b, : len(s)] = 1
    return {"encoder_states": batch, "attention_mask": mask}


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
    if cache_dir is not None and quantization_of(model) is None:
        # The cache holds the fp32 encoder's states; a quantised encoder computes its own (that
        # difference is why a quantised bundle is calibrated with its own scores).
        states = cached_states(
            model.encoder, split, chunk_size=model.config.chunk_size,
            max_chunks=model.config.max_chunks, cache_dir=Path(cache_dir),
        )
    lengths = np.asarray(split["n_tokens"])
    order = np.argsort(-lengths, kind="stable")  # length-sorted batches: little padding
    columns = split.with_format(None, columns=["input_ids", "attention_mask"])
    window = batch_size * max(1, -(-ENCODE_WINDOW_NOTES // batch_size))  # whole scoring batches
    quantized = quantization_of(model) is not None  # one encoder call per note (module docstring)
    encoded: dict[int, torch.Tensor] = {}
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="scoring", unit="batch"):
        idx = order[start : start + batch_size].tolist()
        if states is not None:
            items = [{"encoder_states": states.note(i), "labels": np.zeros(0, np.float32)} for i in idx]
            batch = collate_states(items)
            batch.pop("labels")
        else:
            if start % window == 0:  # the next window of notes: encode its chunks, length-sorted
                ids = order[start : start + window].tolist()
                encoded = dict(zip(ids, encode_notes(model, [columns[i] for i in ids], per_note=quantized),
                                   strict=True))
            batch = _collate_note_states([encoded.pop(i) for i in idx])
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
