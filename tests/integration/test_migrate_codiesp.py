"""Migrate the real CodiEsp-D labels to FY2026 through the script's config (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir

from medcoder.data import load_corpus
from medcoder.workflows.codesets import run_migrate_labels

from ..helpers.paths import CODIESP_DIR, REPO_ROOT

pytestmark = pytest.mark.skipif(not CODIESP_DIR.is_dir(), reason="CodiEsp not available")


def test_migrate_codiesp_d_to_fy2026(tmp_path: Path):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("migrate_labels", [
            "data=codiesp_d_en", "to_fy=2026", f"data.root={CODIESP_DIR}", f"paths.root_dir={tmp_path}",
        ])
    result, paths = run_migrate_labels(cfg)
    report = json.loads(paths["report"].read_text())
    assert report["n_distinct_codes"] == 2557  # SOURCE.md: distinct D codes over the three splits
    assert sum(report["distinct_codes"].values()) == 2557
    assert sum(report["code_occurrences"].values()) == report["n_code_occurrences"] == 5639 + 2677 + 2842
    assert report["distinct_codes"]["normalised"] == 98  # truncated placeholder forms (T81.4XX ...)
    assert report["reference_fy"] == 2025 and report["distinct_codes"]["flagged"] >= 1  # G35 split
    flagged = paths["flagged_documents"].read_text()
    assert ",G35,flagged,now_header,G35.A " in flagged
    # Same format as the input: CodiEsp's release layout, read back by the CodiEsp loader.
    assert (paths["train"] / "trainD.tsv").is_file() and (paths["train"] / "text_files_en").is_dir()
    assert "data=codiesp_d_en data.root=" in report["data_override"]
    migrated = load_corpus({"format": "codiesp", "root": str(paths["train"].parent), "language": "en",
                            "code_type": "D", "download": False})
    assert {s: len(migrated[s]) for s in migrated} == {"train": 500, "dev": 250, "test": 250}
    original = load_corpus({"format": "codiesp", "root": str(CODIESP_DIR), "language": "en", "code_type": "D",
                            "download": False})
    assert migrated["test"]["text"] == original["test"]["text"]  # notes untouched, only codes move
    train_codes = {c for codes in migrated["train"]["codes"] for c in codes}
    assert "T81.4" in train_codes and "T81.4XX" not in train_codes
    run = mlflow.search_runs(experiment_names=["medcoder"], output_format="list")[0]
    assert run.data.tags["medcoder.task"] == "migrate_labels" and run.data.tags["medcoder.codeset_fy"] == "2026"
    assert run.data.metrics["codes_normalised"] == 98
