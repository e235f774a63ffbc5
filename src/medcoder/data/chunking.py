"""Split a tokenised note into fixed-size chunks, each framed by the encoder's special tokens.

PLM-ICD's recipe for notes longer than the encoder's window: every chunk is encoded on its own and
the label attention then looks at all chunks' token states together. A note longer than
``max_chunks`` chunks is cut, and flagged ``truncated`` so routing can send its codes to review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class ChunkedNote:
    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    truncated: bool
    n_tokens: int  # real tokens seen by the model, special tokens included


def chunk_ids(
    ids: list[int],
    *,
    chunk_size: int,
    max_chunks: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> ChunkedNote:
    """Chunks of ``chunk_size`` tokens (``[CLS] … [SEP]`` each, the last one padded)."""
    if chunk_size < 3 or max_chunks < 1:
        raise ValueError(f"chunk_size must be >= 3 and max_chunks >= 1, got {chunk_size}, {max_chunks}")
    body = chunk_size - 2
    pieces = [ids[i : i + body] for i in range(0, len(ids), body)] or [[]]
    truncated = len(pieces) > max_chunks
    pieces = pieces[:max_chunks]
    input_ids, masks, n_tokens = [], [], 0
    for piece in pieces:
        row = [cls_id, *piece, sep_id]
        n_tokens += len(row)
        pad = chunk_size - len(row)
        input_ids.append(row + [pad_id] * pad)
        masks.append([1] * len(row) + [0] * pad)
    return ChunkedNote(input_ids, masks, truncated, n_tokens)


def chunk_texts(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    chunk_size: int,
    max_chunks: int,
    return_offsets: bool = False,
) -> dict[str, list[Any]]:
    """Tokenise a batch of notes and chunk each; the result is a ``datasets.map`` batch.

    ``return_offsets`` (fast tokenizers) adds ``offsets``: the character span of every token, so
    inference can point at the text a code's attention chose (evidence) without re-tokenising.
    """
    special = {
        "cls_id": tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
        "sep_id": tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    }
    # Only the first max_chunks chunks are ever used; cap tokenisation a little beyond them so a
    # pathological 1 MB note does not stall the batch, while truncation is still detected.
    limit = max_chunks * (chunk_size - 2) + 1
    enc = tokenizer(
        texts, add_special_tokens=False, truncation=True, max_length=limit, return_attention_mask=False,
        return_offsets_mapping=return_offsets,
    )
    encoded = enc["input_ids"]
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "truncated": [], "n_tokens": []}
    if return_offsets:
        out["offsets"] = [[tuple(o) for o in offsets] for offsets in enc["offset_mapping"]]
    for ids in encoded:
        note = chunk_ids(ids, chunk_size=chunk_size, max_chunks=max_chunks, **special)
        out["input_ids"].append(note.input_ids)
        out["attention_mask"].append(note.attention_mask)
        out["truncated"].append(note.truncated)
        out["n_tokens"].append(note.n_tokens)
    return out
