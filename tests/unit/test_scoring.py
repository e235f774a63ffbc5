"""The shared scoring path: cached frozen-encoder states give the same logits as token ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from medcoder.data import LabelSpace
from medcoder.data.features import featurize
from medcoder.modeling import MedCoderForICDCoding
from medcoder.modeling.scoring import score_features
from medcoder.modeling.state_cache import EncodedStates, get_states

TEXTS = ["diabetes " * 40, "short note", "", "hypertension and pneumonia " * 9, "cough"]


def _setup(tiny_encoder: str, stride: int = 2):
    torch.manual_seed(0)
    space = LabelSpace.from_codes([["E11.9"], ["I10"], ["J18.9"]])
    model = MedCoderForICDCoding.from_encoder(tiny_encoder, space.codes, chunk_size=16, max_chunks=3,
                                              token_pool_stride=stride).eval()
    splits = DatasetDict({"test": Dataset.from_dict(
        {"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS, "codes": [["I10"]] * len(TEXTS)})})
    feats = featurize(splits, AutoTokenizer.from_pretrained(tiny_encoder), space, chunk_size=16, max_chunks=3)
    return model, feats["test"]


def test_cached_and_direct_scoring_agree_in_note_order(tiny_encoder, tmp_path) -> None:
    model, split = _setup(tiny_encoder)
    direct = score_features(model, split, batch_size=2)
    assert score_features(model, split, batch_size=2, cache_dir=tmp_path) == pytest.approx(direct)  # no cache yet
    states = get_states(model.encoder, split, chunk_size=16, max_chunks=3, cache_dir=tmp_path,
                        batch_chunks=3, desc="test")
    assert len(list(tmp_path.glob("states-*.npz"))) == 1
    cached = score_features(model, split, batch_size=2, cache_dir=tmp_path)
    # float16 storage of the states: equal up to half-precision rounding, and rows stay in order
    np.testing.assert_allclose(cached, direct, atol=2e-3, rtol=1e-2)
    assert np.argmax(cached, axis=1).tolist() == np.argmax(direct, axis=1).tolist()
    assert states.lengths() == list(split["n_tokens"])


def test_cache_is_keyed_by_encoder_weights(tiny_encoder, tmp_path) -> None:
    model, split = _setup(tiny_encoder)
    get_states(model.encoder, split, chunk_size=16, max_chunks=3, cache_dir=tmp_path, batch_chunks=4, desc="a")
    with torch.no_grad():
        model.encoder.embeddings.word_embeddings.weight.mul_(1.5)  # "fine-tuned" encoder
    get_states(model.encoder, split, chunk_size=16, max_chunks=3, cache_dir=tmp_path, batch_chunks=4, desc="b")
    assert len(list(tmp_path.glob("states-*.npz"))) == 2  # the stale cache is not reused


def test_encoded_states_save_is_atomic_and_round_trips(tmp_path) -> None:
    states = EncodedStates(np.arange(12, dtype=np.float16).reshape(6, 2), np.array([0, 2, 6]))
    states.save(tmp_path / "s.npz")
    loaded = EncodedStates.load(tmp_path / "s.npz")
    assert loaded.note(1).tolist() == states.note(1).tolist() and list(tmp_path.iterdir()) == [tmp_path / "s.npz"]


def test_non_finite_logits_are_refused(tiny_encoder) -> None:
    model, split = _setup(tiny_encoder)
    with torch.no_grad():
        model.head.label_bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        score_features(model, split)


def test_encoded_states_concat_keeps_every_note_whole_and_in_order() -> None:
    from medcoder.modeling.state_cache import EncodedStates

    rng = np.random.default_rng(0)
    first = EncodedStates(rng.normal(size=(5, 3)).astype(np.float16), np.array([0, 2, 5]))
    second = EncodedStates(rng.normal(size=(4, 3)).astype(np.float16), np.array([0, 1, 1, 4]))
    both = EncodedStates.concat(first, second)
    assert len(both) == 5 and both.lengths() == [2, 3, 1, 0, 3]
    for i in range(2):
        np.testing.assert_array_equal(both.note(i), first.note(i))
    for i in range(3):
        np.testing.assert_array_equal(both.note(2 + i), second.note(i))
    third = EncodedStates(rng.normal(size=(2, 3)).astype(np.float16), np.array([0, 2]))
    all_three = EncodedStates.concat(first, second, third)  # design all_labels: train, tuning, dev
    assert all_three.lengths() == [2, 3, 1, 0, 3, 2]
    np.testing.assert_array_equal(all_three.note(5), third.note(0))
    assert EncodedStates.concat(first).lengths() == first.lengths()
