"""The semantic view inside a fused coder, end to end on a slice of CodiEsp-D English: train
(``fusion.views=[tfidf,dictionary,semantic]``, a tiny random encoder for speed) -> calibrate ->
export -> verify -> Coder.load -> predict. The bundle carries the view's encoder (safetensors, no
code), serves the run's own fused test scores, and refuses an ``auto_map`` slipped into that
encoder's config."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pytest

from medcoder import Coder
from medcoder.errors import BundleError
from medcoder.evaluation.note_predictions import note_predictions_filename, read_note_predictions
from medcoder.inference.bundle import bundle_id_from_hashes, sha256_file, verify_bundle
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.export import export_run
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, compose_named
from ..helpers.paths import CODIESP_DIR

pytestmark = pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")

N_NOTES = 40
VIEWS = ["tfidf", "dictionary", "semantic"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("semantic")
    cfg = compose_cfg([
        "experiment=hybrid", f"data.root={CODIESP_DIR}", "data.download=false", f"max_samples_per_split={N_NOTES}",
        f"paths.root_dir={root}", f"fusion.views=[{','.join(VIEWS)}]", f"fusion.semantic.encoder={tiny_encoder}",
    ])
    result = train(cfg)
    calibrate(compose_named("calibrate", [f"run_id={result.run_id}", f"paths.root_dir={root}",
                                          "routing.min_train_count=1", "routing.target_precision=0.5",
                                          "routing.delta=0.5", "routing.min_coverage=0"]))
    exported = export_run(compose_named("export", [f"run_id={result.run_id}", f"paths.root_dir={root}",
                                                   f"output_dir={root / 'bundle'}", "mlflow_model.log=false"]))
    return {"root": root, "result": result, "export": exported,
            "client": mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")}


def test_run_fits_the_view_out_of_fold_and_logs_its_metrics(run) -> None:
    metrics = run["client"].get_run(run["result"].run_id).data.metrics
    assert all(f"{split}_map_semantic" in metrics for split in ("dev", "test"))
    assert "fusion_oof_semantic_seconds" in metrics and "fusion_fit_semantic_seconds" in metrics
    out = run["root"] / "outputs" / "runs" / run["result"].run_id
    assert json.loads((out / "stacker.json").read_text())["params"]["views"] == VIEWS
    with np.load(out / "oof_train.npz") as oof:
        assert oof["semantic_scores"].shape == oof["labels"].shape
        assert np.all(oof["semantic_scores"] <= 1.0 + 1e-5) and np.all(oof["semantic_scores"] >= -1.0 - 1e-5)


def test_bundle_carries_the_encoder_and_serves_the_runs_scores_with_sentence_evidence(run) -> None:
    bundle = run["export"].bundle_dir
    manifest = verify_bundle(bundle)
    assert {"scorers/semantic/semantic.json", "scorers/semantic/semantic_arrays.npz",
            "scorers/semantic/encoder/model.safetensors"} <= set(manifest.files)
    assert not any(f.endswith((".py", ".bin", ".pt", ".pkl")) for f in manifest.files)

    coder = Coder.load(bundle)
    assert list(coder.scorer.views) == VIEWS
    from medcoder.data import load_codiesp

    test = load_codiesp(CODIESP_DIR, language="en", code_type="D", splits=("test",))["test"].select(range(N_NOTES))
    texts, ids = list(test["text"]), list(test["id"])
    stored = read_note_predictions(run["root"] / "outputs" / "runs" / run["result"].run_id
                                   / note_predictions_filename("test")).by_id()
    raw = coder.probabilities(texts, calibrated=False)
    index = coder.label_space.index
    for i, note_id in enumerate(ids):
        note = stored[note_id]
        np.testing.assert_allclose([raw[i, index[c]] for c in note.codes], note.probs, rtol=1e-5, atol=1e-7)

    preds = coder.predict(texts, ids)
    spans = [(text, e) for p, text in zip(preds, texts, strict=True) for c in p.codes for e in c.evidence
             if e["source"] == "semantic"]
    assert spans, "the semantic view should give its best sentence as evidence for some predicted code"
    for text, e in spans:
        assert 0 <= e["start"] < e["end"] <= len(text) and -1.0 <= e["weight"] <= 1.0


def test_an_auto_map_in_the_views_encoder_is_refused(run, tmp_path) -> None:
    evil = shutil.copytree(run["export"].bundle_dir, tmp_path / "evil")
    config = evil / "scorers" / "semantic" / "encoder" / "config.json"
    data = json.loads(config.read_text())
    data["auto_map"] = {"AutoModel": "evil.EvilModel"}
    config.write_text(json.dumps(data))
    manifest = json.loads((evil / "manifest.json").read_text())  # what an attacker with write access does
    manifest["files"]["scorers/semantic/encoder/config.json"] = sha256_file(config)
    manifest["bundle_id"] = bundle_id_from_hashes(manifest["files"])
    (evil / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="auto_map"):
        verify_bundle(evil)
