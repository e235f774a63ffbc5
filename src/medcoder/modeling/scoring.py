"""Scoring notes with a trained model: the one place logits come from.

Training evaluation, calibration, batch prediction and the MLflow model all call
:func:`score_features`, so a probability means the same thing everywhere. When the model's encoder
is frozen and its token states are already in the disk cache (keyed by a hash of the encoder's
weights), the cached states are used: the result is identical (tested), only faster.

A **quantised** encoder (``dynamic-int8``) runs on each note's chunks alone (:func:`encode_note`):
dynamic quantisation scales a layer's activations by the range of everything in the call, so the
chunks of other notes in the same call would change a note's scores (by up to 4 logits on the
quickstart coder). One call per note makes a note's probability the same whether it is scored
alone (one served request) or among thousands (batch prediction, calibration); tested. The fp32
path is unchanged (length-sorted batches of notes through the model's own chunked forward: sorting
the chunks of 64 notes together to trim padding was measured no faster on the 2-core CPU). An
``onnx-int8`` encoder encodes the notes of a batch in parallel, each still alone in its calls, so
its scores do not depend on the thread count or on the other notes either (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from scipy.special import expit
from tqdm.auto import tqdm

from medcoder.modeling.batching import collate_chunks, collate_states
from medcoder.modeling.loading import quantization_of
from medcoder.modeling.model import MedCoderForICDCoding
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


def encode_note(model: MedCoderForICDCoding, input_ids: list, attention_mask: list) -> torch.Tensor:
    """One note's real-token encoder states ``(tokens, hidden)``, its chunks in order.

    Two encoder calls, neither holding another note: the note's full chunks, then its shorter
    (last) chunk trimmed to its length, so no padded tail is encoded. What a quantised model is
    scored with (module docstring); the states equal those of the chunked forward (tested).
    """
    if not len(input_ids):
        return torch.zeros(0, model.config.hidden_size, dtype=model.dtype)
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(len(input_ids), -1)
    mask = torch.as_tensor(attention_mask, dtype=torch.long).reshape(len(input_ids), -1)
    lengths = mask.sum(1)
    states = [torch.zeros(0, model.config.hidden_size, dtype=model.dtype)] * len(ids)
    full = lengths == ids.shape[1]
    for group in (torch.nonzero(full).flatten(), torch.nonzero(~full & (lengths > 0)).flatten()):
        if not len(group):
            continue
        width = int(lengths[group].max())
        out = model.encode_chunks(ids[group, :width].to(model.device), mask[group, :width].to(model.device))
        for row, j in enumerate(group.tolist()):
            states[j] = out[row, : int(lengths[j])].to(model.dtype)
    return torch.cat(states)


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
    quantized = quantization_of(model) is not None  # one encoder call per note (module docstring)
    # An ONNX Runtime encoder encodes the notes of a batch in parallel (its map); torch's int8 in
    # Python threads was measured slower (medcoder.modeling.onnx_encoder), so it keeps the plain map.
    # (Streaming all notes through the pool while the head scores earlier batches was measured no
    # faster: both saturate the two cores.) Rows are read in this thread; only encode_note is pooled.
    parallel_map = getattr(model.runtime_encoder, "map", map)
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="scoring", unit="batch"):
        idx = order[start : start + batch_size].tolist()
        if states is not None:
            items = [{"encoder_states": states.note(i), "labels": np.zeros(0, np.float32)} for i in idx]
            batch = collate_states(items)
            batch.pop("labels")
        elif quantized:
            batch = _collate_note_states(list(parallel_map(lambda row: encode_note(model, **row),
                                                           [columns[i] for i in idx])))
        else:
            batch = collate_chunks([{**columns[i], "labels": []} for i in idx])
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
