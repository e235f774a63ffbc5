"""Evidence scored against gold spans, and the official CodiEsp-X metric, on hand-made spans."""

from __future__ import annotations

import math

import pytest

from medcoder.data.mentions import Mention, read_mentions_file
from medcoder.evaluation.codiesp_x import (
    XRow,
    codiesp_x_scores,
    read_x_gold,
    read_x_submission,
    submission_rows,
    write_codiesp_x,
)
from medcoder.evaluation.evidence_scores import (
    ALL_SOURCES,
    auto_accept_overlap,
    char_counts,
    gold_spans_from_mentions,
    overlaps,
    score_evidence,
)


def ev(start: int, end: int, source: str) -> dict:
    return {"start": start, "end": end, "weight": 1.0, "source": source}


def row(code: str, evidence: list[dict], decision: str = "human_review") -> dict:
    return {"code": code, "decision": decision, "evidence": evidence}


# -- character counts and overlap -------------------------------------------------------------------
def test_char_counts_use_unions_and_do_not_count_overlaps_twice() -> None:
    # E = [0,10) ∪ [5,15) = 15 chars; G = [10,20) = 10; E∩G = [10,15) = 5; E∪G = [0,20) = 20
    assert char_counts([(0, 10), (5, 15)], [(10, 20)]) == (5, 15, 10, 20)
    assert char_counts([], [(3, 7)]) == (0, 0, 4, 4)


def test_overlap_is_at_least_one_shared_character() -> None:
    assert overlaps((5, 10), [(9, 12)])
    assert not overlaps((5, 10), [(10, 12)])  # half-open: touching is not overlapping
    assert not overlaps((5, 10), [])


# -- scoring per source -----------------------------------------------------------------------------
def _example() -> tuple[dict, dict]:
    gold = {
        ("n1", "A01"): [(10, 20)],
        ("n1", "B02"): [(100, 110), (120, 130)],  # a discontinuous mention: the gap is not gold
        ("n2", "A01"): [(0, 10)],
    }
    predictions = {
        "n1": [
            # dictionary exact on A01; neural half inside, half outside
            row("A01", [ev(10, 20, "dictionary"), ev(15, 25, "neural")], "auto_accept"),
            # B02: dictionary covers both fragments and the gap; neural misses
            row("B02", [ev(100, 130, "dictionary"), ev(200, 210, "neural")]),
            # a predicted code that is not gold: not scored
            row("C03", [ev(0, 5, "neural")], "auto_accept"),
        ],
        "n2": [row("A01", [ev(0, 4, "neural")])],  # only neural evidence; dictionary has none
    }
    return predictions, gold


def test_per_source_char_scores_hit_rate_iou_and_coverage() -> None:
    predictions, gold = _example()
    report = score_evidence(predictions, gold, sources=["neural", "tfidf", "dictionary"])
    assert (report.n_predicted, report.n_predicted_gold, report.n_scored) == (4, 3, 3)

    d = report.sources["dictionary"]
    # codes: n1/A01 (tp 10, pred 10, gold 10), n1/B02 (tp 20, pred 30, gold 20), n2/A01 (no evidence, gold 10)
    assert (d.char_tp, d.char_pred, d.char_gold) == (30, 40, 40)
    assert d.char_precision == pytest.approx(30 / 40)
    assert d.char_recall == pytest.approx(30 / 40)  # the code without evidence counts as missed gold
    assert d.char_f1 == pytest.approx(0.75)
    assert d.hit_rate == 1.0 and d.coverage == pytest.approx(2 / 3)
    assert d.iou == pytest.approx((1.0 + 20 / 30) / 2)  # averaged over codes with evidence

    n = report.sources["neural"]
    # n1/A01: E [15,25) G [10,20): tp 5, |E| 10, union 15; n1/B02: tp 0, |E| 10, union 30;
    # n2/A01: E [0,4) G [0,10): tp 4, |E| 4, union 10
    assert (n.char_tp, n.char_pred, n.char_gold) == (9, 24, 40)
    assert n.char_precision == pytest.approx(9 / 24) and n.char_recall == pytest.approx(9 / 40)
    p, r = 9 / 24, 9 / 40
    assert n.char_f1 == pytest.approx(2 * p * r / (p + r))
    assert n.hit_rate == pytest.approx(2 / 3) and n.coverage == 1.0
    assert n.iou == pytest.approx((5 / 15 + 0 + 4 / 10) / 3)

    t = report.sources["tfidf"]  # a view without any span: zero coverage, undefined rates
    assert t.n_codes == 3 and t.coverage == 0.0
    assert math.isnan(t.char_precision) and math.isnan(t.iou) and math.isnan(t.hit_rate)
    assert t.char_recall == 0.0 and math.isnan(t.char_f1)

    a = report.sources[ALL_SOURCES]  # union of every source's spans per code
    # n1/A01: E [10,25) tp 10 |E| 15; n1/B02: E [100,130)+[200,210) tp 20 |E| 40; n2/A01: tp 4 |E| 4
    assert (a.char_tp, a.char_pred, a.char_gold) == (34, 59, 40)
    assert a.n_spans == 5 and a.n_spans_hit == 4


