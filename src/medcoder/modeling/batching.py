"""Torch datasets + collators for the two training modes, with per-item lengths for
length-grouped batching (notes of similar length share a batch, so little padding is computed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from medcoder.modeling.state_cache import EncodedStates


class StatesDataset(torch.utils.data.Dataset):
    """Items ``{encoder_states (tokens, hidden) fp16, labels}`` from cached states."""

    def __init__(self, states: EncodedStates, labels: np.ndarray, order: np.ndarray | None = None) -> None:
        """``order`` permutes the items (e.g. by length for evaluation, which iterates in order)."""
        self.states = states
        self.labels = labels.astype(np.float32)
        self.order = np.arange(len(states)) if order is None else np.asarray(order)
        lengths = states.lengths()
        self.lengths = [lengths[i] for i in self.order]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.order[i])
        return {"encoder_states": self.states.note(j), "labels": self.labels[j]}


def collate_states(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad token states to the longest note of the batch; the mask marks real tokens."""
    width = max(len(it["encoder_states"]) for it in items)
    hidden = items[0]["encoder_states"].shape[1]
    states = torch.zeros(len(items), width, hidden, dtype=torch.float32)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    for b, it in enumerate(items):
        n = len(it["encoder_states"])
        states[b, :n] = torch.from_numpy(it["encoder_states"].astype(np.float32))
        mask[b, :n] = 1
    labels = torch.from_numpy(np.stack([it["labels"] for it in items]))
    return {"encoder_states": states, "attention_mask": mask, "labels": labels}


class ChunksDataset(torch.utils.data.Dataset):
    """Items ``{input_ids, attention_mask (chunks, chunk_size), labels}`` for end-to-end training."""

    def __init__(self, split: Dataset) -> None:
        self.split = split.with_format(None, columns=["input_ids", "attention_mask", "labels"])
        self.lengths = list(split["n_tokens"])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.split[i]


def collate_chunks(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad the chunk dimension with empty chunks (mask 0), which the model skips."""
    n_chunks = max(len(it["input_ids"]) for it in items)
    size = len(items[0]["input_ids"][0])
    ids = torch.zeros(len(items), n_chunks, size, dtype=torch.long)
    mask = torch.zeros(len(items), n_chunks, size, dtype=torch.long)
    for b, it in enumerate(items):
        c = len(it["input_ids"])
        ids[b, :c] = torch.tensor(it["input_ids"])
        mask[b, :c] = torch.tensor(it["attention_mask"])
    labels = torch.tensor([it["labels"] for it in items], dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
