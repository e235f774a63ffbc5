"""Scripts fail fast in one line (subprocess). Config values are checked before any model is loaded: one line
naming key, value and range, and nothing left behind: not the MLflow store, not Hydra's run folder (only the
folders that run created; a user's existing ones stay)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..helpers.paths import REPO_ROOT


@pytest.mark.parametrize(("script", "args", "key"), [
    ("train.py", ["trainer.num_train_epochs=-1"], "trainer.num_train_epochs=-1"),
    ("calibrate.py", ["run_id=abc", "routing.target_precision=1.5"], "routing.target_precision=1.5"),
])
def test_scripts_fail_fast_in_one_line(script, args, key, tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), f"paths.root_dir={tmp_path}", *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "outputs").exists(), sorted(p.name for p in tmp_path.rglob("*"))


def test_a_refused_run_leaves_folders_that_were_there_before(tmp_path) -> None:
    mine = tmp_path / "outputs" / "hydra" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("a user's file\n")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "train.py"), f"paths.root_dir={tmp_path}",
                           "trainer.num_train_epochs=-1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "outputs", "outputs/hydra", "outputs/hydra/notes.txt"]
    assert mine.read_text() == "a user's file\n"
