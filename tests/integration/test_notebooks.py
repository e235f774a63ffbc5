"""Every notebook in notebooks/ runs top to bottom on the current package (nbclient)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ..helpers.paths import CODIESP_DIR, REPO_ROOT

pytestmark = pytest.mark.integration
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# Notebooks that need a trained bundle run in their own test below, on the tiny test bundle.
BUNDLE_NOTEBOOKS = {"02_bundle_walkthrough.ipynb"}


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in BUNDLE_NOTEBOOKS],
                         ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDCODER_CODIESP_DIR", str(CODIESP_DIR))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_bundle_walkthrough_executes(tiny_bundle: dict, tmp_path: Path, monkeypatch) -> None:
    """The analyst walk-through runs on the tiny bundle and its notes, and shows what it promises."""
    bundle_dir = tiny_bundle["result"].bundle_dir
    monkeypatch.setenv("MEDCODER_BUNDLE", str(bundle_dir))
    monkeypatch.setenv("MEDCODER_NOTES", tiny_bundle["corpus"]["test"])
    monkeypatch.setenv("MEDCODER_N_NOTES", "8")
    path = REPO_ROOT / "notebooks" / "02_bundle_walkthrough.ipynb"
    committed = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), "commit it with outputs cleared"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      + str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert tiny_bundle["result"].manifest.bundle_id in shown
    assert "8 notes scored" in shown
    for column in ("description", "probability", "decision", "reasons", "evidence"):
        assert column in shown
    assert "auto_accept" in shown or "human_review" in shown
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2  # reliability diagram + precision-coverage curve
