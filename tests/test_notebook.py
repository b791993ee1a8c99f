"""The notebook runs top to bottom (nbclient) in its tiny 'smoke' setting, so it cannot rot."""
import os

import nbformat
from nbclient import NotebookClient

from conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "lade_label_shift.ipynb"


def test_notebook_runs_top_to_bottom(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LADE_NOTEBOOK_SETTING", "smoke")
    monkeypatch.setenv("LADE_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LADE_NOTEBOOK_DATA_ROOT", str(data_dir))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "| PC Softmax | oracle |" in outputs and "| LADE | em |" in outputs
    assert "L1 error of the EM prior" in outputs
    assert "| EM, tilted, sparse or free, gated at" in outputs and "| LADE: p_t | F50 |" in outputs
    assert "| MLLS + BCTS (EM without smoothing) | " in outputs and "top-1 %: mean / worst draw | LT10 |" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    for loss in ("cifar100_lt_100_ce_quick", "cifar100_lt_100_lade_quick"):
        assert (tmp_path / "runs" / loss / "test_logits.npy").is_file()
