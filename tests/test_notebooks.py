"""Every notebook runs headless in quick mode, shows its figures and writes its files."""

import base64
import os

import matplotlib.image
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
# Files each notebook writes into NTK_ZOO_NOTEBOOK_OUTDIR.
EXPECTED = {
    "01_quick_start.ipynb": ["01_kernel.png"],
    "02_ntk_spectra.ipynb": [
        "02_decay.png",
        "02_condition.png",
        "02_layer_shares.png",
        "02_nngp_vs_ntk.png",
        "02_cross_entropy.png",
    ],
    "03_architecture_search.ipynb": [
        "03_top_k.png",
        "03_proxy_error_bars.png",
        "nas/nas.json",
        "nas/proxies.png",
        "nas/ranking.md",
    ],
    "05_gradient_features.ipynb": ["05_spectra.png", "05_error_vs_dim.png", "05_lds.png"],
    "04_ntk_dynamics.ipynb": [
        "04_drift.png",
        "04_alignment.png",
        "04_linearized.png",
        "train/dynamics.json",
        "train/dynamics.png",
        "train/kernels.npz",
    ],
}


def test_every_notebook_is_tested_and_stored_without_outputs():
    names = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
    assert names == sorted(EXPECTED)
    for name in names:
        nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv("NTK_ZOO_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("NTK_ZOO_NOTEBOOK_OUTDIR", str(tmp_path))
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # short compiles, as in conftest
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = NotebookClient(  # no per-cell time limit: CI bounds the whole run
        nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [
        o["data"]["image/png"]
        for c in nb.cells
        for o in c.get("outputs", [])
        if "data" in o and "image/png" in o["data"]
    ]
    assert images, f"{name} shows no figure"
    for path in EXPECTED[name]:
        full = tmp_path / path
        assert full.is_file() and full.stat().st_size > 0, path
        if path.endswith(".png"):
            assert matplotlib.image.imread(full).std() > 0  # decodable, not blank
    decoded = tmp_path / "shown.png"
    decoded.write_bytes(base64.b64decode(images[0]))
    assert matplotlib.image.imread(decoded).shape[0] > 100
