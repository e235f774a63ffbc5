"""Benchmarks end to end on the tiny bundle. The benchmark harness's plumbing (no model, no corpus): child measurement, result parsing,
data subsampling/round trip and the Markdown report."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))



def test_predict_speed_runs_on_the_tiny_bundle(tiny_bundle, tmp_path):
    """benchmarks/predict_speed.py end to end on the tiny bundle (in process: no subprocess start-up)."""
    import json

    import predict_speed

    out = tmp_path / "speed"
    report = predict_speed.main([
        "--bundle", str(tiny_bundle["result"].bundle_dir), "--notes-jsonl", tiny_bundle["corpus"]["test"],
        "--n-notes", "4", "--batch-size", "2", "--in-process", "--out", str(out),
    ])
    results = {r["system"]: r for r in report["results"]}
    assert list(results) == list(predict_speed.SYSTEMS)
    for r in results.values():
        assert r["n_notes"] == 4 and r["notes_per_second"] > 0 and r["peak_rss_mib"] > 0
        assert r["bundle_id"] == tiny_bundle["result"].manifest.bundle_id
    assert results["hf-pipeline"]["chunks_read"] == 4  # one chunk per note
    assert results["coder"]["chunks_read"] == results["coder"]["n_chunks_all"] >= 4
    md = out.with_suffix(".md").read_text()
    assert "first chunk only" in md and "| coder |" in md and "smoke check" in md
    assert json.loads(out.with_suffix(".json").read_text())["results"][0]["system"] == "coder"
