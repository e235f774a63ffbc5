"""A refused run takes away only the Hydra run folder it created, and only with Hydra's own files in it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from medcoder.cli import RunDirGuard, discard_run_dir


def _start(run_dir: Path) -> None:
    RunDirGuard().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}}}))
    (run_dir / ".hydra").mkdir(parents=True)  # what Hydra then writes
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).write_text("{}\n")
    (run_dir / "train.log").write_text("")


def test_new_run_folder_and_its_new_parents_go(tmp_path) -> None:
    base = tmp_path / "existing"
    base.mkdir()
    _start(base / "outputs" / "hydra" / "2026-12-04_22-30-51")
    discard_run_dir()
    assert list(tmp_path.rglob("*")) == [base]


def test_a_folder_with_anything_else_in_it_stays(tmp_path) -> None:
    run_dir = tmp_path / "outputs" / "hydra" / "run"
    _start(run_dir)
    (run_dir / "checkpoint.bin").write_bytes(b"\0")
    discard_run_dir()
    assert (run_dir / "checkpoint.bin").exists() and (run_dir / ".hydra" / "config.yaml").exists()


def test_nothing_is_removed_without_a_guarded_run(tmp_path) -> None:
    discard_run_dir()  # no run started in this process: a no-op
    run_dir = tmp_path / "run"
    _start(run_dir)
    discard_run_dir()
    discard_run_dir()  # the second call has nothing left to do
    assert not run_dir.exists() and tmp_path.exists()
