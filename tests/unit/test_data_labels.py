"""LabelSpace: deterministic order, min_count/top_k, multi-hot encoding, coverage, JSON round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medcoder.data import LabelSpace
from medcoder.errors import DataError

TRAIN = [["A00", "B01", "C02"], ["B01", "C02"], ["C02", "B01", "B01"], ["D03"]]


def test_order_by_frequency_then_code_and_doc_frequency() -> None:
    ls = LabelSpace.from_codes(TRAIN, codeset_fy=2024)
    assert ls.codes == ["B01", "C02", "A00", "D03"]
    assert ls.frequency == {"B01": 3, "C02": 3, "A00": 1, "D03": 1}  # documents, not mentions
    assert ls.index == {"B01": 0, "C02": 1, "A00": 2, "D03": 3}
    assert len(ls) == 4 and "A00" in ls and "Z99" not in ls
    assert ls.codeset_fy == 2024


def test_min_count_and_top_k() -> None:
    assert LabelSpace.from_codes(TRAIN, min_count=2).codes == ["B01", "C02"]
    assert LabelSpace.from_codes(TRAIN, top_k=3).codes == ["B01", "C02", "A00"]
    assert LabelSpace.from_codes(TRAIN, min_count=2, top_k=1).codes == ["B01"]
    assert len(LabelSpace.from_codes([])) == 0
    with pytest.raises(ValueError):
        LabelSpace.from_codes(TRAIN, min_count=0)


def test_encode_ignores_unknown_codes() -> None:
    ls = LabelSpace.from_codes(TRAIN)
    y = ls.encode([["A00", "Z99"], [], ["D03", "B01"]])
    assert y.dtype == np.float32 and y.shape == (3, 4)
    np.testing.assert_array_equal(y, [[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
    assert ls.encode([]).shape == (0, 4)


def test_coverage_counts_unique_pairs_and_is_nan_without_gold() -> None:
    ls = LabelSpace.from_codes(TRAIN, min_count=2)  # B01, C02
    assert ls.coverage([["B01", "Z99"], ["C02", "C02", "A00", "B01"]]) == pytest.approx(3 / 5)
    assert ls.coverage(TRAIN) == pytest.approx(6 / 8)
    assert math.isnan(ls.coverage([[], []]))


def test_duplicate_codes_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        LabelSpace(codes=["A00", "A00"])


def test_json_round_trip_is_atomic(tmp_path: Path) -> None:
    ls = LabelSpace.from_codes(TRAIN, codeset_fy=2025)
    ls.descriptions = {"A00": "Cholera"}
    path = tmp_path / "bundle" / "labels.json"
    ls.to_json(path)
    assert [p.name for p in path.parent.iterdir()] == ["labels.json"]  # no temp file left
    obj = json.loads(path.read_text("utf-8"))
    assert set(obj) == {"codes", "frequency", "descriptions", "codeset_fy", "schema_version"}
    assert obj["schema_version"] == 1
    back = LabelSpace.from_json(path)
    assert back == ls
    assert back.index == ls.index


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (None, "label file not found"),
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"schema_version": 2}', "schema_version=2"),
        ('{"schema_version": 1, "codes": "A00", "frequency": {}, "descriptions": {}}', "'codes'"),
        ('{"schema_version": 1, "codes": [], "frequency": {"A": "1"}, "descriptions": {}}', "'frequency'"),
        ('{"schema_version": 1, "codes": [], "frequency": {}, "descriptions": []}', "'descriptions'"),
        ('{"schema_version": 1, "codes": [], "frequency": {}, "descriptions": {}, "codeset_fy": "2024"}', "codeset_fy"),
        ('{"schema_version": 1, "codes": ["A", "A"], "frequency": {}, "descriptions": {}}', "duplicate"),
    ],
)
def test_from_json_errors(tmp_path: Path, content: str | None, pattern: str) -> None:
    path = tmp_path / "labels.json"
    if content is not None:
        path.write_text(content, "utf-8")
    with pytest.raises(DataError, match=pattern):
        LabelSpace.from_json(path)


def test_frequency_array_follows_label_order() -> None:
    space = LabelSpace.from_codes([["b", "a"], ["b"], ["c", "b"]])
    freq = space.frequency_array()
    assert freq.dtype == np.float32
    assert dict(zip(space.codes, freq.tolist(), strict=True)) == {"b": 3.0, "a": 1.0, "c": 1.0}
