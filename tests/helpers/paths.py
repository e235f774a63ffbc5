"""Where things are, for tests."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CODIESP_DIR = REPO_ROOT.parent / "shared" / "data" / "codiesp"
TINY_MODEL_NAME = "medcoder-test"
