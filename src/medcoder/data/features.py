"""Turn a ``DatasetDict`` of notes into model inputs: chunked token ids and multi-hot labels.

The note text is dropped here: nothing downstream of featurisation (checkpoints, caches, MLflow)
ever holds clinical text.
"""

from __future__ import annotations

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase

from medcoder.data.chunking import chunk_texts
from medcoder.data.labels import LabelSpace


def featurize(
    splits: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    label_space: LabelSpace,
    *,
    chunk_size: int,
    max_chunks: int,
) -> DatasetDict:
    """Add ``input_ids``/``attention_mask`` (chunks x tokens), ``truncated``, ``n_tokens``,
    ``n_chunks`` and ``labels`` (multi-hot over the label space); remove ``text``."""

    def _map(batch: dict) -> dict:
        out = chunk_texts(batch["text"], tokenizer, chunk_size=chunk_size, max_chunks=max_chunks)
        out["n_chunks"] = [len(c) for c in out["input_ids"]]
        out["labels"] = label_space.encode(batch["codes"]).tolist()
        return out

    return splits.map(_map, batched=True, batch_size=64, remove_columns=["text"], desc="chunking")
