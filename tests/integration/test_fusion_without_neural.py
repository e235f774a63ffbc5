"""A fused coder without the neural view (``fusion.views=[tfidf,dictionary]``) end to end on a slice
of CodiEsp-P Spanish: train (no encoder, no Trainer: the configured encoder does not even exist) ->
calibrate -> export -> Coder.load -> predict, and the MLflow pyfunc model; no ``model/`` anywhere,
the run's test scores equal the bundle's, int8 quantisation refused."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from scipy.special import logit

from medcoder import Coder
from medcoder.calibration.calibrators import calibrator_from_dict
from medcoder.data import load_codiesp
from medcoder.errors import ConfigError
from medcoder.evaluation.note_predictions import note_predictions_filename, read_note_predictions
from medcoder.inference.bundle import verify_bundle
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.export import export_run
from medcoder.workflows.factories import build_corpus
from medcoder.workflows.train import train

from ..helpers.configs import LAX_ROUTING, compose_cfg, compose_named
from ..helpers.paths import CODIESP_DIR

pytestmark = pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")

N_NOTES = 60
VIEWS = ["tfidf", "dictionary"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("no_neural")
    cfg = compose_cfg([
        "experiment=quickstart_p_es", f"data.root={CODIESP_DIR}", "data.download=false",
        f"max_samples_per_split={N_NOTES}", f"paths.root_dir={root}", "fusion.views=[tfidf,dictionary]",
        # No encoder is resolved, downloaded or loaded without the neural view: a missing one must not matter.
        f"model.encoder={root / 'no-such-encoder'}",
    ])
    result = train(cfg)
    # A lax target so that some codes are certified on this small dev slice.
    calibrate(compose_named("calibrate", [f"run_id={result.run_id}", f"paths.root_dir={root}", *LAX_ROUTING]))
    exported = export_run(compose_named("export", [f"run_id={result.run_id}", f"paths.root_dir={root}",
                                                   f"output_dir={root / 'bundle'}",
                                                   "mlflow_model.registered_model_name=null"]))
    test = load_codiesp(CODIESP_DIR, language="es", code_type="P", splits=("test",))["test"]
    test = test.select(range(min(len(test), N_NOTES)))
    return {"root": root, "cfg": cfg, "result": result, "export": exported, "test": test,
            "client": mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")}


def test_run_logs_the_fused_metrics_and_artifacts_without_a_model(run) -> None:
    result, client = run["result"], run["client"]
    logged = client.get_run(result.run_id).data
    for split in ("dev", "test"):
        for name in ("map", "micro_f1", "p_at_8"):
            assert f"{split}_{name}" in logged.metrics
            assert all(f"{split}_{name}_{view}" in logged.metrics for view in VIEWS)
    assert {"train_wall_seconds", "decision_threshold", "fusion_oof_tfidf_seconds", "fusion_oof_dictionary_seconds",
            "fusion_fit_stacker_seconds", "test_truncated_share"} <= set(logged.metrics)
    assert not any("neural" in k for k in logged.metrics)
    # the fused ranking beats a random one on these notes (it learned something)
    assert logged.metrics["test_map"] > 0.2, logged.metrics["test_map"]
    # calibration logged its routing metrics to the same run
    assert {"tau_accept", "test_auto_accept_coverage", "test_auto_accept_precision"} <= set(logged.metrics)
    assert logged.tags["medcoder.model"] == "tfidf+dictionary" and logged.tags["medcoder.encoder_mode"] == "none"

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"labels.json", "metrics.json", "stacker.json", "scorers", "codiesp_run_test.tsv", "calibration.json",
            note_predictions_filename("test"), *(note_predictions_filename("test", v) for v in VIEWS)} <= artifacts
    assert "model" not in artifacts
    out = run["root"] / "outputs" / "runs" / result.run_id
    assert not (out / "model").exists()
    assert json.loads((out / "stacker.json").read_text())["params"]["views"] == VIEWS
    with np.load(out / "oof_train.npz") as oof:
        assert {"labels", "tfidf_scores", "dictionary_scores", "dictionary_hit"} <= set(oof.files)
        assert oof["tfidf_scores"].shape == oof["labels"].shape


def test_bundle_has_no_model_verifies_and_serves_the_runs_calibrated_scores(run) -> None:
    bundle = run["export"].bundle_dir
    manifest = verify_bundle(bundle)
    assert not (bundle / "model").exists() and not any(f.startswith("model/") for f in manifest.files)
    assert "stacker.json" in manifest.files and any(f.startswith("scorers/dictionary/") for f in manifest.files)
    assert "without a neural encoder" in (bundle / "MODEL_CARD.md").read_text()

    coder = Coder.load(bundle)
    assert list(coder.scorer.views) == VIEWS and coder.model is None and coder.tokenizer is None
    test = run["test"]
    texts, ids = list(test["text"]), list(test["id"])
    preds = coder.predict(texts, ids)

    # The run's own test scores (sigmoid of the fused logits, top 50 codes per note) ...
    stored = read_note_predictions(run["root"] / "outputs" / "runs" / run["result"].run_id
                                   / note_predictions_filename("test")).by_id()
    raw = coder.probabilities(texts, calibrated=False)
    index = coder.label_space.index
    calibration = json.loads((bundle / "calibration.json").read_text())
    calibrator = calibrator_from_dict(calibration["calibrator"])
    compared = 0
    for i, pred in enumerate(preds):
        note = stored[pred.id]
        # ... are the bundle's uncalibrated fused scores,
        np.testing.assert_allclose([raw[i, index[c]] for c in note.codes], note.probs, rtol=1e-5, atol=1e-7)
        # ... and, calibrated, the probabilities Coder.predict returns.
        run_probs = dict(zip(note.codes, note.probs, strict=True))
        for c in pred.codes:
            if c.code in run_probs and 1e-5 < run_probs[c.code] < 1 - 1e-5:
                want = calibrator.transform(np.array([[logit(run_probs[c.code])]]))[0, 0]
                assert c.probability == pytest.approx(want, abs=1e-4), (pred.id, c.code)
                compared += 1
    assert compared >= len(preds)

    codes = [c for p in preds for c in p.codes]
    accepted = [c for c in codes if c.decision == "auto_accept"]
    assert accepted, "the lax target should auto-accept some codes"
    assert all(c.evidence for c in accepted)  # no auto-accept without a span to check
    # ... by the no_evidence rule of the routing table (not an override after routing, which made
    # the line above true by construction): it fires on exactly the codes without a span, and
    # without evidence at all (evidence_top_k=0) on every predicted code, so nothing is accepted
    assert all(("no_evidence" in c.reasons) == (not c.evidence) for c in codes)
    bare = [c for p in coder.predict(texts, ids, evidence_top_k=0) for c in p.codes]
    assert [c.code for c in bare] == [c.code for c in codes]
    assert all(c.decision == "human_review" and "no_evidence" in c.reasons and not c.evidence for c in bare)
    # the rule acts before Learn-then-Test: the bundle accepts on the certify notes (the run's
    # certification split, which nothing was tuned on) what certification counted
    dev = build_corpus(run["cfg"].data, run["cfg"].certification)["certify"]
    dev = dev.select(range(min(len(dev), N_NOTES)))
    on_dev = coder.predict(list(dev["text"]), list(dev["id"]))
    n_dev = sum(c.decision == "auto_accept" for p in on_dev for c in p.codes)
    assert n_dev == calibration["guarantee"]["n_calibration_accepted"] == calibration["certified_accepted"]["n"]
    # sources: the views that support a code (a non-negated dictionary match, a view's top 15)
    assert all(set(c.sources) <= set(VIEWS) for c in codes) and any(c.sources == VIEWS for c in accepted)
    spans = [(p, e) for p, text in zip(preds, texts, strict=True) for c in p.codes for e in c.evidence]
    assert any(e["source"] == "dictionary" for _, e in spans)
    for p, text in zip(preds, texts, strict=True):
        for c in p.codes:
            assert all(0 <= e["start"] < e["end"] <= len(text) for e in c.evidence)
        assert not p.truncated  # no chunk limit without the neural view; CodiEsp notes are far below max_note_chars


def test_mlflow_pyfunc_model_serves_the_bundle(run, monkeypatch) -> None:
    import pandas as pd

    from medcoder.tracking.pyfunc import predictions_frame

    mlflow.set_tracking_uri(f"sqlite:///{run['root'] / 'mlflow.db'}")
    # the model is not registered, so it has no registry tag for an audit status: served as is only
    # when that is said explicitly (otherwise it fails closed: test_audit_suspension.py)
    monkeypatch.setenv("MEDCODER_AUDIT_STATUS_URI", "none")
    test = run["test"].select(range(5))
    ids, texts = list(test["id"]), list(test["text"])
    got = mlflow.pyfunc.load_model(run["export"].model_uri).predict(pd.DataFrame({"id": ids, "text": texts}))
    want = predictions_frame(Coder.load(run["export"].bundle_dir).predict(texts, ids))
    cols = [c for c in want.columns if c != "timestamp"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), want[cols].reset_index(drop=True))


def test_int8_export_is_refused_without_a_neural_view(run) -> None:
    with pytest.raises(ConfigError, match="no neural view"):
        export_run(compose_named("export", [f"run_id={run['result'].run_id}", f"paths.root_dir={run['root']}",
                                            f"output_dir={run['root'] / 'bundle-int8'}", "quantize=int8",
                                            "mlflow_model.log=false"]))
    assert not (run["root"] / "bundle-int8").exists()
