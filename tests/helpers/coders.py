"""In-memory coders built from a tiny random encoder (no training, no bundle, no MLflow)."""

from __future__ import annotations

import numpy as np
from transformers import AutoTokenizer

from medcoder.calibration.calibrators import make_calibrator
from medcoder.calibration.thresholds import DecisionThreshold
from medcoder.data.labels import LabelSpace
from medcoder.inference.coder import Coder
from medcoder.modeling import MedCoderForICDCoding
from medcoder.routing.policy import RoutingPolicy

CODES = [f"A{i:02d}" for i in range(12)]  # > 10 labels: config.json sorts "10" before "2"


def policy() -> RoutingPolicy:
    dt = DecisionThreshold.from_dict({"params": {"mode": "global", "min_positives": 5},
                                      "state": {"global_threshold": 0.0, "thresholds": [0.0] * len(CODES),
                                                "per_code": [False] * len(CODES)}})
    return RoutingPolicy(tau_accept=None, decision_threshold=dt, check_excludes1=False, check_validity=False)


def dummy_scores():

    return np.zeros((2, len(CODES)), np.float32), np.zeros((2, len(CODES)), np.float32)


def tiny_coder(tmp_path, tiny_encoder, chunk_size: int = 16, max_chunks: int = 8) -> Coder:
    model = MedCoderForICDCoding.from_encoder(tiny_encoder, CODES, chunk_size=chunk_size, max_chunks=max_chunks)
    cal = make_calibrator("none").fit(*dummy_scores())
    return Coder.from_model(model, AutoTokenizer.from_pretrained(tiny_encoder), LabelSpace(CODES, {c: 5 for c in CODES}),
                 cal, policy())
