"""The layer contracts (pyproject.toml [tool.importlinter]) pass, and fail when an import that
breaks them is added: run lint-imports on a copy of the package with one bad import each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers.paths import REPO_ROOT

LINT = Path(sys.executable).parent / "lint-imports"


def _lint(src_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src_root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(REPO_ROOT / "pyproject.toml")],
                          capture_output=True, text=True, env=env, cwd=src_root, timeout=300)


def test_contracts_pass_on_the_package(tmp_path) -> None:
    proc = _lint(REPO_ROOT / "src")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") == 6


@pytest.mark.parametrize(("module", "bad_import", "contract"), [
    ("inference/coder.py", "import medcoder.training.trainer", "Inference never imports training"),
    ("routing/policy.py", "import mlflow", "Domain packages never import MLflow"),
    ("data/labels.py", "import medcoder.modeling", "Layers run one way down"),
    ("calibration/calibrators.py", "from omegaconf import DictConfig", "Only workflows"),
])
def test_a_breaking_import_fails_the_check(tmp_path, module, bad_import, contract) -> None:
    copy = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "src" / "medcoder", copy / "medcoder",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = copy / "medcoder" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # added by the test\n")
    proc = _lint(copy)
    assert proc.returncode != 0
    assert f"{contract}" in proc.stdout and "BROKEN" in proc.stdout
