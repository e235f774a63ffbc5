"""Users' own jsonl/csv corpora: happy paths and errors that name file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcoder.data import load_tabular
from medcoder.errors import ConfigError, DataError


def _jsonl(path: Path, rows: list[object]) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", "utf-8")
    return str(path)


def test_jsonl_splits_and_normalisation(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [
        {"id": "n1", "text": "Type 2 diabetes.", "codes": ["e11.9", " I10 ", "E11.9"]},
        "",
        {"id": 2, "text": "No codes here.", "codes": []},
    ])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"id": "d1", "text": "Cough.", "codes": ["R05"]}])
    dd = load_tabular(train, dev, None)
    assert list(dd) == ["train", "dev"]
    assert dd["train"].column_names == ["id", "text", "codes"]
    assert dd["train"]["id"] == ["n1", "2"]
    assert dd["train"]["codes"] == [["E11.9", "I10"], []]  # no dot insertion for unknown systems


def test_jsonl_custom_columns(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "t.jsonl", [{"note_id": "a", "note": "x y", "icd": ["A00"]}])
    dd = load_tabular(train, id_column="note_id", text_column="note", codes_column="icd")
    assert dd["train"][0] == {"id": "a", "text": "x y", "codes": ["A00"]}


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ('{"id": "a", "text": "x", "codes": [}', r"t\.jsonl:2: invalid JSON"),
        ('["a", "x"]', r"t\.jsonl:2: expected a JSON object"),
        ({"id": "a", "codes": []}, r"t\.jsonl:2: missing column 'text'"),
        ({"id": "a", "text": "x", "codes": "A00;B01"}, r"t\.jsonl:2: column 'codes' must be a list"),
        ({"id": "a", "text": 5, "codes": []}, r"t\.jsonl:2: column 'text' must be a string"),
        ({"id": None, "text": "x", "codes": []}, r"t\.jsonl:2: column 'id'"),
        ({"id": "ok", "text": "x", "codes": []}, r"t\.jsonl:2: duplicate id 'ok' \(first at .*t\.jsonl:1\)"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, row: object, pattern: str) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"id": "ok", "text": "fine", "codes": []}, row])
    with pytest.raises(DataError, match=pattern):
        load_tabular(path)


def test_missing_file_names_split(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "t.jsonl", [{"id": "a", "text": "x", "codes": []}])
    with pytest.raises(DataError, match=r"data\.test=.*missing\.jsonl: file not found"):
        load_tabular(train, None, tmp_path / "missing.jsonl")


def test_empty_note_policy(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [
        {"id": "a", "text": "x", "codes": []},
        {"id": "b", "text": "   ", "codes": ["A00"]},
    ])
    assert load_tabular(path)["train"]["id"] == ["a"]
    with pytest.raises(DataError, match=r"t\.jsonl:2: empty note \(id 'b'\)"):
        load_tabular(path, on_error="raise")


def test_csv_with_multiline_notes_and_separator(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text('id,text,codes\na,"Line one,\nline two",e11.9; I10\nb,Plain,\n', "utf-8")
    dd = load_tabular(str(path), format="csv")
    assert dd["train"]["text"] == ["Line one,\nline two", "Plain"]
    assert dd["train"]["codes"] == [["E11.9", "I10"], []]
    path.write_text("id,text,codes\na,x,A00|B01\n", "utf-8")
    assert load_tabular(str(path), format="csv", codes_separator="|")["train"]["codes"] == [["A00", "B01"]]


def test_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("id,note,codes\na,x,A00\n", "utf-8")
    with pytest.raises(DataError, match=r"notes\.csv:1: missing column 'text'"):
        load_tabular(str(path), format="csv")
    path.write_text("id,text,codes\na,x,A00\nb,y,B01,extra\n", "utf-8")
    with pytest.raises(DataError, match=r"notes\.csv:3: more cells"):
        load_tabular(str(path), format="csv")
    path.write_text("id,text,codes\na,   ,A00\n", "utf-8")
    with pytest.raises(DataError, match=r"notes\.csv:2: empty note"):
        load_tabular(str(path), format="csv", on_error="raise")
    path.write_bytes(b"id,text,codes\na,fiebre \xf1,A00\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_tabular(str(path), format="csv")


def test_unknown_format_and_policy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.format='parquet'"):
        load_tabular("x", format="parquet")
    with pytest.raises(ConfigError, match="data.on_error"):
        load_tabular("x", on_error="warn")
