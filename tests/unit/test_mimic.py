"""MIMIC-III / MIMIC-IV loaders on synthetic files in the published schemas (never real data)."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from medcoder.data import mimic
from medcoder.data.mimic import (
    MULLENBACH_TOP50,
    edin_preprocess,
    load_mimic,
    reformat_icd9,
    reformat_icd10,
)
from medcoder.errors import ConfigError, DataError

from ..helpers.mimic import write_mimic3, write_mimic4


@pytest.mark.parametrize(("raw", "is_diag", "expected"), [
    ("4019", True, "401.9"), ("25000", True, "250.00"), ("486", True, "486"),
    ("E8790", True, "E879.0"), ("E879", True, "E879"), ("V5861", True, "V58.61"),
    ("3893", False, "38.93"), ("966", False, "96.6"), ("00", False, "00"), ("401.9", True, "401.9"),
])
def test_icd9_dots_as_mullenbach(raw: str, is_diag: bool, expected: str) -> None:
    assert reformat_icd9(raw, is_diag=is_diag) == expected


@pytest.mark.parametrize(("raw", "is_diag", "expected"), [
    ("E119", True, "E11.9"), ("I10", True, "I10"), ("s72001a", True, "S72.001A"),
    ("0DTJ4ZZ", False, "0DTJ4ZZ"),
])
def test_icd10_dots(raw: str, is_diag: bool, expected: str) -> None:
    assert reformat_icd10(raw, is_diag=is_diag) == expected


def test_edin_text_preprocessing() -> None:
    assert edin_preprocess("BP 120/80, Pt. given 2 mg\nof Drug-X") == "bp pt given mg of drug x"


def _dotted(codes: list[str], is_diag: bool) -> list[str]:
    return [reformat_icd9(c, is_diag=is_diag) for c in codes]


def test_mimic3_full_schema_codes_and_addenda(tmp_path: Path) -> None:
    truth = write_mimic3(tmp_path / "m3")
    dd = load_mimic(tmp_path / "m3", variant="mimiciii_full", cache_dir=tmp_path / "cache")
    assert list(dd) == ["train", "dev", "test"]
    assert dd["train"].column_names == ["id", "text", "codes"]
    rows = {r["id"]: r for split in dd.values() for r in split}
    coded = {h for h in truth.text if truth.diag[h] or truth.proc[h]}
    assert set(rows) == {str(h) for h in coded}  # admissions without a code are dropped
    for h in coded:
        row = rows[str(h)]
        # the report and its addendum (later in the file) joined with a space; other notes ignored
        assert row["text"] == truth.text[h]
        assert row["codes"] == _dotted(truth.diag[h], True) + _dotted(truth.proc[h], False)
    assert any("ADDENDUM" in r["text"] for r in rows.values())
    assert not any("nursing note" in r["text"] for r in rows.values())


def test_mimic3_50_keeps_mullenbach_codes(tmp_path: Path) -> None:
    truth = write_mimic3(tmp_path / "m3")
    dd = load_mimic(tmp_path / "m3", variant="mimiciii_50", cache_dir=tmp_path / "cache")
    rows = {r["id"]: r["codes"] for split in dd.values() for r in split}
    expected = {}
    for h in truth.text:
        codes = [c for c in _dotted(truth.diag[h], True) + _dotted(truth.proc[h], False) if c in MULLENBACH_TOP50]
        if codes:
            expected[str(h)] = codes
    assert rows == expected
    assert "E879.0" not in {c for cs in rows.values() for c in cs}

    freq = load_mimic(tmp_path / "m3", variant="mimiciii_50", top50="frequency", cache_dir=tmp_path / "cache")
    codes = {c for split in freq.values() for cs in split["codes"] for c in cs}
    assert "E879.0" in codes and len(codes) <= 50


def test_mimic4_icd_version_and_min_count(tmp_path: Path) -> None:
    truth = write_mimic4(tmp_path / "iv", tmp_path / "iv-note")
    for variant, version in (("mimiciv_icd10", 10), ("mimiciv_icd9", 9)):
        dd = load_mimic(tmp_path / "iv", note_root=tmp_path / "iv-note", variant=variant,
                        cache_dir=tmp_path / "cache")
        fmt = mimic.reformat_icd10 if version == 10 else mimic.reformat_icd9
        full = {h: [fmt(c, is_diag=True) for c in truth.diag[h]] + [fmt(c, is_diag=False) for c in truth.proc[h]]
                for h in truth.text if truth.version[h] == version}
        freq = Counter(c for cs in full.values() for c in cs)
        expected = {str(h): [c for c in cs if freq[c] >= 10] for h, cs in full.items()}
        expected = {h: cs for h, cs in expected.items() if cs}
        rows = {r["id"]: r for split in dd.values() for r in split}
        assert {h: r["codes"] for h, r in rows.items()} == expected
        assert all(r["text"] == truth.text[int(h)] for h, r in rows.items())
        assert any(freq[c] < 10 for c in freq)  # the filter had something to drop


def _patients(dd, truth) -> dict[str, set[int]]:
    return {split: {truth.subject[int(i)] for i in dd[split]["id"]} for split in dd}


def test_splits_patient_disjoint_fractions_and_identical_on_rerun(tmp_path: Path) -> None:
    truth = write_mimic4(tmp_path / "iv", n_patients=400, seed=3)
    dd = load_mimic(tmp_path / "iv", variant="mimiciv_icd10", cache_dir=tmp_path / "c1")
    pats = _patients(dd, truth)
    assert not (pats["train"] & pats["dev"]) and not (pats["train"] & pats["test"]) and not (pats["dev"] & pats["test"])
    n = sum(len(p) for p in pats.values())
    # iterative stratification meets the label shares first, sizes only approximately (~300 here)
    assert abs(len(pats["test"]) / n - 0.15) < 0.03
    assert abs(len(pats["dev"]) / n - 0.10) < 0.03
    again = load_mimic(tmp_path / "iv", variant="mimiciv_icd10", cache_dir=tmp_path / "c2")
    for split in dd:
        assert again[split]["id"] == dd[split]["id"] and again[split]["codes"] == dd[split]["codes"]


def test_cache_reused_and_rebuilt_when_input_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mimic3(tmp_path / "m3")
    first = load_mimic(tmp_path / "m3", variant="mimiciii_full", cache_dir=tmp_path / "cache")
    (folder,) = (tmp_path / "cache").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["inputs"]["notes"]["size"] == (tmp_path / "m3" / "NOTEEVENTS.csv.gz").stat().st_size
    assert manifest["outputs"]["train"]["rows"] == len(first["train"])
    assert sorted(p.name for p in folder.iterdir()) == ["dev.arrow", "manifest.json", "test.arrow", "train.arrow"]

    def boom(*args, **kwargs):
        raise AssertionError("the notes were read again")

    monkeypatch.setattr(mimic, "_read_notes", boom)
    again = load_mimic(tmp_path / "m3", variant="mimiciii_full", cache_dir=tmp_path / "cache")
    assert again["train"]["id"] == first["train"]["id"]
    monkeypatch.undo()

    notes = tmp_path / "m3" / "NOTEEVENTS.csv.gz"
    st = notes.stat()
    os.utime(notes, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    monkeypatch.setattr(mimic, "_read_notes", boom)
    with pytest.raises(AssertionError, match="read again"):
        load_mimic(tmp_path / "m3", variant="mimiciii_full", cache_dir=tmp_path / "cache")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp left behind


def test_read_only_input_dir(tmp_path: Path) -> None:
    root = tmp_path / "m3"
    write_mimic3(root, gz=False)
    before = sorted(p.name for p in root.iterdir())
    for p in root.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP)
    root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        dd = load_mimic(root, variant="mimiciii_full", cache_dir=tmp_path / "cache")
        assert len(dd["train"]) > 0
        assert sorted(p.name for p in root.iterdir()) == before
    finally:
        root.chmod(stat.S_IRWXU)


def test_edin_split_file_is_used(tmp_path: Path) -> None:
    truth = write_mimic3(tmp_path / "m3")
    coded = sorted(h for h in truth.text if truth.diag[h] or truth.proc[h])
    names = ["train", "val", "test"]
    split = pd.DataFrame({"_id": coded[:-1], "split": [names[i % 3] for i in range(len(coded) - 1)]})
    split.to_feather(tmp_path / "mimiciii_full_splits.feather")
    dd = load_mimic(tmp_path / "m3", variant="mimiciii_full", cache_dir=tmp_path / "cache",
                    split_files=tmp_path / "mimiciii_full_splits.feather")
    assert dd["dev"]["id"] == [str(h) for i, h in enumerate(coded[:-1]) if i % 3 == 1]
    assert str(coded[-1]) not in {i for s in dd.values() for i in s["id"]}  # not listed: left out
    (folder,) = (tmp_path / "cache").iterdir()
    assert json.loads((folder / "manifest.json").read_text())["counts"]["admissions_not_in_split_files"] == 1


def test_missing_column_and_file_are_data_errors(tmp_path: Path) -> None:
    root = tmp_path / "m3"
    write_mimic3(root)
    notes = pd.read_csv(root / "NOTEEVENTS.csv.gz").drop(columns=["TEXT"])
    notes.to_csv(root / "NOTEEVENTS.csv.gz", index=False)
    with pytest.raises(DataError) as err:
        load_mimic(root, variant="mimiciii_full", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "NOTEEVENTS.csv.gz" in msg and "'TEXT'" in msg and "\n" not in msg and err.value.hint
    (root / "PROCEDURES_ICD.csv.gz").unlink()
    with pytest.raises(DataError, match="PROCEDURES_ICD.csv.gz: file not found"):
        load_mimic(root, variant="mimiciii_full", cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="variant"):
        load_mimic(root, variant="mimiciii_clean", cache_dir=tmp_path / "cache")


def test_bad_icd_version_names_row_and_column(tmp_path: Path) -> None:
    root = tmp_path / "iv"
    write_mimic4(root, n_patients=20)
    diag = pd.read_csv(root / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    diag.loc[3, "icd_version"] = "11"
    diag.to_csv(root / "hosp" / "diagnoses_icd.csv.gz", index=False)
    with pytest.raises(DataError, match=r"diagnoses_icd.csv.gz: data row 4, column 'icd_version'"):
        load_mimic(root, variant="mimiciv_icd10", cache_dir=tmp_path / "cache")
