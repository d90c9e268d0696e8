"""Every notebook executes end to end with its seconds-long settings (LEARNGENE_SMOKE=1), so none can rot."""

import os
from pathlib import Path

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("LEARNGENE_SMOKE", "1")
    monkeypatch.setenv("LEARNGENE_WORKDIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("XLA_FLAGS", os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", ""))
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_notebooks_keep_logic_in_the_package():
    """Notebook code cells stay short: the work is done by learngene_jax functions."""
    nbformat = pytest.importorskip("nbformat")
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert len(cell.source.splitlines()) <= 20, (path.name, cell.source[:80])
                assert "def " not in cell.source, path.name
