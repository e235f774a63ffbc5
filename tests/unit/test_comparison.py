"""Per-note predictions and the comparison statistics (bootstrap CIs, paired permutation tests)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from medcoder.errors import ConfigError, DataError
from medcoder.evaluation.codiesp_run import write_codiesp_run
from medcoder.evaluation.comparison import (
    align_systems,
    bootstrap_ci,
    compare_systems,
    leaderboard_csv,
    leaderboard_markdown,
    leaderboard_rows,
    metric_terms,
    paired_permutation_pvalue,
    plot_comparison,
)
from medcoder.evaluation.metrics import compute_all
from medcoder.evaluation.note_predictions import (
    SCHEMA,
    build_note_predictions,
    from_trec,
    note_predictions_filename,
    read_note_predictions,
    write_note_predictions,
)

CODES = [f"C{j:02d}" for j in range(30)]
METRICS = ["map", "micro_f1", "micro_precision", "micro_recall", "p_at_5", "p_at_8", "r_at_10", "r_at_15"]


def _corpus(n: int = 40, seed: int = 0) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Ids, gold codes (some outside the label space, some notes without gold) and the in-space y."""
    rng = np.random.default_rng(seed)
    gold = []
    for i in range(n):
        codes = list(rng.choice(CODES, rng.integers(0, 5), replace=False))
        if i % 4 == 0:
            codes.append("Z99.9")  # not in the label space: counts for MAP/R@k, never retrievable
        gold.append(codes)
    y = np.array([[c in g for c in CODES] for g in gold], dtype=float)
    return [f"note-{i}" for i in range(n)], gold, y


