"""canonical_code, code_descriptions and the load_corpus dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medcoder.codesets import code_descriptions
from medcoder.data import canonical_code, load_corpus, normalize_code
from medcoder.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("raw", "code_type", "expected"),
    [
        ("n44.8", "D", "N44.8"),
        (" z20.818 ", "D", "Z20.818"),
        ("r509", "D", "R50.9"),
        ("b20", "D", "B20"),
        ("bw03zzz", "P", "BW03ZZZ"),
        ("3e02", "P", "3E02"),
        ("e11.9", None, "E11.9"),
        ("0dt", None, "0DT"),
    ],
)
def test_canonical_code(raw: str, code_type: str | None, expected: str) -> None:
    assert canonical_code(raw, code_type) == expected


def test_canonical_code_rejects_empty_and_unknown_type() -> None:
    with pytest.raises(DataError):
        canonical_code("  ")
    with pytest.raises(ConfigError, match="data.code_type"):
        canonical_code("A00", "X")


def test_normalize_code_is_a_deprecated_alias() -> None:
    with pytest.warns(DeprecationWarning, match="canonical_code"):
        assert normalize_code("r509") == "R50.9"


def test_code_descriptions_with_parent_fallback() -> None:
    got = code_descriptions(["N44.8", "Z20.8188", "N448", "ZZZ.9", "", "BW03ZZZ"])
    assert got["N44.8"] == "Other noninflammatory disorders of the testis"
    assert got["Z20.8188"].startswith("Contact with and (suspected) exposure")  # parent Z20.818
    assert got["N448"] == got["N44.8"]
    assert got["ZZZ.9"] == "" and got[""] == "" and got["BW03ZZZ"] == ""
    assert code_descriptions(["B20"], code_type="P") == {"B20": ""}  # PCS: never a CM lookup
    assert code_descriptions([]) == {}


def test_load_corpus_jsonl_from_dictconfig(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "x", "codes": ["a00"]}) + "\n", "utf-8")
    cfg = OmegaConf.create({"format": "jsonl", "train": str(path), "dev": None, "test": None})
    dd = load_corpus(cfg)
    assert dd["train"]["codes"] == [["A00"]]


def test_load_corpus_errors() -> None:
    with pytest.raises(ConfigError, match=r"data\.format='parquet'.*codiesp, jsonl, csv, mimic"):
        load_corpus({"format": "parquet"})
    with pytest.raises(ConfigError, match=r"data\.root is required for data\.format=mimic"):
        load_corpus({"format": "mimic"})
    with pytest.raises(ConfigError, match=r"data\.format=None"):
        load_corpus({})
    with pytest.raises(ConfigError, match=r"data\.train"):
        load_corpus({"format": "csv", "train": None})


def test_load_corpus_unset_mandatory_value_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "x", "codes": []}) + "\n", "utf-8")
    cfg = OmegaConf.create({"format": "jsonl", "train": str(path), "dev": "???", "test": None})
    from medcoder.workflows.factories import build_corpus

    with pytest.raises(ConfigError, match=r"data\.dev is required"):
        build_corpus(cfg)

