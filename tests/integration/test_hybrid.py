"""The fused coder end to end on a tiny corpus: train (neural + tfidf + dictionary, stacker on
out-of-fold scores) -> calibrate -> export -> Coder.load -> predict; the run file's official MAP."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from medcoder import Coder
from medcoder.evaluation.note_predictions import note_predictions_filename, read_note_predictions
from medcoder.routing.reasons import ALL_REASONS
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.export import export_run
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, compose_named, tiny_overrides
from ..helpers.corpus import write_corpus


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


@pytest.fixture(scope="module")
def fused(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("fused")
    corpus = write_corpus(root / "corpus", n_train=60, n_dev=80, n_test=16, seed=3)
    run = train(compose_cfg(tiny_overrides(root, corpus, tiny_encoder, "trainer=cached_head", "fusion=stacked",
                                           "trainer.num_train_epochs=6", "trainer.learning_rate=0.05",
                                           "model.max_chunks=8")))
    calibrate(compose_named("calibrate", [f"run_id={run.run_id}", f"paths.root_dir={root}",
                                          "routing.min_train_count=1", "routing.target_precision=0.6",
                                          "routing.check_validity=false"]))
    result = export_run(compose_named("export", [f"run_id={run.run_id}", f"paths.root_dir={root}",
                                                 f"output_dir={root / 'bundle'}",
                                                 "mlflow_model.registered_model_name=null"]))
    return {"root": root, "run": run, "bundle": result.bundle_dir, "corpus": corpus}


def test_fused_run_logs_every_view_and_the_stacker(fused) -> None:
    m = fused["run"].metrics
    for view in ("neural", "tfidf", "dictionary"):
        assert {f"test_map_{view}", f"test_micro_f1_{view}", f"test_p_at_8_{view}"} <= set(m)
    assert {"fusion_oof_neural_seconds", "fusion_fit_stacker_seconds"} <= set(m)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{fused['root'] / 'mlflow.db'}")
    paths = {a.path for a in client.list_artifacts(fused["run"].run_id)}
    assert {"stacker.json", "scorers", "codiesp_run_test.tsv", "codiesp_run_test.trec"} <= paths
    stacker = json.loads((fused["root"] / "outputs" / "runs" / fused["run"].run_id / "stacker.json").read_text())
    assert stacker["params"]["views"] == ["neural", "tfidf", "dictionary"]


def test_bundle_carries_every_view_without_pickle_and_predicts_with_sources(fused) -> None:
    bundle = fused["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == 3
    files = set(manifest["files"])
    assert "stacker.json" in files and any(f.startswith("scorers/tfidf/") for f in files)
    assert any(f.startswith("scorers/dictionary/") for f in files)
    assert not any(f.endswith((".pkl", ".pickle", ".joblib", ".py")) for f in files)
    coder = Coder.load(bundle)
    assert list(coder.scorer.views) == ["neural", "tfidf", "dictionary"]
    texts = [json.loads(line)["text"] for line in _lines(fused["corpus"]["test"])]
    preds = coder.predict(texts)
    codes = [c for p in preds for c in p.codes]
    assert codes and all(c.sources for c in codes if c.decision == "auto_accept")
    # every auto-accepted code can be checked against the note: at least one evidence span
    assert all(c.evidence for c in codes if c.decision == "auto_accept")
    assert any(c.decision == "auto_accept" for c in codes)
    # ... because no_evidence is a rule of the routing table (not an override after routing, which
    # made the line above true by construction): without evidence (evidence_top_k=0) it fires on
    # every predicted code, next to the reasons the code already had, and nothing is accepted.
    bare = coder.predict(texts, evidence_top_k=0)
    assert [[c.code for c in p.codes] for p in bare] == [[c.code for c in p.codes] for p in preds]
    for p, q in zip(preds, bare, strict=True):
        for c, d in zip(p.codes, q.codes, strict=True):
            assert d.decision == "human_review" and not d.evidence
            assert d.reasons == [r for r in ALL_REASONS if r in {*c.reasons, "no_evidence"}], (c.reasons, d.reasons)
    for p, text in zip(preds, texts, strict=True):
        for c in p.codes:
            assert all(0 <= e["start"] < e["end"] <= len(text) and e["source"] for e in c.evidence)


def test_run_file_gives_the_logged_test_map_under_trectools(fused) -> None:
    import trectools

    run_dir = fused["root"] / "outputs" / "runs" / fused["run"].run_id
    gold = [(json.loads(line)["id"], c) for line in _lines(fused["corpus"]["test"]) for c in json.loads(line)["codes"]]
    qrels = run_dir / "gold.qrel"
    qrels.write_text("".join(f"{d} 0 {c} 1\n" for d, c in gold))
    ev = trectools.TrecEval(trectools.TrecRun(str(run_dir / "codiesp_run_test.trec")),
                            trectools.TrecQrel(str(qrels)))
    assert ev.get_map(depth=1000, trec_eval=False) == pytest.approx(fused["run"].metrics["test_map"], abs=1e-6)


def test_hybrid_probabilities_are_what_predict_reports_and_what_training_scored(fused) -> None:
    """``Coder.probabilities`` against two other paths (not its own formula again): the
    probabilities ``Coder.predict`` reports for its codes, and, uncalibrated, the fused test scores
    the training run stored (``note_predictions``, scored by the workflow, not by the bundle)."""
    coder = Coder.load(fused["bundle"])
    rows = [json.loads(line) for line in _lines(fused["corpus"]["test"])]
    ids, texts = [r["id"] for r in rows], [r["text"] for r in rows]
    probs = coder.probabilities(texts)
    index = coder.label_space.index
    preds = coder.predict(texts, ids)
    reported = [(i, index[c.code], c.probability) for i, p in enumerate(preds) for c in p.codes]
    assert reported
    for i, j, probability in reported:
        assert probability == pytest.approx(float(probs[i, j]), abs=1e-6)
    raw = coder.probabilities(texts, calibrated=False)
    run_dir = fused["root"] / "outputs" / "runs" / fused["run"].run_id
    stored = read_note_predictions(run_dir / note_predictions_filename("test")).by_id()
    for i, note_id in enumerate(ids):
        note = stored[note_id]
        # the run scored the neural view from cached float16 encoder states: close, not equal
        np.testing.assert_allclose([raw[i, index[c]] for c in note.codes], note.probs, atol=2e-3)
    # the calibrator was applied (a fitted temperature moves the probabilities) and, one temperature
    # for every code, kept each note's order (ties aside: high scores saturate at 1.0)
    assert np.abs(probs - raw).max() > 1e-3
    for i in range(len(texts)):
        order = np.lexsort((probs[i], raw[i]))  # by raw score; raw ties by probability
        assert np.all(np.diff(probs[i, order]) >= 0), i
