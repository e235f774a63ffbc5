"""scripts/evaluate_evidence.py's workflow on a tiny fused run over a slice of CodiEsp-D Spanish:
evidence scored per view against CodiEsp-X spans, the CodiEsp-X submission + official F1, metrics
on the same MLflow run, a report without clinical text; English corpora refused in one line."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import mlflow
import pytest

from medcoder.data.mentions import load_codiesp_mentions
from medcoder.errors import ConfigError
from medcoder.evaluation.codiesp_x import read_x_submission
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.evaluate_evidence import evaluate_evidence
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, compose_named
from ..helpers.paths import CODIESP_DIR, REPO_ROOT

pytestmark = pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")

N_NOTES = 24  # enough eligible dev codes (>= 50) for the lax target to certify a tau


@pytest.fixture(scope="module")
def es_run(tmp_path_factory, tiny_encoder):
    """A fused (neural + tfidf + dictionary) run on the first notes of CodiEsp-D ES, calibrated."""
    root = tmp_path_factory.mktemp("evidence")
    run = train(compose_cfg([
        "data=codiesp_d_es", f"data.root={CODIESP_DIR}", "data.download=false",
        f"max_samples_per_split={N_NOTES}", f"model.encoder={tiny_encoder}", "model.chunk_size=128",
        "model.max_chunks=64", "model.encoder_overrides={}", f"paths.root_dir={root}", "trainer=cached_head",
        "fusion=stacked", "trainer.num_train_epochs=2", "trainer.per_device_train_batch_size=4",
        "trainer.disable_tqdm=true", "trainer.use_cpu=true",
        # 24 notes per split are too few to carve a tuning fifth out of train; this module is about
        # evidence scoring (the certification designs are tested in test_certification_split etc.)
        "certification.design=none",
    ]))
    # A lax target so the tiny model auto-accepts some codes (chunks long enough for whole notes: a
    # truncated note's codes are never accepted).
    calibrate(compose_named("calibrate", [f"run_id={run.run_id}", f"paths.root_dir={root}", "routing.min_train_count=1",
                                          "routing.target_precision=0.3", "routing.delta=0.5",
                                          "routing.min_coverage=0"]))
    return {"root": root, "run_id": run.run_id}


def _evaluate(es_run, *extra: str):
    return evaluate_evidence(compose_named("evaluate_evidence", [
        f"run_id={es_run['run_id']}", f"paths.root_dir={es_run['root']}", *extra]))


def test_train_split_evidence_is_scored_per_view_and_logged(es_run) -> None:
    # On train the dictionary's lexicon is these notes' own spans: its evidence must hit them.
    result = _evaluate(es_run, "split=train", "max_notes=8")
    m = result.metrics
    for view in ("neural", "tfidf", "dictionary", "all"):
        for name in ("char_precision", "char_recall", "char_f1", "hit_rate", "iou", "coverage"):
            assert f"evidence_train_{view}_{name}" in m
    assert m["evidence_train_n_scored_codes"] > 0
    assert m["evidence_train_dictionary_coverage"] > 0.5
    assert m["evidence_train_dictionary_hit_rate"] > 0.8 and m["evidence_train_dictionary_char_precision"] > 0.8
    assert 0 <= m["evidence_train_all_char_recall"] <= 1 and m["evidence_train_all_coverage"] == 1.0
    assert 0 < m["codiesp_x_train_f1"] <= m["codiesp_x_train_d_f1"] <= 1  # P rows only add gold in the first
    assert m["evidence_train_n_auto_accepted"] > 0
    share, scorable = m["evidence_train_auto_accept_overlap"], m["evidence_train_auto_accept_overlap_scorable"]
    assert 0 <= m["evidence_train_auto_accept_first_overlap"] <= share <= 1 and (math.isnan(scorable) or share <= scorable)

    report = json.loads(result.report_path.read_text())
    assert report["split"] == "train" and report["n_notes"] == 8 and report["evidence"]["n_scored"] > 0
    assert report["codiesp_x"]["scores"]["official"]["f1"] == pytest.approx(m["codiesp_x_train_f1"])
    # the submission: ids, offsets, label and CodiEsp-spelled codes only
    lines = result.submission_path.read_text(encoding="utf-8").splitlines()
    assert lines and all(re.fullmatch(r"\S+\t\d+ \d+\tDIAGNOSTICO\t[a-z0-9.]+", line) for line in lines)
    # no clinical text in the report or the submission (gold mention strings of these notes)
    mentions = load_codiesp_mentions(CODIESP_DIR, "train", "D")
    docs = {r.doc for r in read_x_submission(result.submission_path)}
    assert 0 < len(docs) <= 8 and docs <= set(mentions)
    texts = {mm.text for d in docs for mm in mentions.get(d, []) if len(mm.text) >= 8}
    written = result.report_path.read_text(encoding="utf-8") + "\n".join(lines)
    assert texts and not any(t in written for t in texts)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{es_run['root'] / 'mlflow.db'}")
    logged = client.get_run(es_run["run_id"]).data.metrics
    assert logged["evidence_train_dictionary_char_f1"] == pytest.approx(m["evidence_train_dictionary_char_f1"])
    paths = {a.path for a in client.list_artifacts(es_run["run_id"])}
    assert {"evidence_train.json", "codiesp_x_train.tsv"} <= paths


def test_test_split_uses_the_unqualified_keys(es_run) -> None:
    result = _evaluate(es_run, "max_notes=4", "log_to_mlflow=false")
    assert {"evidence_dictionary_char_f1", "evidence_auto_accept_overlap", "codiesp_x_f1", "codiesp_x_d_f1",
            "codiesp_x_d_f1_dictionary"} <= set(result.metrics)
    assert result.report_path.name == "evidence_test.json"
    assert result.report_path.parent == es_run["root"] / "outputs" / "runs" / es_run["run_id"]


def test_english_corpus_is_refused_with_one_config_error(es_run) -> None:
    english = "data={name:codiesp_d_en,format:codiesp,language:en,code_type:D}"
    with pytest.raises(ConfigError, match="needs CodiEsp-X Spanish spans"):
        _evaluate(es_run, english)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "evaluate_evidence.py"),
                           f"run_id={es_run['run_id']}", f"paths.root_dir={es_run['root']}", english],
                          capture_output=True, text=True, timeout=300, cwd=es_run["root"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "CodiEsp-X Spanish spans" in errors[0] and "Traceback" not in proc.stderr
