"""The notebooks run top to bottom on the embedded model, with no cell erroring.

Each is executed with nbclient in a kernel of this interpreter: the ``python3`` kernel spec
names ``python``, which jupyter_client replaces with ``sys.executable``, so the kernel is the
venv's Python whichever ``python`` is first on PATH. Runs go to a tmp folder
(``INTERP_NOTEBOOK_OUT``), shared by the notebooks in order: 02, 03 and 04 reuse the
replay of 01 as a reader would. The notebooks are stored without outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = (
    "01_replay_and_convergence",
    "02_probes_across_rounds",
    "03_patching_between_rounds",
    "04_sae_features",
    "05_circuits_between_rounds",
    "06_explore",
)
CELL_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-runs")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, notebook_env, tmp_path, monkeypatch):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    monkeypatch.setenv("INTERP_NOTEBOOK_OUT", str(notebook_env))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