def _probs(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # rounded to 2 decimals so that ties occur (they must be broken as the metrics module does)
    return np.clip(rng.random(y.shape) * (1 - signal) + signal * y, 0, 1).round(2)


@pytest.fixture(scope="module")
def systems():
    ids, gold, y = _corpus()
    good = build_note_predictions(ids, _probs(y, 0.35, 1), CODES, gold, threshold=0.5, top_k=10)
    weak = build_note_predictions(ids, _probs(y, 0.1, 2), CODES, gold, threshold=0.5, top_k=10)
    return {"good": good, "weak": weak, "weak_twin": weak}


# --------------------------------------------------------------------------------------------
# per-note predictions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_per_note_terms_reproduce_compute_all_exactly(seed: int) -> None:
    ids, gold, y = _corpus(seed=seed)
    probs = _probs(y, 0.3, seed + 10)
    for threshold in (0.3, 0.5, 0.95):
        preds = build_note_predictions(ids, probs, CODES, gold, threshold=threshold, top_k=5)
        ref = compute_all(probs, y, threshold=threshold, gold_codes=gold, label_codes=CODES)
        for metric in METRICS:
            assert metric_terms(preds, metric).value() == pytest.approx(ref[metric], abs=1e-12), (metric, threshold)


def test_write_read_roundtrip_is_compact_reproducible_and_text_free(tmp_path, systems) -> None:
    preds = systems["good"]
    path = write_note_predictions(tmp_path / note_predictions_filename("test"), preds)
    again = write_note_predictions(tmp_path / "again.json.gz", preds)
    assert path.read_bytes() == again.read_bytes()  # gzip mtime 0: same predictions, same bytes
    back = read_note_predictions(path)
    assert back.ids == preds.ids and back.threshold == preds.threshold and back.top_k == 10
    for metric in METRICS:
        assert metric_terms(back, metric).value() == pytest.approx(metric_terms(preds, metric).value())
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert data["schema"] == SCHEMA
    assert set(data["notes"][0]) == {"id", "codes", "probs", "gold", "gold_rank", "gold_probs", "n_predicted"}
    assert all(len(n["codes"]) == 10 for n in data["notes"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp left


def test_read_rejects_other_files_in_one_error(tmp_path) -> None:
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(json.dumps({"schema": "other/9"}).encode()))
    with pytest.raises(DataError, match="schema"):
        read_note_predictions(bad)
    (tmp_path / "plain.json.gz").write_text("not gzip")
    with pytest.raises(DataError, match="plain.json.gz"):
        read_note_predictions(tmp_path / "plain.json.gz")


def test_from_trec_rebuilds_the_same_metrics(tmp_path) -> None:
    """Older runs only have the TREC ranking (logits): rebuilt, they give the same numbers."""
    ids, gold, y = _corpus()
    rng = np.random.default_rng(5)
    logits = rng.normal(size=y.shape) + 2.5 * y - 1.0
    probs = 1 / (1 + np.exp(-logits))
    direct = build_note_predictions(ids, probs, CODES, gold, threshold=0.5, top_k=10)
    _, trec = write_codiesp_run(tmp_path / "codiesp_run_test.tsv", ids, CODES, logits)
    rebuilt = from_trec(trec, dict(zip(ids, gold, strict=True)), CODES, threshold=0.5)
    assert rebuilt.source == "trec" and rebuilt.ids == ids
    for metric in METRICS:
        assert metric_terms(rebuilt, metric).value() == pytest.approx(metric_terms(direct, metric).value())
    with pytest.raises(DataError, match="no gold codes"):
        from_trec(trec, {}, CODES, threshold=0.5)


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_point_and_is_reproducible(systems) -> None:
    terms = metric_terms(systems["good"], "micro_f1")
    kw = {"n_resamples": 999, "confidence_level": 0.95, "method": "BCa", "random_state": 3}
    a = bootstrap_ci([terms], lambda r: r, **kw)
    b = bootstrap_ci([terms], lambda r: r, **kw)
    assert a == b
    assert a.low < a.value < a.high
    assert a.value == pytest.approx(terms.value())
    wider = bootstrap_ci([terms], lambda r: r, **{**kw, "confidence_level": 0.99})
    assert wider.low <= a.low and wider.high >= a.high


def test_degenerate_metric_gets_a_point_interval() -> None:
    """A metric that is 0 on every note has no BCa interval; the percentile one is [0, 0]."""
    ids, gold, y = _corpus()
    never = build_note_predictions(ids, np.zeros_like(y), CODES, gold, threshold=0.5)
    est = bootstrap_ci([metric_terms(never, "micro_f1")], lambda r: r, n_resamples=199, confidence_level=0.95,
                       method="BCa", random_state=0)
    assert (est.value, est.low, est.high) == (0.0, 0.0, 0.0)


def test_paired_permutation_test_identical_and_clearly_better(systems) -> None:
    for metric in ("map", "micro_f1", "p_at_8"):
        weak = metric_terms(systems["weak"], metric)
        good = metric_terms(systems["good"], metric)
        assert paired_permutation_pvalue(weak, weak, n_resamples=999, random_state=0) == 1.0
        assert paired_permutation_pvalue(good, weak, n_resamples=999, random_state=0) < 0.01


def test_permutation_test_is_exact_for_few_notes() -> None:
    """With 2**n <= n_resamples every swap pattern is enumerated: the p-value is exact and
    cannot go below 2 / 2**n (two-sided)."""
    ids, gold, y = _corpus(n=8)
    good = build_note_predictions(ids, y * 0.9 + 0.05, CODES, gold, threshold=0.5)
    bad = build_note_predictions(ids, (1 - y) * 0.9 + 0.05, CODES, gold, threshold=0.5)
    p = paired_permutation_pvalue(metric_terms(good, "micro_f1"), metric_terms(bad, "micro_f1"),
                                  n_resamples=9999, random_state=0)
    assert p == pytest.approx(2 / 2**8)


def test_compare_systems_reports(systems) -> None:
    comp = compare_systems(systems, "weak", ["map", "micro_f1", "p_at_8"], n_resamples=499,
                           permutation_resamples=499, random_state=0)
    for name in systems:
        for m in comp.metrics:
            e = comp.results[name][m].estimate
            assert e.low <= e.value <= e.high
    assert comp.results["weak"]["map"].p_value is None
    assert all(comp.results["weak_twin"][m].p_value == 1.0 for m in comp.metrics)
    assert all(comp.results["weak_twin"][m].delta.value == 0.0 for m in comp.metrics)
    good = comp.results["good"]["map"]
    assert good.p_value < 0.01 and good.delta.low > 0
    # same inputs, same numbers (fixed seeds); order of the runs does not matter
    again = compare_systems(dict(reversed(list(systems.items()))), "weak", ["map", "micro_f1", "p_at_8"],
                            n_resamples=499, permutation_resamples=499, random_state=0)
    assert again.results["good"]["micro_f1"] == comp.results["good"]["micro_f1"]

    rows = leaderboard_rows(comp)
    assert rows[0]["run_id"] == "good" and [r["baseline"] for r in rows].count(True) == 1
    md = leaderboard_markdown(comp, {"good": "good (abc)"})
    assert "good (abc)" in md and "**(baseline)**" in md and "paired permutation" in md
    csv_text = leaderboard_csv(comp)
    assert csv_text.splitlines()[0].startswith("run_id,label,baseline,map,map_ci_low,map_ci_high")
    assert len(csv_text.splitlines()) == 1 + len(systems)
    fig = plot_comparison(comp)
    assert len(fig.axes) == 3
    assert comp.to_dict()["results"]["good"]["map"]["p_value"] == good.p_value


def test_refuses_runs_on_different_notes(systems) -> None:
    ids, gold, y = _corpus()
    fewer = build_note_predictions(ids[:-1], _probs(y, 0.3, 7)[:-1], CODES, gold[:-1], threshold=0.5)
    with pytest.raises(ConfigError, match="runs weak and fewer do not cover the same test notes") as exc:
        align_systems({"weak": systems["weak"], "fewer": fewer}, "weak")
    assert "\n" not in str(exc.value)
    other_gold = [g[:-1] if g else ["C01"] for g in gold]
    regold = build_note_predictions(ids, _probs(y, 0.3, 7), CODES, other_gold, threshold=0.5)
    with pytest.raises(ConfigError, match="different gold codes"):
        align_systems({"weak": systems["weak"], "regold": regold}, "weak")
    with pytest.raises(ConfigError, match="baseline 'nope' is not among"):
        align_systems(systems, "nope")
    with pytest.raises(ConfigError, match="unknown metric 'f2'"):
        compare_systems(systems, "weak", ["f2"])


def test_aligns_runs_that_list_notes_in_another_order(systems) -> None:
    weak = systems["weak"]
    shuffled = weak.reordered(list(reversed(weak.ids)))
    aligned = align_systems({"weak": weak, "shuffled": shuffled}, "weak")
    assert aligned["shuffled"].ids == weak.ids
