"""scripts/calibrate.py's pipeline on a tiny trained run: it certifies τ at the default target on a
certification split big enough (the shipped ``certification.design=inner_train``: all 120 dev
notes certify; the tuning jobs read a fifth of train, so nothing was tuned on them), the certified
precision is that of the codes the fitted policy accepts on those notes, the routing contract is
logged, and an unreachable target is refused in plain words."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest

from medcoder.calibration.calibrators import calibrator_from_dict
from medcoder.data import LabelSpace
from medcoder.inference.coder import routing_inputs, score_for_routing
from medcoder.modeling import HybridScorer
from medcoder.routing.policy import RoutingPolicy
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.factories import build_corpus
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, compose_named, tiny_overrides
from ..helpers.corpus import write_noisy_corpus

ROUTING_KEYS = ["test_auto_accept_precision", "test_auto_accept_precision_lower", "test_auto_accept_coverage",
                "test_gold_auto_accepted", "test_docs_fully_auto"]


def test_calibrate_certifies_and_logs_routing_contract_to_the_training_run(tmp_path) -> None:
    # tfidf + dictionary: no encoder to train, so 120 dev notes cost seconds; the notes are noisy
    # (write_noisy_corpus), so τ falls inside the score range rather than at a saturated 1.0
    corpus = write_noisy_corpus(tmp_path / "corpus", n_train=120, n_dev=120, n_test=16)
    train_cfg = compose_cfg(tiny_overrides(tmp_path, corpus, str(tmp_path / "no-encoder"), "fusion=stacked",
                                           "fusion.views=[tfidf,dictionary]"))
    run = train(train_cfg)
    base = [f"run_id={run.run_id}", f"paths.root_dir={tmp_path}", "routing.min_train_count=1"]

    # An unreachable target is said in plain words, not relaxed, and accepts nothing.
    refused = calibrate(compose_named("calibrate", [*base, "routing.target_precision=0.99"]))
    assert refused.calibration["guarantee"]["tau"] is None and "nothing will be auto-accepted" in refused.message
    assert refused.metrics["test_auto_accept_coverage"] == 0.0
    assert refused.calibration["certified_accepted"]["n"] == 0

    result = calibrate(compose_named("calibrate", base))  # the shipped target: 0.90, delta 0.1
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    m = result.metrics
    assert {"test_ece_uncalibrated", "test_ece_calibrated", "test_brier_calibrated"} <= set(logged.data.metrics)
    for key in ROUTING_KEYS:
        assert key in m and key in logged.data.metrics
        # Undefined metrics (nothing accepted) are stored as NaN, never as a made-up number.
        assert math.isnan(logged.data.metrics[key]) == math.isnan(m[key])
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"calibration.json", "reliability_diagram.png", "precision_coverage.png"} <= artifacts
    run_dir = tmp_path / "outputs" / "runs" / run.run_id
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert cal == json.loads(json.dumps(result.calibration))
    assert cal["calibrator"]["method"] == "temperature" and cal["targets"]["target_precision"] == 0.90

    # Certified: a τ, and the calibration split's precision at it meets the target ...
    g = cal["guarantee"]
    assert g["feasible"] and g["tau"] is not None, result.message
    assert g["calibration_precision"] >= 0.90 and g["precision_lower_bound"] <= g["calibration_precision"]
    assert m["tau_accept"] == g["tau"] and m["certify_auto_accept_precision_calibration"] == g["calibration_precision"]
    assert (cal["calibration_split"], cal["certification_split"]) == ("dev", "certify")
    # ... and is the precision of what the fitted policy (as calibration.json stores it) accepts on
    # the certify notes (all of dev; the tuning dev is a fifth of train), rescored from the run's
    # folder by the inference path's functions.
    splits = build_corpus(train_cfg.data, train_cfg.certification)
    certify_ids, tune_ids = set(splits["certify"]["id"]), set(splits["dev"]["id"])
    train_ids = {json.loads(line)["id"] for line in Path(corpus["train"]).read_text(encoding="utf-8").splitlines()}
    assert len(certify_ids) == 120 and tune_ids < train_ids and not tune_ids & set(splits["train"]["id"])
    labels = LabelSpace.from_json(run_dir / "labels.json")
    frequency = np.array([labels.frequency.get(c, 0) for c in labels.codes], dtype=np.float32)
    policy = RoutingPolicy.from_dict(cal["policy"])
    dev = [r for r in map(json.loads, Path(corpus["dev"]).read_text(encoding="utf-8").splitlines())
           if r["id"] in certify_ids]
    scored = score_for_routing(HybridScorer.load(run_dir, frequency), [r["text"] for r in dev],
                               evidence_top_k=policy.evidence_top_k)
    probs = calibrator_from_dict(cal["calibrator"]).transform(scored.fused.logits)
    _, accept, _ = policy.route_arrays(routing_inputs(policy, labels, scored, probs))
    y = labels.encode([r["codes"] for r in dev]).astype(bool)
    assert int(accept.sum()) == g["n_calibration_accepted"] == cal["certified_accepted"]["n"] > 0
    assert float(y[accept].mean()) == pytest.approx(g["calibration_precision"], abs=1e-12)
    assert float(probs[accept].min()) >= g["tau"]
