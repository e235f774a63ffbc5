"""Issue 22: config values used as one folder/file name, and the one rule for what medcoder may delete.

``check_path_part`` (medcoder.constraints) refuses every value that is not one name; the
ownership marker (medcoder.ownership) decides what a run may delete or replace; the checkpoint
folder (medcoder.workflows.checkpoints), the MLflow names (medcoder.tracking.registry), the code-set
diff and the label migration (medcoder.codesets) apply both.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import pytest

from medcoder.codesets import CodeSet, diff_codesets, migrate_dataset, write_diff, write_migration
from medcoder.constraints import check_path_part
from medcoder.data.codiesp import RELEASE_DIRNAME
from medcoder.errors import ConfigError, DataError
from medcoder.ownership import (
    OWNER_MARKER,
    claim_outputs,
    create_owned_dir,
    owned_kind,
    remove_owned_dir,
)
from medcoder.tracking.registry import check_alias, check_promote_names, check_registered_model_name
from medcoder.workflows.checkpoints import (
    CHECKPOINTS_KIND,
    checkpoint_folder,
    checkpoint_to_resume,
    remove_checkpoints,
)

BAD_NAMES = ["", " ", ".", "..", "../../precious", "/abs/path", "a/b", "a\\b", "a\x00b", "a\nb", "a\x1bb",
             "\u2028", "\udcff", " lead", "trail ", "x" * 129, "é" * 101, None, True, 1.5, ["a"]]
GOOD_NAMES = ["quickstart", "codiesp_d_en-minilm", "run.1", "..x", "x..", "a b", "ünïcode名", 7, "x" * 128]


@pytest.mark.parametrize("value", BAD_NAMES, ids=ascii)
def test_a_path_part_is_one_name_or_one_line_error(value) -> None:
    with pytest.raises(ConfigError) as exc:
        check_path_part("run_name", value)
    message = str(exc.value)
    assert message.startswith(f"run_name={ascii(value)} ") and "\n" not in message and "\r" not in message
    message.encode("utf-8")  # printable as the script's one line
    assert "e.g. run_name=" in message  # says what to do


@pytest.mark.parametrize("value", GOOD_NAMES, ids=ascii)
def test_good_names_pass_as_text(value) -> None:
    assert check_path_part("run_name", value) == str(value)


# -- the checkpoint folder (the critical case) ------------------------------------------------------
@pytest.mark.parametrize("run_name", ["../../precious", "", "/abs/path"], ids=ascii)
def test_run_name_that_is_a_path_is_refused(tmp_path: Path, run_name: str) -> None:
    with pytest.raises(ConfigError, match="run_name="):
        checkpoint_folder(tmp_path / "outputs" / "checkpoints", run_name)


def _precious(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "thesis.txt").write_text("years of work")
    return folder


def test_resume_never_deletes_only_a_folder_medcoder_created(tmp_path: Path) -> None:
    """Before: ``trainer.resume=never`` rmtree'd ``checkpoint_dir / run_name`` whatever it was."""
    theirs = _precious(tmp_path / "checkpoints" / "precious")
    for mode in ("never", "auto"):
        with pytest.raises(ConfigError, match="was not created by medcoder"):
            checkpoint_to_resume(theirs, {"seed": 1}, mode=mode, run_name="precious")
    assert (theirs / "thesis.txt").read_text() == "years of work"
    assert not (theirs / OWNER_MARKER).exists()  # nothing written into it either

    ours = tmp_path / "checkpoints" / "mine"
    assert checkpoint_to_resume(ours, {"seed": 1}, mode="auto", run_name="mine") is None
    assert owned_kind(ours) == CHECKPOINTS_KIND
    (ours / "checkpoint-3").mkdir()
    (ours / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert checkpoint_to_resume(ours, {"seed": 1}, mode="auto", run_name="mine").endswith("checkpoint-3")
    with pytest.raises(ConfigError, match="different config"):
        checkpoint_to_resume(ours, {"seed": 2}, mode="auto", run_name="mine")
    assert checkpoint_to_resume(ours, {"seed": 2}, mode="never", run_name="mine") is None  # ours: replaced
    assert not (ours / "checkpoint-3").exists() and owned_kind(ours) == CHECKPOINTS_KIND


def test_finished_run_removes_only_its_own_folder(tmp_path: Path, caplog) -> None:
    theirs = _precious(tmp_path / "precious")
    remove_checkpoints(theirs)  # a finished run never fails over its clean-up, and never deletes this
    assert (theirs / "thesis.txt").exists() and "refusing to delete" in caplog.text
    ours = create_owned_dir(tmp_path / "ours", CHECKPOINTS_KIND, key="run_name")
    remove_checkpoints(ours)
    assert not ours.exists()


def test_ownership_marker_is_strict(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_owned_dir(empty, "checkpoints", key="k") == empty  # nothing in it to lose: claimed
    other = create_owned_dir(tmp_path / "other", "codeset_diff", key="k")
    with pytest.raises(ConfigError, match="not created by medcoder for checkpoints"):
        remove_owned_dir(other, "checkpoints", key="k")  # another kind's folder
    link = tmp_path / "link"
    os.symlink(empty, link)
    for call in (lambda: create_owned_dir(link, "checkpoints", key="k"),
                 lambda: remove_owned_dir(link, "checkpoints", key="k")):
        with pytest.raises(ConfigError):
            call()
    assert empty.is_dir() and link.is_symlink()
    forged = _precious(tmp_path / "forged")
    (forged / OWNER_MARKER).write_text('{"program": "someone-else", "kind": "checkpoints"}')
    with pytest.raises(ConfigError):
        remove_owned_dir(forged, "checkpoints", key="k")
    assert (forged / "thesis.txt").exists()
    assert remove_owned_dir(tmp_path / "missing", "checkpoints", key="k") is False


def test_claim_outputs_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("mine")
    (out / "notes.txt").write_text("also mine")
    with pytest.raises(ConfigError, match=r"summary\.json exists and was not written by medcoder"):
        claim_outputs(out, ["codeset_diff.csv", "summary.json"], kind="codeset_diff")
    assert not (out / OWNER_MARKER).exists()
    claim_outputs(out, ["codeset_diff.csv"], kind="codeset_diff")  # only new names: fine
    (out / "codeset_diff.csv").write_text("ours")
    claim_outputs(out, ["codeset_diff.csv"], kind="codeset_diff")  # ours, listed: may be replaced
    os.symlink(out / "notes.txt", out / "summary.txt")
    with pytest.raises(ConfigError, match="summary.txt"):
        claim_outputs(out, ["summary.txt"], kind="codeset_diff")
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        claim_outputs(file, ["a"], kind="codeset_diff")
    assert (out / "notes.txt").read_text() == "also mine" and (out / "summary.json").read_text() == "mine"


# -- MLflow names -----------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["../../x", "../../etc", "", "a b", "a.b", "latest", "LATEST", "v3", "V12", "a/b",
                                   None, "x" * 200], ids=ascii)
