"""score_notes encodes chunks length-sorted and trimmed: the same logits and evidence positions as
the model's own chunked forward (padding chunks, padded tails), in the caller's note order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from medcoder.data import LabelSpace
from medcoder.data.features import featurize
from medcoder.modeling import MedCoderForICDCoding, scoring
from medcoder.modeling.batching import collate_chunks
from medcoder.modeling.scoring import score_notes

TEXTS = ["diabetes " * 40, "short note", "", "hypertension and pneumonia " * 9, "cough", "fever " * 23,
         "asthma with acute exacerbation " * 4]


def _setup(tiny_encoder: str):
    torch.manual_seed(0)
    space = LabelSpace.from_codes([["E11.9"], ["I10"], ["J18.9"], ["J45.901"]])
    model = MedCoderForICDCoding.from_encoder(tiny_encoder, space.codes, chunk_size=16, max_chunks=3,
                                              token_pool_stride=2).eval()
    splits = DatasetDict({"test": Dataset.from_dict(
        {"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS, "codes": [["I10"]] * len(TEXTS)})})
    feats = featurize(splits, AutoTokenizer.from_pretrained(tiny_encoder), space, chunk_size=16, max_chunks=3)
    return model, feats["test"]


@torch.inference_mode()
def _reference(model, split, k: int):
    """One note at a time through ``forward(input_ids=...)`` (padded chunks, the model compacts)."""
    cols = split.with_format(None, columns=["input_ids", "attention_mask"])
    logits, positions = [], []
    for i in range(len(split)):
        batch = collate_chunks([{**cols[i], "labels": []}])
        batch.pop("labels")
        out = model(**batch, return_label_attention=True)
        logits.append(out.logits[0].numpy())
        kk = min(k, out.attentions.shape[1])  # a note shorter than k pooled positions
        positions.append(torch.topk(out.attentions, kk, dim=1)[1][0].numpy())
    return np.stack(logits), positions


@pytest.mark.parametrize("window", [1, 2, 64])
def test_sorted_trimmed_encoding_equals_the_chunked_forward(tiny_encoder, monkeypatch, window) -> None:
    monkeypatch.setattr(scoring, "ENCODE_WINDOW_NOTES", window)
    monkeypatch.setattr(scoring, "ENCODE_BATCH_CHUNKS", 3)  # several trimmed groups per window
    model, split = _setup(tiny_encoder)
    ref_logits, ref_pos = _reference(model, split, k=2)
    got = score_notes(model, split, batch_size=2, evidence_top_k=2)
    np.testing.assert_allclose(got.logits, ref_logits, atol=1e-5, rtol=1e-5)
    for i, pos in enumerate(ref_pos):
        assert np.array_equal(got.top_positions[i, : len(pos)], pos), i


def test_encode_notes_returns_real_token_states_in_chunk_order(tiny_encoder) -> None:
    model, split = _setup(tiny_encoder)
    notes = list(split.with_format(None, columns=["input_ids", "attention_mask"]))
    states = scoring.encode_notes(model, notes, batch_chunks=2)
    assert [len(s) for s in states] == list(split["n_tokens"])
    with torch.inference_mode():  # the first note, chunk by chunk, untrimmed
        ids, mask = torch.tensor(notes[0]["input_ids"]), torch.tensor(notes[0]["attention_mask"])
        full = model.encode_chunks(ids, mask)
    expected = torch.cat([full[c, : int(mask[c].sum())] for c in range(len(ids))])
    torch.testing.assert_close(states[0], expected, atol=1e-5, rtol=1e-5)
