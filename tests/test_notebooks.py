"""Committed notebooks: no outputs, a papermill `parameters` cell first, names from the design card."""
import json
from pathlib import Path

import pytest

from backfill.pipeline import NOTEBOOKS
from backfill.sweep.spec import CHAPTER, CLAIMS_CHAPTER

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
FILES = sorted(NB_DIR.glob("*.ipynb"))


def test_notebooks_exist_in_design_order():
    """A run's notebooks (01-09, in order), then the sweep chapters that `backfill sweep` runs (10 for a sweep over
    arms and space, 11 for one with claims)."""
    names = [f.stem for f in FILES]
    assert names == NOTEBOOKS + [CHAPTER.stem, CLAIMS_CHAPTER.stem]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_parameters_cell_first(path):
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "parameters" in first["metadata"].get("tags", [])
    src = "".join(first["source"])
    assert "params_path =" in src and "run_dir =" in src
