"""The classifier: chunked and cached paths agree, save/load round-trips, freezing, pooling."""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoTokenizer

from medcoder.data.chunking import chunk_ids, chunk_texts
from medcoder.modeling import MedCoderForICDCoding
from medcoder.modeling.label_init import init_from_descriptions
from medcoder.modeling.model import compact_tokens, pool_tokens

CODES = ["E11.9", "I10", "J18.9"]


def _model(tiny_encoder: str, **kw) -> MedCoderForICDCoding:
    torch.manual_seed(0)
    return MedCoderForICDCoding.from_encoder(tiny_encoder, CODES, chunk_size=16, max_chunks=4, **kw).eval()


def _batch(tiny_encoder: str, texts: list[str]) -> dict[str, torch.Tensor]:
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    feats = chunk_texts(texts, tok, chunk_size=16, max_chunks=4)
    n = max(len(c) for c in feats["input_ids"])
    ids = torch.zeros(len(texts), n, 16, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (c_ids, c_mask) in enumerate(zip(feats["input_ids"], feats["attention_mask"], strict=True)):
        ids[b, : len(c_ids)] = torch.tensor(c_ids)
        mask[b, : len(c_mask)] = torch.tensor(c_mask)
    return {"input_ids": ids, "attention_mask": mask}


def test_chunk_ids_frames_pads_and_flags_truncation() -> None:
    note = chunk_ids(list(range(10, 20)), chunk_size=6, max_chunks=2, cls_id=1, sep_id=2, pad_id=0)
    assert note.input_ids == [[1, 10, 11, 12, 13, 2], [1, 14, 15, 16, 17, 2]]
    assert note.truncated  # 10 tokens need 3 chunks of 4
    short = chunk_ids([10, 11], chunk_size=6, max_chunks=2, cls_id=1, sep_id=2, pad_id=0)
    assert short.input_ids == [[1, 10, 11, 2, 0, 0]] and short.attention_mask == [[1, 1, 1, 1, 0, 0]]
    assert not short.truncated and short.n_tokens == 4
    empty = chunk_ids([], chunk_size=6, max_chunks=2, cls_id=1, sep_id=2, pad_id=0)
    assert empty.input_ids == [[1, 2, 0, 0, 0, 0]]


def test_cached_states_path_equals_chunked_path(tiny_encoder: str) -> None:
    """The quickstart trains on cached states and predicts from token ids: both must agree."""
    for stride in (1, 3):
        model = _model(tiny_encoder, token_pool_stride=stride)
        batch = _batch(tiny_encoder, ["diabetes " * 30, "short note about hypertension"])
        with torch.no_grad():
            direct = model(**batch).logits
            flat_ids = batch["input_ids"].reshape(-1, 16)
            flat_mask = batch["attention_mask"].reshape(-1, 16)
            cached = []
            for b in range(2):
                rows = range(b * batch["input_ids"].shape[1], (b + 1) * batch["input_ids"].shape[1])
                states = [
                    model.encode_chunks(flat_ids[r : r + 1], flat_mask[r : r + 1])[0][flat_mask[r].bool()]
                    for r in rows
                    if flat_mask[r].any()
                ]
                s = torch.cat(states).unsqueeze(0)
                cached.append(model(encoder_states=s, attention_mask=torch.ones(s.shape[:2])).logits)
        torch.testing.assert_close(direct, torch.cat(cached), atol=1e-5, rtol=1e-4)


def test_save_pretrained_round_trip_through_automodel(tiny_encoder: str, tmp_path) -> None:
    model = _model(tiny_encoder, token_pool_stride=2, codeset_fy=2026)
    batch = _batch(tiny_encoder, ["pneumonia and cough"])
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MedCoderForICDCoding)
    assert [loaded.config.id2label[i] for i in range(3)] == CODES
    assert loaded.config.codeset_fy == 2026 and loaded.config.token_pool_stride == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_pretrained_encoder_weights_are_loaded(tiny_encoder: str) -> None:
    reference = AutoModel.from_pretrained(tiny_encoder)
    model = _model(tiny_encoder)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], tensor)


def test_freeze_encoder_keeps_top_layers_trainable(tiny_encoder: str) -> None:
    model = _model(tiny_encoder)
    model.freeze_encoder(train_top_layers=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.encoder.layer.1.") for n in trainable)
    assert not any(n.startswith(("encoder.encoder.layer.0.", "encoder.embeddings")) for n in trainable)
    assert any(n.startswith("head.") for n in trainable)


def test_compact_and_pool_tokens() -> None:
    states = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1]])
    compact, cmask = compact_tokens(states, mask)
    assert compact[0].tolist() == [[0, 1], [4, 5], [6, 7], [10, 11]] and cmask.tolist() == [[1, 1, 1, 1]]
    pooled, pmask = pool_tokens(compact, cmask, 3)
    # windows: rows (0,1,2) -> mean [[0,1],[4,5],[6,7]] = [10/3, 13/3]; (3) -> [10, 11]
    torch.testing.assert_close(pooled[0], torch.tensor([[10 / 3, 13 / 3], [10.0, 11.0]]))
    assert pmask.tolist() == [[1, 1]]


def test_description_init_sets_rows_of_described_codes_only(tiny_encoder: str) -> None:
    model = _model(tiny_encoder)
    before = model.head.label_queries.weight.clone()
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    n = init_from_descriptions(model, tok, ["Type 2 diabetes mellitus", "", "Pneumonia"])
    assert n == 2
    after = model.head.label_queries.weight
    assert not torch.allclose(after[0], before[0]) and torch.equal(after[1], before[1])
