"""Label migration on a synthetic corpus and code sets: every category, nothing guessed."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from medcoder.codesets import CodeSet, map_code, migrate_dataset, write_migration
from medcoder.data import load_tabular
from medcoder.errors import ConfigError, DataError

REFERENCE = CodeSet(
    2030,
    {"A00": "h", "A00.0": "b", "B10": "b", "C20": "h", "C20.1": "b", "D30": "b", "T81": "h", "T81.4": "h",
     "T81.40XA": "b"},
    ["A00.0", "B10", "C20.1", "D30", "T81.40XA"],
    source="test reference",
)
TARGET = CodeSet(
    2031,
    {"A00": "h", "A00.0": "b", "B10": "h", "B10.1": "b", "B10.2": "b", "C20": "h", "C20.2": "b", "E40": "b",
     "T81": "h", "T81.4": "h", "T81.40XA": "b"},
    ["A00.0", "B10.1", "B10.2", "C20.2", "E40", "T81.40XA"],
    source="test target",
    conversions={"D30": ["E40"], "F50": ["E40", "B10.1"]},
)
EXPECTED = {  # code -> (category, rule, code written to the migrated corpus)
    "A00.0": ("unchanged", "as_is", "A00.0"),
    "a00.0": ("normalised", "format", "A00.0"),
    "T81.4XX": ("normalised", "placeholder_x", "T81.4"),
    "D30": ("remapped", "conversion_table", "E40"),
    "F50": ("flagged", "conversion_one_to_many", "F50"),
    "B10": ("flagged", "now_header", "B10"),
    "C20.1": ("flagged", "deleted_in_target", "C20.1"),
    "Z99.9": ("unmappable", "not_in_target", "Z99.9"),
}


def _corpus() -> datasets.DatasetDict:
    rows = {"train": [("t1", ["A00.0", "a00.0", "D30"]), ("t2", ["B10", "T81.4XX"])],
            "dev": [("d1", ["C20.1", "Z99.9"])], "test": [("s1", ["F50", "A00.0"])]}
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"id": [i for i, _ in r], "text": [f"note {i}" for i, _ in r],
                                           "codes": [c for _, c in r]})
        for split, r in rows.items()
    })


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_category(code: str):
    m = map_code(code, TARGET, REFERENCE)
    assert (m.category, m.rule, m.target_code) == EXPECTED[code]


def test_flagged_carry_candidates_and_are_never_applied():
    assert map_code("B10", TARGET, REFERENCE).candidates == ("B10.1", "B10.2")
    assert map_code("C20.1", TARGET, REFERENCE).candidates == ("C20.2",)
    assert map_code("F50", TARGET, REFERENCE).candidates == ("B10.1", "E40")
    # without a reference year a header stays as it is and a gone code is unmappable (with a hint)
    assert map_code("B10", TARGET).category == "unchanged" and not map_code("B10", TARGET).target_billable
    m = map_code("C20.1", TARGET)
    assert (m.category, m.candidates) == ("unmappable", ("C20",))


def test_migrate_and_write(tmp_path: Path):
    result = migrate_dataset(_corpus(), TARGET, REFERENCE)
    s = result.summary()
    assert s["distinct_codes"] == {"unchanged": 1, "normalised": 2, "remapped": 1, "flagged": 3, "unmappable": 1}
    assert s["code_occurrences"]["unchanged"] == 2 and sum(s["code_occurrences"].values()) == 9
    assert s["n_docs_flagged"] == 3 and s["n_docs_with_unmappable"] == 1
    assert result.data["train"]["codes"] == [["A00.0", "E40"], ["B10", "T81.4"]]  # deduped after mapping
    paths = write_migration(result, tmp_path / "out")
    loaded = load_tabular(paths["train"], paths["dev"], paths["test"], format="jsonl")  # what data=jsonl does
    assert loaded["dev"]["codes"] == [["C20.1", "Z99.9"]] and loaded["train"]["text"][0] == "note t1"
    report = json.loads(paths["report"].read_text())
    assert report["data_override"].startswith("data=jsonl data.train=")
    flagged = paths["flagged_documents"].read_text().splitlines()
    assert flagged[0] == "split,id,code,category,rule,candidates" and len(flagged) == 5
    assert "note" not in paths["code_mapping"].read_text() + paths["report"].read_text()  # no text
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temp files


def test_drop_unmappable_and_csv(tmp_path: Path):
    result = migrate_dataset(_corpus(), TARGET, REFERENCE, on_unmappable="drop")
    assert result.data["dev"]["codes"] == [["C20.1"]]
    paths = write_migration(result, tmp_path, fmt="csv")
    assert load_tabular(paths["train"], format="csv")["train"]["codes"][0] == ["A00.0", "E40"]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="on_unmappable='guess'"):
        migrate_dataset(_corpus(), TARGET, on_unmappable="guess")
    broken = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": ["x"], "text": ["y"]})})
    with pytest.raises(DataError, match=r"split 'train': missing column\(s\) \['codes'\]"):
        migrate_dataset(broken, TARGET)
