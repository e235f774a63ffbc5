"""Issue 22: no input value (note text is PHI) in any error of the readers, and no column that is
both the id and the text.

A headerless CSV's first row is a note; it used to come back in the error (``header has ['1',
'Mrs Jane Roe ...']``) from batch prediction, the training loader, Spark's column check and the
MIMIC loader. Every error here must name the file, the line/row or column and the expected
columns, and must not contain the secret note text, nor an id, nor a wrong-typed cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medcoder.data import load_tabular
from medcoder.data.mimic import load_mimic
from medcoder.data.tabular import iter_unlabeled
from medcoder.errors import ConfigError, DataError, MedcoderError
from medcoder.inference.batch import NoteSource, read_notes

from ..helpers.mimic import write_mimic3

SECRET = "Mrs Jane Roe QUOKKA-7731 was admitted with chest pain"
SECRET_ID = "MRN-ZEBRA-99120"


def _assert_clean(err: MedcoderError, *must: str) -> None:
    text = str(err)
    for secret in (SECRET, "QUOKKA", SECRET_ID, "ZEBRA", "Jane Roe"):
        assert secret not in text, text
    assert "\n" not in text
    for part in must:
        assert part in text, text


def _headerless_csv(path: Path) -> Path:
    path.write_text(f'{SECRET_ID},"{SECRET}"\n2,"another note"\n', "utf-8")
    return path


def test_headerless_csv_in_batch_prediction_names_file_and_expected_columns(tmp_path) -> None:
    path = _headerless_csv(tmp_path / "notes.csv")
    with pytest.raises(DataError) as err:
        read_notes(path)
    _assert_clean(err.value, "notes.csv:1", "missing column 'id'", "'id', 'text'", "header row")
    with pytest.raises(DataError) as err:
        list(iter_unlabeled(path, format="csv"))
    _assert_clean(err.value, "notes.csv:1", "missing column 'id'")


def test_headerless_csv_in_the_training_loader(tmp_path) -> None:
    path = _headerless_csv(tmp_path / "train.csv")
    with pytest.raises(DataError) as err:
        load_tabular(str(path), format="csv")
    _assert_clean(err.value, "train.csv:1", "missing column 'id'", "'id', 'text', 'codes'")


def test_a_header_that_differs_only_in_case_is_pointed_at_by_position(tmp_path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text(f'ID,text\n{SECRET_ID},"{SECRET}"\n', "utf-8")
    with pytest.raises(DataError) as err:
        read_notes(path)
    _assert_clean(err.value, "column 1 differs from it only in case or spaces")


def test_parquet_and_jsonl_never_list_their_own_names(tmp_path) -> None:
    # pandas.read_csv(header=0) of a headerless file makes the first note a column name
    pq.write_table(pa.table({SECRET_ID: ["2"], SECRET: ["another note"]}), tmp_path / "n.parquet")
    with pytest.raises(DataError) as err:
        NoteSource(tmp_path / "n.parquet").scan()
    _assert_clean(err.value, "n.parquet", "missing column 'id'", "2 column(s)")
    (tmp_path / "n.jsonl").write_text(json.dumps({SECRET_ID: SECRET}) + "\n", "utf-8")
    with pytest.raises(DataError) as err:
        read_notes(tmp_path / "n.jsonl")
    _assert_clean(err.value, "n.jsonl:1", "missing column 'id'", "object has 1 column(s)")


@pytest.mark.parametrize("row, must", [
    ({"id": [SECRET], "text": "x", "codes": []}, "column 'id' must be a non-empty string or integer, got a list"),
    ({"id": {"n": SECRET_ID}, "text": "x", "codes": []}, "got an object"),
    ({"id": "a", "text": [SECRET], "codes": []}, "column 'text' must be a string, got a list"),
    ({"id": "a", "text": "x", "codes": SECRET}, "column 'codes' must be a list of strings, got a string"),
    ({"id": "a", "text": "x", "codes": [SECRET, 3]}, "a list with an item that is not a string"),
])
def test_wrong_cells_are_described_by_type_not_quoted(tmp_path, row, must) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n", "utf-8")
    with pytest.raises(DataError) as err:
        load_tabular(str(path))
    _assert_clean(err.value, "t.jsonl:1", must)


def test_duplicate_ids_and_empty_notes_are_located_not_quoted(tmp_path) -> None:
    rows = [{"id": SECRET_ID, "text": "x", "codes": []}, {"id": "b", "text": "  ", "codes": []},
            {"id": SECRET_ID, "text": "y", "codes": []}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    with pytest.raises(DataError) as err:
        load_tabular(str(path), on_error="raise")
    _assert_clean(err.value, "t.jsonl:2: empty note")
    with pytest.raises(DataError) as err:
        load_tabular(str(path))
    _assert_clean(err.value, "t.jsonl:3: duplicate id (first at", "t.jsonl:1)")
    with pytest.raises(DataError) as err:
        read_notes(path)
    _assert_clean(err.value, "t.jsonl:3: duplicate id (first at")


def test_headerless_mimic_file_is_not_quoted(tmp_path) -> None:
    root = tmp_path / "m3"
    write_mimic3(root, n_patients=4)
    notes = pd.read_csv(root / "NOTEEVENTS.csv.gz", dtype=str)
    notes.loc[0, "TEXT"] = SECRET
    notes.to_csv(root / "NOTEEVENTS.csv.gz", index=False, header=False)  # the header row lost
    with pytest.raises(DataError) as err:
        load_mimic(root, variant="mimiciii_full", cache_dir=tmp_path / "cache")
    _assert_clean(err.value, "NOTEEVENTS.csv.gz:1", "missing column", "'HADM_ID'", "header row")


def test_a_bad_mimic_cell_is_located_not_quoted(tmp_path) -> None:
    root = tmp_path / "m3"
    write_mimic3(root, n_patients=4)
    diag = pd.read_csv(root / "DIAGNOSES_ICD.csv.gz", dtype=str)
    diag.loc[1, "HADM_ID"] = SECRET  # a shifted row: note text where an id belongs
    diag.to_csv(root / "DIAGNOSES_ICD.csv.gz", index=False)
    with pytest.raises(DataError) as err:
        load_mimic(root, variant="mimiciii_full", cache_dir=tmp_path / "cache")
    _assert_clean(err.value, "data row 2, column 'HADM_ID': not an integer")


def test_spark_column_checks_name_no_header_cells(tmp_path) -> None:
    from medcoder.inference.batch.spark import check_input_columns

    path = _headerless_csv(tmp_path / "notes.csv")
    with pytest.raises(ConfigError) as err:
        check_input_columns(path, "csv", "id", "text")
    _assert_clean(err.value, "notes.csv", "missing column 'text'", "header row", "text_column=<name>")
    pq.write_table(pa.table({SECRET_ID: ["2"], SECRET: ["x"]}), tmp_path / "n.parquet")
    with pytest.raises(ConfigError) as err:
        check_input_columns(tmp_path / "n.parquet", "parquet", "id", "text")
    _assert_clean(err.value, "n.parquet", "missing column 'text'")


# -- one column, two roles ------------------------------------------------------------------------------
def test_the_id_column_may_not_be_the_text_column(tmp_path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({"id": "a", "text": SECRET, "codes": []}) + "\n", "utf-8")
    for call in (lambda: NoteSource(path, id_column="text"),
                 lambda: list(iter_unlabeled(path, format="jsonl", id_column="text")),
                 lambda: load_tabular(str(path), id_column="text"),
                 lambda: load_tabular(str(path), codes_column="text")):
        with pytest.raises(ConfigError, match="name the same column") as err:
            call()
        _assert_clean(err.value)


def test_predict_and_spark_settings_refuse_id_column_text(tmp_path) -> None:
    from medcoder.workflows.predict import check_settings
    from medcoder.workflows.spark_predict import check_settings as spark_check_settings

    from ..helpers.configs import compose_named

    cfg = compose_named("predict", ["bundle=b", "input=i.jsonl", "output=o.jsonl", "id_column=text",
                                    f"paths.root_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="id_column and text_column name the same column"):
        check_settings(cfg)
    cfg = compose_named("spark_predict", ["model_uri=m", "input=i.parquet", "output=o.parquet", "text_column=id",
                                          f"paths.root_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="id_column and text_column name the same column"):
        spark_check_settings(cfg)
