"""Frozen-encoder token states, computed once per note and optionally cached on disk.

Why: on a 2-core CPU the encoder forward is ~95% of a training step. With the encoder frozen, its
output for a note never changes, so the label-attention head can be trained for dozens of epochs
for the price of one encoder pass. States are stored as float16 (half the RAM/disk; the head
computes in float32) and only for real tokens (padding is dropped), keyed by a content hash of the
encoder weights' identity, chunking and token ids so a stale cache is never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from medcoder.atomic import atomic_write

log = logging.getLogger(__name__)


@dataclass
class EncodedStates:
    """Token states of many notes in one flat float16 array; ``offsets[i]:offsets[i+1]`` is note i."""

    states: np.ndarray  # (total_tokens, hidden) float16
    offsets: np.ndarray  # (n_notes + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def note(self, i: int) -> np.ndarray:
        return self.states[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()

    @classmethod
    def concat(cls, first: EncodedStates, *more: EncodedStates) -> EncodedStates:
        """The notes of ``first`` then of each of ``more`` (e.g. train and the tuning fifth for a
        refit): the states are per note, so joining them needs no encoder pass."""
        offsets, states = [first.offsets], [first.states]
        for part in more:
            offsets.append(part.offsets[1:] + offsets[-1][-1])
            states.append(part.states)
        return cls(states=np.concatenate(states), offsets=np.concatenate(offsets))

    def save(self, path: Path) -> None:
        """Atomic write: a killed run never leaves a truncated cache that looks valid."""
        atomic_write(path, lambda fh: np.savez(fh, states=self.states, offsets=self.offsets))

    @classmethod
    def load(cls, path: Path) -> EncodedStates:
        with np.load(path) as data:
            return cls(states=data["states"], offsets=data["offsets"])


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """Hash of the encoder's weights and config: the cache is valid only for these exact weights."""
    h = hashlib.sha256()
    config = getattr(encoder, "config", None)
    if config is not None:
        h.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def cache_key(encoder_id: str, split: Dataset, chunk_size: int, max_chunks: int) -> str:
    """Content hash of everything that determines the states."""
    h = hashlib.sha256()
    h.update(json.dumps([encoder_id, chunk_size, max_chunks]).encode())
    for ids in split["input_ids"]:
        h.update(np.asarray(ids, dtype=np.int32).tobytes())
    return h.hexdigest()[:24]


@torch.inference_mode()
def compute_states(
    encoder: torch.nn.Module, split: Dataset, *, batch_chunks: int = 32, desc: str = "encoding"
) -> EncodedStates:
    """Run the encoder over every chunk of every note, keeping states of real tokens only."""
    encoder.eval()
    chunk_ids: list[list[int]] = []
    chunk_mask: list[list[int]] = []
    owner: list[int] = []
    for i, (ids, mask) in enumerate(zip(split["input_ids"], split["attention_mask"], strict=True)):
        chunk_ids.extend(ids)
        chunk_mask.extend(mask)
        owner.extend([i] * len(ids))
    ids_t = torch.tensor(chunk_ids, dtype=torch.long)
    mask_t = torch.tensor(chunk_mask, dtype=torch.long)
    # Sort chunks by length so each encoder batch is trimmed to its longest chunk.
    lengths = mask_t.sum(1)
    order = torch.argsort(lengths, descending=True)
    per_chunk: list[np.ndarray | None] = [None] * len(chunk_ids)
    for start in tqdm(range(0, len(order), batch_chunks), desc=desc, unit="batch"):
        idx = order[start : start + batch_chunks]
        width = int(lengths[idx].max())
        out = encoder(input_ids=ids_t[idx, :width], attention_mask=mask_t[idx, :width])
        hidden = out.last_hidden_state.to(torch.float16).numpy()
        for row, j in enumerate(idx.tolist()):
            per_chunk[j] = hidden[row, : int(lengths[j])]
    note_tokens = np.zeros(len(split), dtype=np.int64)
    for j, i in enumerate(owner):
        note_tokens[i] += int(lengths[j])
    offsets = np.concatenate([[0], np.cumsum(note_tokens)])
    states = np.concatenate(per_chunk, axis=0) if per_chunk else np.zeros((0, 0), np.float16)
    return EncodedStates(states=states, offsets=offsets)


def cached_states(
    encoder: torch.nn.Module, split: Dataset, *, chunk_size: int, max_chunks: int, cache_dir: Path
) -> EncodedStates | None:
    """States of exactly this encoder and split if a previous run cached them, else None."""
    key = cache_key(encoder_fingerprint(encoder), split, chunk_size, max_chunks)
    path = Path(cache_dir) / f"states-{key}.npz"
    return EncodedStates.load(path) if path.exists() else None


def get_states(
    encoder: torch.nn.Module,
    split: Dataset,
    *,
    chunk_size: int,
    max_chunks: int,
    cache_dir: Path | None,
    batch_chunks: int,
    desc: str,
) -> EncodedStates:
    """States from the disk cache when present, else computed (and cached when cache_dir set)."""
    path = None
    if cache_dir is not None:
        key = cache_key(encoder_fingerprint(encoder), split, chunk_size, max_chunks)
        path = Path(cache_dir) / f"states-{key}.npz"
        if path.exists():
            log.info("%s: encoder states from cache %s", desc, path.name)
            return EncodedStates.load(path)
    states = compute_states(encoder, split, batch_chunks=batch_chunks, desc=desc)
    if path is not None:
        states.save(path)
    return states
