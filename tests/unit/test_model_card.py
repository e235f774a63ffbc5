"""The model card says how a fused bundle combines its views (out-of-fold stacker, or the blend)."""

from __future__ import annotations

from medcoder.inference.model_card import render_model_card

_BASE = {"run_id": "r1", "train_config": {"data": {"name": "codiesp_d_es", "code_type": "D"}},
         "labels": {"codes": ["a", "b"], "codeset_fy": 2026}, "calibration": {}, "metrics": {"test_map": 0.5}}


def test_the_card_names_the_blend_where_the_bundle_has_one() -> None:
    params = {"views": ["tfidf", "dictionary"]}
    single = render_model_card(**_BASE, stacker={"params": params, "state": {}})
    blend = render_model_card(**_BASE, stacker={"params": params, "blend": {"out_of_fold": {}, "tuning": {}},
                                                "weights": {"out_of_fold": 0.75, "tuning": 0.25}})
    assert "a logistic-regression stacker fitted on out-of-fold training scores" in single
    assert "mean logit of two logistic-regression stackers" not in single
    assert "mean logit of two logistic-regression stackers (weights: out_of_fold 0.75, tuning 0.25)" in blend
    assert "Fused views: tfidf, dictionary" in blend
