"""Per-code output rows: a note with no predicted code has exactly the columns of a code row
(a CSV header is taken from the first row; a missing column used to crash the CSV writer)."""

from __future__ import annotations

from medcoder.inference.batch.outputs import _rows
from medcoder.inference.prediction import CodePrediction, DocumentPrediction


def _doc(codes):
    return DocumentPrediction(id="n1", codes=codes, document_decision="human_review", document_reasons=[],
                              bundle_id="b", codeset_fy=2026, policy_version="1", input_sha256="h",
                              timestamp="t")


def test_empty_note_row_has_the_columns_of_a_code_row() -> None:
    code = CodePrediction("I10", "Hypertension", 0.9, "human_review", ["low_confidence"],
                          [{"start": 0, "end": 3, "weight": 1.0, "source": "neural"}], ["neural"])
    [with_code] = list(_rows(_doc([code]), "code"))
    [empty] = list(_rows(_doc([]), "code"))
    assert list(empty) == list(with_code)
    assert empty["code"] == "" and empty["sources"] == [] and empty["probability"] is None