def test_discontinuous_gold_counts_only_its_fragments() -> None:
    gold = {("n", "X1"): [(0, 5), (10, 15)]}
    exact = score_evidence({"n": [row("X1", [ev(0, 5, "d"), ev(10, 15, "d")])]}, gold).sources["d"]
    assert exact.char_precision == 1.0 and exact.char_recall == 1.0 and exact.iou == 1.0
    gap_only = score_evidence({"n": [row("X1", [ev(5, 10, "d")])]}, gold).sources["d"]
    assert gap_only.char_tp == 0 and gap_only.hit_rate == 0.0  # the gap is not part of the mention


def test_gold_spans_from_mentions_keep_every_fragment_of_every_mention() -> None:
    mentions = {"n": [Mention(0, 15, "X1", "D", fragments=((0, 5), (10, 15))), Mention(30, 40, "X1", "D"),
                      Mention(50, 55, "Y2", "D")]}
    assert gold_spans_from_mentions(mentions) == {("n", "X1"): [(0, 5), (10, 15), (30, 40)], ("n", "Y2"): [(50, 55)]}


def test_gold_codes_without_spans_are_counted_not_scored() -> None:
    gold = {("n", "A01"): [(0, 5)]}
    preds = {"n": [row("A01", [ev(0, 5, "d")]), row("B02", [ev(6, 9, "d")])]}
    report = score_evidence(preds, gold, gold_codes={"n": ["A01", "B02"]})
    assert (report.n_predicted_gold, report.n_scored) == (2, 1)


def test_auto_accept_overlap_counts_every_accepted_code() -> None:
    predictions, gold = _example()
    a = auto_accept_overlap(predictions, gold)
    # accepted: n1/A01 (dictionary span overlaps; first span is it) and n1/C03 (not gold: a miss)
    assert (a.n_auto_accepted, a.n_overlap, a.n_first_overlap, a.n_scorable) == (2, 1, 1, 1)
    assert a.share == 0.5 and a.share_scorable == 1.0
    none = auto_accept_overlap({"n": [row("A01", [ev(0, 1, "d")])]}, gold)
    assert none.n_auto_accepted == 0 and math.isnan(none.share)


def test_metrics_are_flat_keys_with_the_prefix() -> None:
    predictions, gold = _example()
    m = score_evidence(predictions, gold, sources=["neural", "dictionary"]).metrics("evidence_")
    assert m["evidence_dictionary_char_f1"] == pytest.approx(0.75)
    assert m["evidence_auto_accept_overlap"] == 0.5 and m["evidence_n_auto_accepted"] == 2.0
    assert {"evidence_all_iou", "evidence_neural_coverage", "evidence_n_scored_codes"} <= set(m)


# -- CodiEsp-X: official format and metric ----------------------------------------------------------
def test_submission_rows_and_file_round_trip(tmp_path) -> None:
    predictions, _ = _example()
    rows = submission_rows(predictions, "D")
    assert rows[0] == XRow("n1", 10, 20, "DIAGNOSTICO", "a01")  # CodiEsp spelling: lower case
    assert len(rows) == len(set(rows)) == 6
    assert [r.code for r in submission_rows(predictions, "P", sources=["dictionary"])] == ["a01", "b02"]
    path = write_codiesp_x(tmp_path / "x.tsv", rows)
    assert path.read_text().splitlines()[0] == "n1\t10 20\tDIAGNOSTICO\ta01"
    assert read_x_submission(path) == rows


