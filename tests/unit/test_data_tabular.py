"""Users' own jsonl/csv corpora: happy paths and errors that name file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcoder.data import load_tabular
from medcoder.data.tabular import iter_unlabeled
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
        ({"id": "ok", "text": "x", "codes": []}, r"t\.jsonl:2: duplicate id \(first at .*t\.jsonl:1\)"),
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
    with pytest.raises(DataError, match=r"t\.jsonl:2: empty note"):
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


# -- prediction input (iter_unlabeled): bounded reading, Unicode, malformed JSON ---------------------
def test_jsonl_lines_split_on_newline_only(tmp_path: Path) -> None:
    """U+2028, U+0085, form feed ... are legal raw inside JSON strings; splitlines() cut them."""
    text = "line\u2028sep\x85next\x0cpage\x1crec"
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({"id": "a", "text": text, "codes": []}, ensure_ascii=False) + "\r\n", "utf-8")
    assert [t for _, _, t in iter_unlabeled(path, format="jsonl")] == [text]
    assert load_tabular(str(path))["train"]["text"] == [text]


@pytest.mark.parametrize("line, match", [
    ('{"id": ' + "9" * 5000 + ', "text": "x"}', r"n\.jsonl:1: invalid JSON"),  # int > 4300 digits
    ("[" * 100_000 + "]" * 100_000, r"n\.jsonl:1: invalid JSON"),  # RecursionError
    ('{"id": "a", "text": "bad \\ud800 surrogate"}', r"n\.jsonl:1: column 'text' is not valid Unicode"),
    ('{"id": "\\udfff", "text": "x"}', r"n\.jsonl:1: column 'id' is not valid Unicode"),
])
def test_jsonl_values_python_cannot_use_are_data_errors(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text(line + "\n", "utf-8")
    with pytest.raises(DataError, match=match):
        list(iter_unlabeled(path, format="jsonl"))


def test_iter_unlabeled_cuts_long_notes_and_refuses_huge_lines(tmp_path: Path) -> None:
    from medcoder.data.tabular import max_row_size

    path = tmp_path / "n.jsonl"
    _jsonl(path, [{"id": "short", "text": "x" * 10}, {"id": "long", "text": "y" * 500}])
    texts = {i: t for _, i, t in iter_unlabeled(path, format="jsonl", max_note_chars=100)}
    assert texts == {"short": "x" * 10, "long": "y" * 101}  # limit + 1: Coder.predict flags it

    assert max_row_size(100) == 16 * 100 + 4096
    _jsonl(path, [{"id": "ok", "text": "fine"}, {"id": "huge", "text": "z" * 10_000}])
    with pytest.raises(DataError, match=r"n\.jsonl:2: line longer than 5696 bytes"):
        list(iter_unlabeled(path, format="jsonl", max_note_chars=100))

    csv_path = tmp_path / "n.csv"
    csv_path.write_text('id,text\nok,fine\nhuge,"' + "z\n" * 5000 + '"\n', "utf-8")
    with pytest.raises(DataError, match=r"n\.csv:\d+: CSV row longer than 5696 characters"):
        list(iter_unlabeled(csv_path, format="csv", max_note_chars=100))
    # an unclosed quote swallows the rest of the file: refused at the cap, not read whole
    csv_path.write_text('id,text\na,"never closed\n' + "b,text\n" * 2000, "utf-8")
    with pytest.raises(DataError, match="CSV row longer"):
        list(iter_unlabeled(csv_path, format="csv", max_note_chars=100))


def test_csv_note_over_csv_cell_limit_is_cut_not_refused(tmp_path: Path) -> None:
    """csv's own 131,072-character cell limit must not refuse a note under max_note_chars."""
    csv_path = tmp_path / "n.csv"
    csv_path.write_text("id,text\nbig," + "w" * 200_000 + "\n", "utf-8")
    [(_, _, text)] = iter_unlabeled(csv_path, format="csv", max_note_chars=150_000)
    assert text == "w" * 150_001
    [(_, _, text)] = iter_unlabeled(csv_path, format="csv", max_note_chars=300_000)
    assert len(text) == 200_000


def test_iter_unlabeled_missing_file_and_bad_limit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(iter_unlabeled(tmp_path / "nope.jsonl", format="jsonl"))
    (tmp_path / "n.jsonl").write_text("", "utf-8")
    with pytest.raises(ConfigError, match="max_note_chars=0"):
        list(iter_unlabeled(tmp_path / "n.jsonl", format="jsonl", max_note_chars=0))
