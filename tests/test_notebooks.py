"""The tutorial notebooks: stored without outputs, and each runs top to bottom (a failing cell fails the test).

Executed with nbclient in a kernel of the running interpreter (ipykernel's ``python3`` spec; jupyter_client
starts it with ``sys.executable``), with the headless Agg backend.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="notebook tests need the dev extra (nbformat, nbclient, ipykernel)")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = {"01_quickstart", "02_generators", "03_dynamics_mitigations", "04_bring_your_own"}
BUDGET_S = 120  # each notebook must run in under 2 minutes on a laptop CPU


def test_the_tutorials_are_there():
    assert EXPECTED <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has stored outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=2 * BUDGET_S, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.1f} s")
    # Generous guard against a tutorial that silently became much slower (2x the budget: busy CI machines).
    assert seconds < 2 * BUDGET_S, f"{path.name} took {seconds:.0f} s; the tutorials should run in < {BUDGET_S} s"
