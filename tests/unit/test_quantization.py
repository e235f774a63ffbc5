"""Dynamic int8 quantisation of the neural view: which layers, what it refuses, and that it scores.

No timing here (benchmarks/predict_speed.py measures speed); only what the option does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from medcoder.modeling.loading import quantization_of, quantize_model
from medcoder.modeling.neural import NeuralScorer
from medcoder.modeling.scoring import score_notes

from ..helpers.coders import tiny_coder

TEXTS = ["fever and cough, pneumonia suspected " * 6, "diabetes mellitus type 2", "hypertension"]


def _linear_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear | DynamicQuantizedLinear)}


def test_int8_quantises_every_encoder_linear_and_not_the_label_head(tmp_path, tiny_encoder) -> None:
    coder = tiny_coder(tmp_path, tiny_encoder)
    model = coder.model
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    n_encoder_linear = len(_linear_layers(model.encoder))
    assert n_encoder_linear > 0
    quantize_model(model, "dynamic-int8")

    encoder_linear = _linear_layers(model.encoder)
    assert len(encoder_linear) == n_encoder_linear
    assert all(isinstance(m, DynamicQuantizedLinear) for m in encoder_linear.values()), encoder_linear
    # The label-attention head (projection, label queries, label weights) stays fp32 and unchanged.
    assert type(model.head.projection) is torch.nn.Linear and type(model.head.label_queries) is torch.nn.Linear
    for name, tensor in model.head.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, head_before[name]), name
    assert model.encoder.embeddings.word_embeddings.weight.dtype == torch.float32
    assert quantization_of(model) == "dynamic-int8" and coder.quantization == "dynamic-int8"
    assert quantize_model(model, "dynamic-int8") is model  # idempotent


def test_quantised_scores_are_close_to_fp32_but_not_identical(tmp_path, tiny_encoder) -> None:
    fp32 = tiny_coder(tmp_path, tiny_encoder).scorer.neural
    int8 = NeuralScorer(tiny_coder(tmp_path, tiny_encoder).model, fp32.tokenizer)
    int8.model.load_state_dict(fp32.model.state_dict())
    int8.quantize("dynamic-int8")
    a, b = fp32.score(TEXTS).scores, int8.score(TEXTS).scores
    assert a.shape == b.shape and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # scores shift: why a quantised bundle is recalibrated
    np.testing.assert_allclose(b, a, atol=0.1)


def test_quantised_model_is_never_saved_and_unknown_methods_are_refused(tmp_path, tiny_encoder) -> None:
    scorer = tiny_coder(tmp_path, tiny_encoder).scorer.neural
    with pytest.raises(ValueError, match="not supported"):
        scorer.quantize("int4")
    scorer.quantize("dynamic-int8")
    with pytest.raises(ValueError, match="not saved"):
        scorer.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_quantised_scoring_ignores_the_fp32_state_cache(tmp_path, tiny_encoder) -> None:
    """The state cache holds the fp32 encoder's states: a quantised encoder computes its own."""
    scorer = tiny_coder(tmp_path, tiny_encoder).scorer.neural
    scorer.quantize("dynamic-int8")
    features, _ = scorer.features(TEXTS)
    cached = score_notes(scorer.model, features, cache_dir=tmp_path / "cache").logits
    np.testing.assert_array_equal(cached, score_notes(scorer.model, features).logits)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_quantised_scores_of_a_note_do_not_depend_on_the_other_notes(tmp_path, tiny_encoder) -> None:
    """Dynamic quantisation scales activations by everything in an encoder call: one call per note
    keeps a served single note's probability equal to the same note's in a batch file."""
    scorer = tiny_coder(tmp_path, tiny_encoder).scorer.neural
    scorer.quantize("dynamic-int8")
    together = scorer.score(TEXTS, batch_size=2).scores
    alone = np.stack([scorer.score([text]).scores[0] for text in TEXTS])
    np.testing.assert_allclose(alone, together, atol=1e-5, rtol=1e-5)


def test_encode_note_equals_the_chunked_forward_and_keeps_chunk_order(tmp_path, tiny_encoder) -> None:
    """The per-note encoding (full chunks, then the trimmed last chunk) gives the states of the
    model's own chunked forward (fp32 here, where both must agree up to float rounding)."""
    from medcoder.modeling.batching import collate_chunks
    from medcoder.modeling.scoring import encode_note

    scorer = tiny_coder(tmp_path, tiny_encoder, max_chunks=3).scorer.neural
    features, _ = scorer.features(TEXTS)
    rows = features.with_format(None, columns=["input_ids", "attention_mask"])
    assert max(len(r["input_ids"]) for r in rows) > 1  # several chunks, a partial last one
    for i, row in enumerate(rows):
        with torch.inference_mode():
            states = encode_note(scorer.model, **row)
            mask = torch.tensor(row["attention_mask"])
            full = scorer.model.encode_chunks(torch.tensor(row["input_ids"]), mask)
        expected = torch.cat([full[c, : int(mask[c].sum())] for c in range(len(mask))])
        assert len(states) == features[i]["n_tokens"]
        torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-5)
        batch = collate_chunks([{**row, "labels": []}])
        batch.pop("labels")
        with torch.inference_mode():
            direct = scorer.model(**batch).logits
            via_states = scorer.model(encoder_states=states[None], attention_mask=torch.ones(1, len(states))).logits
        torch.testing.assert_close(via_states, direct, atol=1e-5, rtol=1e-5)
