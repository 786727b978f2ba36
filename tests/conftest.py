"""Session fixtures shared by the test files: the test profile's params and dataset, one finished run of it, and
hand-made arbitrage-free surfaces.

`finished_run` runs the whole pipeline once per session (every notebook of params/test.yaml, about 75 s on an idle
machine): the tests that read a finished run share it and copy it before they change anything. Tests that run the
whole pipeline are marked `slow` (pyproject.toml); `make test-fast` leaves them out."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_PARAMS = ROOT / "params" / "test.yaml"


def write_sweep(tmp_path, **body) -> Path:
    """A sweep file at tmp_path/s.yaml with `body` (its base the test profile unless given), for the sweep tests."""
    import yaml
    body.setdefault("base", str(TEST_PARAMS))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def test_params() -> dict:
    """params/test.yaml, merged and validated. Shared: a test that changes it works on a copy.deepcopy."""
    from backfill import params
    return params.load(TEST_PARAMS)


@pytest.fixture(scope="session")
def test_dataset(test_params):
    """The test profile's dataset: the embedded market-calibrated data on the 5x5 grid, checked against the params."""
    from backfill import data
    return data.load_for(test_params)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """The run directory of one whole `python -m backfill run params/test.yaml`. Read it; to change it, copy it
    first (shutil.copytree), so that every test sees the run as the pipeline left it."""
    rd = tmp_path_factory.mktemp("finished_run") / "test"
    res = subprocess.run([sys.executable, "-m", "backfill", "run", str(TEST_PARAMS), "--run-dir", str(rd)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    return rd


def _ssvi(T, K, atm=0.2, rho=-0.7, eta=1.0, gamma=0.4):
    """SSVI vols (n_mat, n_mon) with flat ATM vol: inside the Gatheral-Jacquier bounds."""
    theta = atm**2 * np.asarray(T)[:, None]
    phi = eta / theta**gamma
    k = np.log(np.asarray(K))[None, :]
    w = theta / 2 * (1 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1 - rho**2))
    return np.sqrt(w / np.asarray(T)[:, None])


@pytest.fixture(scope="session")
def ssvi():
    """ssvi(T, K, atm=0.2, rho=-0.7, eta=1.0, gamma=0.4) -> arbitrage-free SSVI vols (n_mat, n_mon), for the
    arbitrage checks (test_metrics) and the repair (test_arbitrage)."""
    return _ssvi

