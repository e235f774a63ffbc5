"""Issue 22: a Coder is refused at construction when its calibration does not fit its label space.

Before: a policy with fewer decision thresholds than codes (a shortened ``calibration.json``)
built a Coder, and the first ``predict`` crashed with a ``ValueError`` traceback. Every reader of
``calibration.json`` builds a Coder (``Coder.load``, the evidence evaluation's ``coder_from_run``),
so the check sits there.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from medcoder.calibration.calibrators import PlattCalibrator, TemperatureCalibrator, make_calibrator
from medcoder.calibration.thresholds import DecisionThreshold
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError
from medcoder.inference.coder import Coder
from medcoder.modeling import MedCoderForICDCoding
from medcoder.routing.policy import RoutingPolicy

from ..helpers.coders import CODES, dummy_scores, policy


def _parts(tiny_encoder):
    model = MedCoderForICDCoding.from_encoder(tiny_encoder, CODES, chunk_size=16, max_chunks=2)
    return model, AutoTokenizer.from_pretrained(tiny_encoder), LabelSpace(CODES, dict.fromkeys(CODES, 5))


def test_thresholds_of_another_length_are_refused_at_construction(tiny_encoder) -> None:
    model, tok, labels = _parts(tiny_encoder)
    cal = make_calibrator("none").fit(*dummy_scores())
    short = RoutingPolicy(None, DecisionThreshold.fixed(0.5, n_labels=3), check_excludes1=False, check_validity=False)
    with pytest.raises(BundleError, match=rf"thresholds has 3 entries, expected {len(CODES)}") as info:
        Coder.from_model(model, tok, labels, cal, short)
    assert "\n" not in str(info.value)
    unfitted = RoutingPolicy(None, DecisionThreshold(), check_excludes1=False, check_validity=False)
    with pytest.raises(BundleError, match="no fitted thresholds"):
        Coder.from_model(model, tok, labels, cal, unfitted)


def test_calibrators_that_do_not_fit_the_codes_are_refused(tiny_encoder) -> None:
    model, tok, labels = _parts(tiny_encoder)
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(100, 3)), (rng.random((100, 3)) < 0.5).astype(float)
    with pytest.raises(BundleError, match=rf"calibrator\.state has 3 per-code parameters, expected {len(CODES)}"):
        Coder.from_model(model, tok, labels, PlattCalibrator(min_positives=5).fit(logits, y), policy())
    with pytest.raises(BundleError, match=r"calibrator \(temperature\) has no fitted state"):
        Coder.from_model(model, tok, labels, TemperatureCalibrator(), policy())
    # A calibrator and policy that fit build a coder that predicts.
    coder = Coder.from_model(model, tok, labels, make_calibrator("none").fit(*dummy_scores()), policy())
    assert coder.predict(["fever"])[0].id == "0"
