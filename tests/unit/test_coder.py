"""Coder construction checks and the evidence position arithmetic (no training needed)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from medcoder.calibration.calibrators import make_calibrator
from medcoder.data.chunking import chunk_texts
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError
from medcoder.inference.coder import Coder
from medcoder.modeling import MedCoderForICDCoding
from medcoder.modeling.evidence import evidence_spans, position_char_span

from ..helpers.coders import CODES, dummy_scores, policy, tiny_coder


def test_coder_accepts_a_reloaded_model_and_refuses_mismatched_labels(tmp_path, tiny_encoder) -> None:
    model = MedCoderForICDCoding.from_encoder(tiny_encoder, CODES, chunk_size=16, max_chunks=2)
    model.save_pretrained(tmp_path)
    reloaded = MedCoderForICDCoding.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    cal = make_calibrator("none").fit(*dummy_scores())
    coder = Coder.from_model(reloaded, tok, LabelSpace(CODES, {c: 5 for c in CODES}), cal, policy())
    preds = coder.predict(["fever and cough", ""], ["a", "b"])
    assert preds[1].document_reasons == ["empty_note"] and preds[1].codes == []
    assert len(preds[0].codes) == len(CODES)  # threshold 0: everything predicted, all to review
    with pytest.raises(BundleError, match="labels"):
        Coder.from_model(reloaded, tok, LabelSpace(list(reversed(CODES))), cal, policy())


def test_position_char_span_follows_chunks_specials_and_pooling(tiny_encoder) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    out = chunk_texts([text], tok, chunk_size=6, max_chunks=5, return_offsets=True)
    offsets = out["offsets"][0]
    # chunk_size 6 = [CLS] + 4 tokens + [SEP]; compacted position 0 is [CLS], 1..4 tokens 0..3,
    # 5 is [SEP], 6 the next [CLS], 7 token 4 ...
    assert position_char_span(0, offsets, chunk_size=6, stride=1) is None
    assert position_char_span(1, offsets, chunk_size=6, stride=1) == offsets[0]
    assert position_char_span(7, offsets, chunk_size=6, stride=1) == offsets[4]
    assert position_char_span(5, offsets, chunk_size=6, stride=1) is None
    # stride 2: pooled position 0 covers [CLS] + token 0
    assert position_char_span(0, offsets, chunk_size=6, stride=2) == offsets[0]
    words = [text[a:b] for a, b in offsets]
    assert words[:2] == ["alpha", "beta"]
    spans = evidence_spans([1, 2, 7], [0.2, 0.5, 0.3], offsets, chunk_size=6, stride=1)
    # positions 1 and 2 touch ("alpha beta") and merge; highest weight first
    assert [text[s["start"]:s["end"]] for s in spans] == ["alpha beta", "epsilon"]
    assert evidence_spans([1], [0.005], offsets, chunk_size=6, stride=1) == []  # below min_weight: noise
    pieces = chunk_texts(["hematuria"], tok, chunk_size=8, max_chunks=2, return_offsets=True)["offsets"][0]
    assert len(pieces) > 1  # word pieces
    spans = evidence_spans([1], [0.9], pieces, chunk_size=8, stride=1, text="hematuria")
    assert spans == [{"start": 0, "end": 9, "weight": 0.9}]  # widened to the whole word


def test_notes_over_max_note_chars_are_cut_and_flagged(tmp_path, tiny_encoder) -> None:
    from medcoder.inference.coder import DEFAULT_MAX_NOTE_CHARS
    from medcoder.inference.prediction import text_sha256

    coder = tiny_coder(tmp_path, tiny_encoder)
    assert coder.max_note_chars == DEFAULT_MAX_NOTE_CHARS >= 32_520  # longest CodiEsp note
    short, long = "fever and cough", "fever and cough " * 4  # both fit the model's 8 chunks
    preds = coder.predict([short, long], ["s", "l"], max_note_chars=20)
    assert [p.truncated for p in preds] == [False, True]
    assert preds[1].input_sha256 == text_sha256(long[:20])  # the text that was scored
    assert preds[1].codes and all("truncated_note" in c.reasons for c in preds[1].codes)
    assert all("truncated_note" not in c.reasons for c in preds[0].codes)
    assert all(e["end"] <= 20 for c in preds[1].codes for e in c.evidence)
    assert not coder.predict([long], max_note_chars=None)[0].truncated
    coder.max_note_chars = 20  # the attribute is the default (what the pyfunc / server path uses)
    assert coder.predict([long])[0].truncated
    # probabilities() reads the same prefix: identical to scoring the cut note itself
    np.testing.assert_allclose(coder.probabilities([long]), coder.probabilities([long[:20]]))


def test_predict_refuses_invalid_unicode_and_settings_with_medcoder_errors(tmp_path, tiny_encoder) -> None:
    from medcoder.errors import ConfigError, DataError

    coder = tiny_coder(tmp_path, tiny_encoder)
    with pytest.raises(DataError, match=r"note 'b': text is not valid Unicode \(unpaired surrogate U\+D800"):
        coder.predict(["fine", "bad \ud800"], ["a", "b"])
    with pytest.raises(DataError, match="id is not valid Unicode"):
        coder.predict(["fine"], ["\udcff"])
    for kw in ({"batch_size": 0}, {"evidence_top_k": -1}, {"max_note_chars": 0}):
        with pytest.raises(ConfigError, match=f"{next(iter(kw))}="):
            coder.predict(["fine"], **kw)