def test_read_x_gold_takes_first_start_and_last_end_like_the_official_script(tmp_path) -> None:
    gold = tmp_path / "testX.tsv"
    gold.write_text("d1\tDIAGNOSTICO\tn20.0\tlitiasis renal\t100 108;120 125\n"
                    "d1\tPROCEDIMIENTO\tbt41zzz\tecografía\t50 59\n", encoding="utf-8")
    assert read_x_gold(gold) == [XRow("d1", 100, 125, "DIAGNOSTICO", "n20.0"),
                                 XRow("d1", 50, 59, "PROCEDIMIENTO", "bt41zzz")]
    # the same file through the project's mention parser keeps the fragments (for the evidence scores)
    assert read_mentions_file(gold, "D")["d1"][0].fragments == ((100, 108), (120, 125))


def test_official_x_metric_on_a_tiny_gold_and_prediction() -> None:
    gold = [
        XRow("d1", 100, 125, "DIAGNOSTICO", "n20.0"),   # discontinuous: 100-108;120-125 -> 100..125
        XRow("d1", 300, 310, "DIAGNOSTICO", "n20.0"),   # a second mention of the same code
        XRow("d1", 50, 59, "PROCEDIMIENTO", "bt41zzz"),
        XRow("d1", 200, 210, "DIAGNOSTICO", "r52"),
        XRow("d2", 0, 10, "DIAGNOSTICO", "i10"),
    ]
    pred = [
        XRow("d1", 90, 130, "DIAGNOSTICO", "n20.0"),    # contains 100..125 with 10 and 5 to spare: TP
        XRow("d1", 301, 310, "DIAGNOSTICO", "n20.0"),   # starts inside the 2nd mention: no match, harmless
        XRow("d1", 200, 221, "DIAGNOSTICO", "r52"),     # 11 characters past the end: not a match
        XRow("d1", 203, 207, "DIAGNOSTICO", "r52"),     # inside the mention, not containing it: no match
        XRow("d2", 0, 10, "PROCEDIMIENTO", "i10"),      # exact; the label is not compared: TP
        XRow("d2", 20, 30, "DIAGNOSTICO", "k35.80"),    # a code that is not gold
    ]
    s = codiesp_x_scores(gold, pred)
    # predicted (doc, code) pairs: d1/n20.0, d1/r52, d2/i10, d2/k35.80 = 4; gold pairs: 4; TP: 2
    assert (s.tp, s.n_predicted, s.n_gold) == (2, 4, 4)
    assert s.precision == 0.5 and s.recall == 0.5 and s.f1 == 0.5
    assert codiesp_x_scores(gold, [XRow("d1", 200, 221, "DIAGNOSTICO", "r52")], tolerance=11).tp == 1
    # gold of one type only: the D rows
    assert codiesp_x_scores([g for g in gold if g.label == "DIAGNOSTICO"], pred).n_gold == 3


def test_official_x_metric_edge_cases() -> None:
    gold = [XRow("d", 0, 5, "DIAGNOSTICO", "a")]
    empty = codiesp_x_scores(gold, [])
    assert empty.n_predicted == 0 and math.isnan(empty.precision) and empty.recall == 0.0 and empty.f1 == 0.0
    wrong = codiesp_x_scores(gold, [XRow("d", 50, 55, "DIAGNOSTICO", "a")])
    assert wrong.precision == 0.0 and wrong.f1 == 0.0
    assert math.isnan(codiesp_x_scores([], [XRow("d", 0, 5, "DIAGNOSTICO", "a")]).f1)


# -- the script's config ----------------------------------------------------------------------------
def test_evaluate_evidence_config_composes_and_bad_values_fail_in_one_line(tmp_path) -> None:
    from medcoder.errors import ConfigError
    from medcoder.workflows.evaluate_evidence import check_evidence_config, metric_prefixes

    from ..helpers.configs import compose_named

    cfg = compose_named("evaluate_evidence", ["run_id=x", f"paths.root_dir={tmp_path}"])
    assert cfg.split == "test" and cfg.data is None
    check_evidence_config(cfg)
    bad = compose_named("evaluate_evidence", ["run_id=x", "evidence_top_k=0", "max_notes=-1"])
    with pytest.raises(ConfigError, match=r"evidence_top_k=0 .*max_notes=-1"):
        check_evidence_config(bad)
    assert metric_prefixes("test") == ("evidence_", "codiesp_x_")
    assert metric_prefixes("dev") == ("evidence_dev_", "codiesp_x_dev_")
