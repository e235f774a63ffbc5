"""CodiEsp loader on tiny synthetic release folders: layout, normalisation, every bad-data case."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medcoder.data import load_codiesp, load_codiesp_with_report, load_corpus
from medcoder.data.codiesp import RELEASE_DIRNAME, find_release_dir
from medcoder.errors import ConfigError, DataError

NOTES = {
    "doc-b": "Second note. Fever.",
    "doc-a": "First note.\nTesticular pain.",
    "doc-c": "Third note without procedures.",
}
D_ROWS = ["doc-a\tn44.8", "doc-a\tz20.818", "doc-b\tr50.9", "doc-c\tr509", "doc-a\tN44.8"]
P_ROWS = ["doc-a\tbw03zzz", "doc-b\t3e02"]


def make_release(
    base: Path,
    *,
    splits: tuple[str, ...] = ("train", "dev", "test"),
    notes: dict[str, str] | None = None,
    d_rows: list[str] | None = None,
    p_rows: list[str] | None = None,
    nested: bool = True,
) -> Path:
    """Write a minimal release; returns the folder that holds ``final_dataset_v4_to_publish``."""
    release = base / RELEASE_DIRNAME if nested else base
    for split in splits:
        sd = release / split
        for sub in ("text_files", "text_files_en"):
            (sd / sub).mkdir(parents=True, exist_ok=True)
            for doc_id, text in (NOTES if notes is None else notes).items():
                suffix = " (es)" if sub == "text_files" else ""
                (sd / sub / f"{doc_id}.txt").write_text(text + suffix if text.strip() else text, "utf-8")
        (sd / f"{split}D.tsv").write_text("\n".join(D_ROWS if d_rows is None else d_rows) + "\n", "utf-8")
        (sd / f"{split}P.tsv").write_text("\n".join(P_ROWS if p_rows is None else p_rows) + "\n", "utf-8")
    return base


def test_columns_sorted_ids_and_normalised_deduped_codes(tmp_path: Path) -> None:
    dd = load_codiesp(make_release(tmp_path))
    assert set(dd) == {"train", "dev", "test"}
    train = dd["train"]
    assert train.column_names == ["id", "text", "codes"]
    assert train["id"] == ["doc-a", "doc-b", "doc-c"]
    assert train["codes"] == [["N44.8", "Z20.818"], ["R50.9"], ["R50.9"]]
    assert train["text"][0] == NOTES["doc-a"]


def test_accepts_release_folder_itself_and_spanish(tmp_path: Path) -> None:
    make_release(tmp_path)
    dd = load_codiesp(tmp_path / RELEASE_DIRNAME, language="es", splits=("dev",))
    assert list(dd) == ["dev"]
    assert dd["dev"]["text"][1] == NOTES["doc-b"] + " (es)"


def test_procedures_keep_docs_without_codes(tmp_path: Path) -> None:
    dd, report = load_codiesp_with_report(make_release(tmp_path), code_type="P", splits=["train"])
    assert dd["train"]["codes"] == [["BW03ZZZ"], ["3E02"], []]
    assert report.splits["train"].n_docs_without_codes == 1
    assert dd["train"].features["codes"].feature.dtype == "string"


def test_report_counts_duplicates(tmp_path: Path) -> None:
    _, report = load_codiesp_with_report(make_release(tmp_path), splits=["train"])
    s = report.splits["train"]
    assert (s.n_docs, s.n_labels, s.n_duplicate_labels, s.n_skipped) == (3, 4, 1, 0)


@pytest.mark.parametrize("bad", ["doc-a n44.8", "doc-a\t", "\tn44.8", "doc-a\tn44.8\textra"])
def test_corrupt_tsv_row_is_always_fatal(tmp_path: Path, bad: str) -> None:
    make_release(tmp_path, d_rows=["doc-b\tr50.9", bad])
    for on_error in ("skip", "raise"):
        with pytest.raises(DataError, match=r"trainD\.tsv:2"):
            load_codiesp(tmp_path, splits=["train"], on_error=on_error)


def test_blank_lines_in_tsv_are_ignored(tmp_path: Path) -> None:
    dd = load_codiesp(make_release(tmp_path, d_rows=["doc-a\tn44.8", "", "doc-b\tr50.9"]), splits=["train"])
    assert dd["train"]["codes"] == [["N44.8"], ["R50.9"], []]


def test_label_without_text_skip_counts_and_logs_id(tmp_path: Path, caplog) -> None:
    make_release(tmp_path, d_rows=["doc-a\tn44.8", "ghost\tr50.9", "ghost\tr51"])
    with caplog.at_level(logging.WARNING, logger="medcoder.data"):
        dd, report = load_codiesp_with_report(tmp_path, splits=["train"])
    assert "ghost" not in dd["train"]["id"]
    s = report.splits["train"]
    assert (s.n_labels_without_text, s.labels_without_text_ids) == (2, ["ghost"])
    assert "ghost" in caplog.text


def test_label_without_text_raise_names_file_line_id(tmp_path: Path) -> None:
    make_release(tmp_path, d_rows=["doc-a\tn44.8", "ghost\tr50.9"])
    with pytest.raises(DataError, match=r"trainD\.tsv:2.*'ghost'"):
        load_codiesp(tmp_path, splits=["train"], on_error="raise")


def test_empty_note_skip_and_raise(tmp_path: Path, caplog) -> None:
    make_release(tmp_path, notes={**NOTES, "doc-e": "  \n\t "}, d_rows=["doc-e\tr50.9", "doc-a\tn44.8"])
    with caplog.at_level(logging.WARNING, logger="medcoder.data"):
        dd, report = load_codiesp_with_report(tmp_path, splits=["train"])
    assert dd["train"]["id"] == ["doc-a", "doc-b", "doc-c"]
    s = report.splits["train"]
    assert s.empty_note_ids == ["doc-e"]
    assert s.n_labels_without_text == 0  # its labels are part of the empty-note skip
    assert "doc-e" in caplog.text and "Fever" not in caplog.text  # ids only, never note text
    with pytest.raises(DataError, match=r"doc-e\.txt"):
        load_codiesp(tmp_path, splits=["train"], on_error="raise")


def test_non_utf8_text_is_fatal_and_names_file(tmp_path: Path) -> None:
    make_release(tmp_path)
    bad = tmp_path / RELEASE_DIRNAME / "train" / "text_files_en" / "doc-b.txt"
    bad.write_bytes("Fiebre alta".encode("latin-1") + b"\xf1o")
    with pytest.raises(DataError, match=r"doc-b\.txt: not valid UTF-8"):
        load_codiesp(tmp_path, splits=["train"])


def test_missing_pieces_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a CodiEsp release"):
        load_codiesp(tmp_path)
    make_release(tmp_path, splits=("train",))
    with pytest.raises(DataError, match="split folder not found"):
        load_codiesp(tmp_path, splits=["train", "dev"])
    (tmp_path / RELEASE_DIRNAME / "train" / "trainP.tsv").unlink()
    with pytest.raises(DataError, match="trainP.tsv: label file not found"):
        load_codiesp(tmp_path, code_type="P", splits=["train"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"language": "fr"}, "data.language"), ({"code_type": "X"}, "data.code_type"), ({"on_error": "ignore"}, "data.on_error")],
)
def test_bad_options_are_config_errors(tmp_path: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_codiesp(make_release(tmp_path), **kwargs)


def test_find_release_dir_descends(tmp_path: Path) -> None:
    make_release(tmp_path / "unzipped" / "codiesp", splits=("train",))
    assert find_release_dir(tmp_path) == tmp_path / "unzipped" / "codiesp" / RELEASE_DIRNAME
    assert find_release_dir(tmp_path, max_depth=0) is None
    assert find_release_dir(tmp_path / "nope") is None


def test_load_corpus_codiesp_with_root(tmp_path: Path) -> None:
    make_release(tmp_path, splits=("train",))
    cfg = {"format": "codiesp", "root": str(tmp_path), "language": "en", "code_type": "P",
           "cache_dir": str(tmp_path / "cache"), "download": False, "on_error": "skip",
           "splits": ["train"]}
    assert load_corpus(cfg)["train"]["codes"] == [["BW03ZZZ"], ["3E02"], []]
