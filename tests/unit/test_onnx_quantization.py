"""``onnx-int8``: the encoder as an int8 ONNX Runtime graph, notes encoded in parallel.

What the option does and guarantees (the same scores whatever the thread count or the other notes;
the exported graph is the torch encoder; the torch model is left as it was). No timing here:
``benchmarks/predict_speed.py`` measures speed.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

from medcoder.errors import ConfigError
from medcoder.modeling.loading import quantization_of, quantize_model
from medcoder.modeling.neural import NeuralScorer
from medcoder.modeling.onnx_encoder import OnnxEncoder, export_encoder
from medcoder.modeling.scoring import encode_note, score_notes

from ..helpers.coders import tiny_coder

TEXTS = ["fever and cough, pneumonia suspected " * 6, "diabetes mellitus type 2", "hypertension",
         "chest pain radiating to the left arm, troponin raised " * 3, ""]


def _pair(tmp_path, tiny_encoder, threads: int | None = None) -> tuple[NeuralScorer, NeuralScorer]:
    """The same random model twice: fp32, and onnx-int8 (``threads`` notes at a time)."""
    torch.manual_seed(0)  # the same random head on every call
    fp32 = tiny_coder(tmp_path, tiny_encoder, max_chunks=3).scorer.neural
    other = NeuralScorer(tiny_coder(tmp_path, tiny_encoder, max_chunks=3).model, fp32.tokenizer)
    other.model.load_state_dict(fp32.model.state_dict())
    other.quantize("onnx-int8")
    if threads is not None:
        other.model.runtime_encoder.threads = threads
    return fp32, other


def test_the_exported_graph_computes_the_torch_encoder(tiny_encoder, tmp_path) -> None:
    """Before quantisation the ONNX graph gives the torch encoder's states (any batch/length)."""
    model = tiny_coder(tmp_path, tiny_encoder).model.eval()
    session = OnnxEncoder(export_encoder(model.encoder))
    torch.manual_seed(1)
    for chunks, tokens in ((1, 16), (3, 11), (2, 5)):
        ids = torch.randint(100, 2000, (chunks, tokens))
        mask = torch.ones_like(ids)
        mask[-1, tokens // 2:] = 0
        with torch.inference_mode():
            expected = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(session(ids, mask), expected, atol=1e-4, rtol=1e-4)


def test_onnx_int8_attaches_a_runtime_encoder_and_leaves_the_torch_weights(tiny_encoder, tmp_path) -> None:
    scorer = tiny_coder(tmp_path, tiny_encoder).scorer.neural
    before = {k: v.clone() for k, v in scorer.model.state_dict().items()}
    assert scorer.model.runtime_encoder is None
    scorer.quantize("onnx-int8")
    model = scorer.model
    assert isinstance(model.runtime_encoder, OnnxEncoder)
    assert quantization_of(model) == "onnx-int8" and scorer.quantization == "onnx-int8"
    # The torch model is untouched (the head scores fp32; a reload quantises the same weights again).
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert quantize_model(model, "onnx-int8") is model  # idempotent
    with pytest.raises(ValueError, match="already quantised"):
        quantize_model(model, "dynamic-int8")
    with pytest.raises(ValueError, match="not saved"):
        scorer.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()
    # Every path that encodes chunks runs the int8 graph, not the fp32 encoder.
    ids, mask = torch.randint(100, 2000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    with torch.inference_mode():
        fp32 = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        via_model = model.encode_chunks(ids, mask)
    torch.testing.assert_close(via_model, model.runtime_encoder(ids, mask))
    assert not torch.equal(via_model, fp32)


def test_onnx_int8_scores_are_close_to_fp32_but_not_identical(tiny_encoder, tmp_path) -> None:
    fp32, int8 = _pair(tmp_path, tiny_encoder)
    a, b = fp32.score(TEXTS).scores, int8.score(TEXTS).scores
    assert a.shape == b.shape and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # scores shift: why a quantised bundle is recalibrated
    np.testing.assert_allclose(b, a, atol=0.1)


def test_a_notes_scores_do_not_depend_on_the_other_notes_or_the_thread_count(tiny_encoder, tmp_path) -> None:
    """Activations are scaled per encoder call: each note is encoded alone, on whichever thread."""
    _, one = _pair(tmp_path, tiny_encoder, threads=1)
    _, three = _pair(tmp_path, tiny_encoder, threads=3)
    together = three.score(TEXTS, batch_size=4).scores
    alone = np.stack([one.score([text]).scores[0] for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(one.score(TEXTS, batch_size=2).scores, together, atol=1e-6, rtol=1e-6)


def test_onnx_int8_scoring_ignores_the_fp32_state_cache(tiny_encoder, tmp_path) -> None:
    _, int8 = _pair(tmp_path, tiny_encoder)
    features, _ = int8.features(TEXTS)
    cached = score_notes(int8.model, features, cache_dir=tmp_path / "cache").logits
    np.testing.assert_array_equal(cached, score_notes(int8.model, features).logits)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_per_note_encoding_equals_the_chunked_forward_under_onnx(tiny_encoder, tmp_path) -> None:
    """Full chunks then the trimmed last chunk: the same states as one call on the padded chunks
    when the graph is not quantised (fp32 ONNX), so the per-note path drops nothing."""
    scorer = tiny_coder(tmp_path, tiny_encoder, max_chunks=3).scorer.neural
    scorer.model.runtime_encoder = OnnxEncoder(export_encoder(scorer.model.encoder))
    features, _ = scorer.features(TEXTS[:2])
    for row in features.with_format(None, columns=["input_ids", "attention_mask"]):
        mask = torch.tensor(row["attention_mask"])
        full = scorer.model.encode_chunks(torch.tensor(row["input_ids"]), mask)
        expected = torch.cat([full[c, : int(mask[c].sum())] for c in range(len(mask))])
        torch.testing.assert_close(encode_note(scorer.model, **row), expected, atol=1e-5, rtol=1e-5)


def test_the_session_survives_pickling(tiny_encoder, tmp_path) -> None:
    """Spark and multiprocessing pickle what they ship: the graph travels, the session is rebuilt."""
    model = tiny_coder(tmp_path, tiny_encoder).model
    session = OnnxEncoder.int8_from(model.encoder, threads=2)
    ids, mask = torch.randint(100, 2000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    list(session.map(lambda x: x, [1, 2]))  # a started pool must not stop pickling
    copy = pickle.loads(pickle.dumps(session))
    assert copy.threads == 2
    torch.testing.assert_close(copy(ids, mask), session(ids, mask), atol=0, rtol=0)
    session.close()


def test_without_onnxruntime_the_option_is_a_one_line_error(tiny_encoder, tmp_path, monkeypatch) -> None:
    scorer = tiny_coder(tmp_path, tiny_encoder).scorer.neural
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ConfigError, match=r"onnx-int8 needs onnx and onnxruntime") as info:
        scorer.quantize("onnx-int8")
    assert "medcoder[onnx]" in info.value.hint and "\n" not in str(info.value)
    assert scorer.quantization is None and scorer.model.runtime_encoder is None
