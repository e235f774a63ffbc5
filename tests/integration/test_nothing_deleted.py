"""Issue 22, through the workflows and scripts: a config value that is a path part is refused in
one line before anything is written, and nothing outside the run's folders is deleted or replaced.

Each case failed before the fix: ``run_name=../../precious`` / ``run_name=`` / ``run_name=/abs``
trained and then deleted that folder (rc 0); ``migrate_labels data.name=../../..`` wrote note text
outside the outputs; ``export mlflow_model.alias=../../x`` and ``promote to_alias=../../etc`` were
tracebacks after half the work; ``compare.py experiment=<name>`` was refused by Hydra;
``codeset_diff output_dir=<existing>`` replaced a user's files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medcoder.errors import ConfigError

from ..helpers.configs import compose_cfg, compose_named, tiny_overrides
from ..helpers.paths import REPO_ROOT


def _precious(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.txt").write_text("years of work")
    return folder


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` with its content (None for folders): a before/after snapshot."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _script(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


# -- training: run_name ----------------------------------------------------------------------------
@pytest.mark.parametrize("run_name", ["../../precious", "", "ABS"])
def test_train_refuses_a_run_name_that_is_a_path(tmp_path, tiny_corpus, tiny_encoder, run_name) -> None:
    from medcoder.workflows.train import train

    base = tmp_path / "base"
    root = base / "project"
    precious = _precious(base / "precious")  # == outputs/checkpoints/../../precious from root/outputs
    _precious(root / "outputs" / "checkpoints" / "another-run")  # `run_name=` named all of these
    if run_name == "ABS":
        run_name = str(precious)
    before = _tree(base)
    cfg = compose_cfg(tiny_overrides(root, tiny_corpus, tiny_encoder, f"run_name={run_name}",
                                     "trainer.num_train_epochs=1"))
    with pytest.raises(ConfigError, match="run_name=") as exc:
        train(cfg)
    assert "\n" not in str(exc.value)
    assert _tree(base) == before  # nothing deleted, nothing written (not even mlflow.db)


def test_train_script_run_name_error_is_one_line(tmp_path, tiny_corpus, tiny_encoder) -> None:
    _precious(tmp_path / "outputs" / "checkpoints" / "kept")
    proc = _script("train.py", tmp_path, *tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "run_name="))
    _one_error_line(proc, "run_name=''", "it is empty")
    assert (tmp_path / "outputs" / "checkpoints" / "kept" / "thesis.txt").exists()
    assert not (tmp_path / "mlflow.db").exists()


# -- migrate_labels: data.name -----------------------------------------------------------------------
def test_migrate_labels_refuses_a_data_name_that_is_a_path(tmp_path, tiny_corpus) -> None:
    from medcoder.workflows.codesets import run_migrate_labels

    root = tmp_path / "a" / "b" / "project"
    root.mkdir(parents=True)
    before = _tree(tmp_path)
    cfg = compose_named("migrate_labels", ["data=jsonl", f"data.train={tiny_corpus['train']}",
                                           f"data.dev={tiny_corpus['dev']}", f"data.test={tiny_corpus['test']}",
                                           "data.name=../../..", f"paths.root_dir={root}", "log_mlflow=false"])
    with pytest.raises(ConfigError, match=r"data\.name='\.\./\.\./\.\.'"):
        run_migrate_labels(cfg)
    assert _tree(tmp_path) == before


def test_migrate_labels_into_an_existing_folder_keeps_the_users_files(tmp_path, tiny_corpus) -> None:
    from medcoder.workflows.codesets import run_migrate_labels

    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.jsonl").write_text("the user's own train split")
    cfg = compose_named("migrate_labels", ["data=jsonl", f"data.train={tiny_corpus['train']}",
                                           f"data.dev={tiny_corpus['dev']}", f"data.test={tiny_corpus['test']}",
                                           f"output_dir={out}", f"paths.root_dir={tmp_path}", "log_mlflow=false"])
    with pytest.raises(ConfigError, match=r"train\.jsonl exists and was not written by medcoder"):
        run_migrate_labels(cfg)
    assert (out / "train.jsonl").read_text() == "the user's own train split"
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]


# -- codeset_diff: output_dir ------------------------------------------------------------------------
def test_codeset_diff_script_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": true}')
    proc = _script("codeset_diff.py", tmp_path, f"paths.root_dir={tmp_path}", f"output_dir={out}")
    _one_error_line(proc, str(out / "summary.json"), "not written by medcoder")
    assert json.loads((out / "summary.json").read_text()) == {"mine": True}
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_codeset_diff_refuses_a_year_that_is_a_path(tmp_path) -> None:
    from medcoder.workflows.codesets import run_codeset_diff

    cfg = compose_named("codeset_diff", [f"paths.root_dir={tmp_path}", "to_fy=../../../x"])
    with pytest.raises(ConfigError, match=r"to_fy='\.\./\.\./\.\./x' is not a fiscal year"):
        run_codeset_diff(cfg)
    assert not any(tmp_path.iterdir())


# -- export / promote: MLflow names --------------------------------------------------------------------
@pytest.mark.parametrize(("override", "key"), [
    ("mlflow_model.alias=../../x", "mlflow_model.alias='../../x'"),
    ("mlflow_model.alias=latest", "mlflow_model.alias='latest'"),
    ("mlflow_model.registered_model_name=../m", "mlflow_model.registered_model_name='../m'"),
    ("run_id=../../x", "run_id='../../x'"),
])
def test_export_checks_names_before_any_work(tmp_path, override, key) -> None:
    from medcoder.workflows.export import export_run

    cfg = compose_named("export", ["run_id=0123456789abcdef", f"paths.root_dir={tmp_path}", override])
    with pytest.raises(ConfigError) as exc:
        export_run(cfg)
    assert str(exc.value).startswith(key) and "\n" not in str(exc.value)
    assert not any(tmp_path.iterdir())  # no mlflow.db, no staging folder, no bundle


def test_promote_script_checks_the_alias_first(tmp_path) -> None:
    proc = _script("promote.py", tmp_path, f"paths.root_dir={tmp_path}", "to_alias=../../etc")
    _one_error_line(proc, "to_alias='../../etc'")
    assert not (tmp_path / "mlflow.db").exists()
    proc = _script("promote.py", tmp_path, f"paths.root_dir={tmp_path}", "from_alias=v1")
    _one_error_line(proc, "from_alias='v1'", "reserved")


# -- compare: experiment_name (experiment= collided with Hydra's group) --------------------------------
def test_compare_experiment_old_spelling_still_selects_by_experiment(tmp_path) -> None:
    proc = _script("compare.py", tmp_path, f"paths.root_dir={tmp_path}", "experiment=medcoder", "baseline=abc")
    assert "experiment_name=" in proc.stderr  # the warning names the new key
    _one_error_line(proc, "no FINISHED training runs match experiment_name=medcoder")
    proc = _script("compare.py", tmp_path, f"paths.root_dir={tmp_path}", "experiment_name=nope", "baseline=abc")
    _one_error_line(proc, "experiment_name='nope': no such experiment")
