"""Sweep bookkeeping: which overrides make a setting, seeds aggregated to mean and sample sd."""

from __future__ import annotations

import pytest

from medcoder.tracking.sweeps import setting_labels, summarise, summary_markdown


def test_sweep_settings_are_the_overrides_that_vary_without_seeds() -> None:
    jobs = [["data=x", "model.a=1", "seed=1"], ["data=x", "model.a=1", "seed=2"],
            ["data=x", "model.a=2", "seed=1"], ["data=x", "model.a=2", "seed=2"]]
    labels = setting_labels(jobs)
    assert labels == ["model.a=1", "model.a=1", "model.a=2", "model.a=2"]
    assert setting_labels([["seed=1"], ["seed=2"]]) == ["(one setting)", "(one setting)"]
    rows = summarise([(f"r{i}", lab, {"test_map": v}) for i, (lab, v) in enumerate(zip(labels, [0.4, 0.5, 0.3, 0.3], strict=True))])
    assert [r["n"] for r in rows] == [2, 2]
    assert rows[0]["test_map"]["mean"] == pytest.approx(0.45) and rows[0]["test_map"]["sd"] == pytest.approx(0.0707107)
    assert rows[1]["test_map"]["sd"] == 0.0
    assert "0.4500 ± 0.0707" in summary_markdown(rows)
