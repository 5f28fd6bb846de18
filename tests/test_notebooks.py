"""Every notebook runs headless from the repository root on the shared tiny organism."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    """No outputs, execution counts or saved widget state in any committed notebook (fast: no kernel)."""
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.get("outputs") for c in code), f"{path.name}: clear its outputs before committing"
        assert all(c.get("execution_count") is None for c in code), f"{path.name}: clear its execution counts"
        assert "widgets" not in nb.metadata, f"{path.name}: saved widget state; clear it before committing"


def test_progress_in_a_notebook_is_a_widget_not_text():
    """ipywidgets is installed, so a progress display in a kernel is a tqdm widget: no "IProgress not
    found" warning, no lines of text progress."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from workbench.core.progress import StageLines, progress_bar\n"
        "bar = progress_bar(range(3), desc='stage')\n"
        "print('lines' if isinstance(bar, StageLines) else 'widget'); _ = list(bar)")]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text.strip() == "widget" and "IProgress" not in text, text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tiny_organism):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