def test_bad_alias_is_one_line(alias) -> None:
    with pytest.raises(ConfigError) as exc:
        check_alias("to_alias", alias)
    assert str(exc.value).startswith(f"to_alias={ascii(alias)} ") and "\n" not in str(exc.value)


@pytest.mark.parametrize("alias", ["candidate", "champion", "prod-2", "v3a", "ganador_é"])
def test_mlflow_aliases_pass(alias: str) -> None:
    assert check_alias("alias", alias) == alias


def test_registered_model_name_and_promote_names() -> None:
    assert check_registered_model_name("n", "medcoder-icd10") == "medcoder-icd10"
    for bad in ("a:b", "../m", "", "a/b"):
        with pytest.raises(ConfigError):
            check_registered_model_name("n", bad)
    check_promote_names("m", version=3, from_alias="../../unused", to_alias="champion")  # from_alias unused
    with pytest.raises(ConfigError, match="from_alias="):
        check_promote_names("m", version=None, from_alias="../x", to_alias="champion")


# -- codeset_diff and migrate_labels never replace a user's file -------------------------------------
OLD = CodeSet(2030, {"A00": "h", "A00.0": "b"}, ["A00.0"], source="old")
NEW = CodeSet(2031, {"A00": "h", "A00.0": "b", "A00.1": "b"}, ["A00.0", "A00.1"], source="new")


def test_codeset_diff_refuses_to_overwrite_a_users_file(tmp_path: Path) -> None:
    """Before: ``codeset_diff output_dir=<existing>`` replaced summary.json & co. whatever they were."""
    out = tmp_path / "existing"
    out.mkdir()
    (out / "summary.txt").write_text("my notes")
    with pytest.raises(ConfigError, match=r"summary\.txt exists and was not written by medcoder"):
        write_diff(diff_codesets(OLD, NEW), out)
    assert (out / "summary.txt").read_text() == "my notes" and not (out / "codeset_diff.csv").exists()
    paths = write_diff(diff_codesets(OLD, NEW), tmp_path / "new")
    again = write_diff(diff_codesets(OLD, NEW), tmp_path / "new")  # its own files: replaced
    assert paths == again and "A00.1" in paths["csv"].read_text()


def _corpus(ids: list[str]) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"id": ids, "text": ["secret note"] * len(ids), "codes": [["A00.0"]] * len(ids)})})


def test_migration_never_replaces_or_deletes_a_users_entry(tmp_path: Path) -> None:
    result = migrate_dataset(_corpus(["n1"]), NEW, OLD)
    out = tmp_path / "out"
    release = _precious(out / RELEASE_DIRNAME)  # e.g. output_dir= the user's CodiEsp copy
    with pytest.raises(ConfigError, match=RELEASE_DIRNAME):
        write_migration(result, out, fmt="codiesp")
    assert (release / "thesis.txt").exists()
    (out / "train.jsonl").write_text("the user's corpus")
    with pytest.raises(ConfigError, match=r"train\.jsonl exists and was not written by medcoder"):
        write_migration(result, out)
    assert (out / "train.jsonl").read_text() == "the user's corpus"
    mine = tmp_path / "mine"
    write_migration(result, mine, fmt="codiesp")
    write_migration(result, mine, fmt="codiesp")  # its own release: replaced
    assert (mine / RELEASE_DIRNAME / "train" / "trainD.tsv").is_file()


def test_migrated_note_ids_never_become_paths(tmp_path: Path) -> None:
    result = migrate_dataset(_corpus(["../../../../escape"]), NEW, OLD)  # out/ + 4 levels of staging
    with pytest.raises(DataError, match="note id"):
        write_migration(result, tmp_path / "out", fmt="codiesp")
    assert not list(tmp_path.rglob("escape*"))
