"""Properties of the embedded, market-calibrated default dataset (SPEC section 3)."""
import numpy as np
import pytest

from backfill.calibrated import make_default_arrays
from backfill.metrics import arbitrage_share, mean_acf


@pytest.fixture(scope="module")
def data():
    return make_default_arrays()


def _vix_overlap(data):
    from arch.data import vix
    v = vix.load()["vix"].dropna()
    _, i_d, i_v = np.intersect1d(data["dates"], v.index.strftime("%Y-%m-%d"), return_indices=True)
    return data["surface"][i_d, 0, 2], v.to_numpy()[i_v] / 100


def test_shapes_grid_and_dates(data):
    s, n = data["surface"], len(data["ret"])
    assert s.shape == (n, 5, 5) and s.dtype == np.float64 and n > 5000
    np.testing.assert_allclose(data["maturities"], [1 / 12, 1 / 4, 1 / 2, 1, 2])
    np.testing.assert_allclose(data["moneyness"], [0.7, 0.85, 1.0, 1.15, 1.3])
    d = data["dates"]
    assert d.shape == (n,) and all(len(x) == 10 for x in d[:3])
    assert d[0].startswith("1999-01") and d[-1].startswith("2018-12")
    assert np.all(d[1:] > d[:-1])                        # sorted, no duplicates
    assert np.all(np.isfinite(data["ret"])) and np.abs(data["ret"]).max() < 0.25
    assert all(isinstance(v, float) for v in data["components"].values())


def test_vols_finite_and_in_range(data):
    s = data["surface"]
    assert np.all(np.isfinite(s)) and s.min() > 0 and s.max() < 5


def test_vix_correlation(data):
    atm, v = _vix_overlap(data)
    assert len(v) > 1000
    corr = np.corrcoef(atm, v)[0, 1]
    assert corr >= 0.8
    assert data["vix_corr"] == pytest.approx(corr)
    assert abs(np.mean(atm**2) / np.mean(v**2) - 1) < 0.1   # VRP calibrated to the VIX level


def test_arbitrage_free_share(data):
    share = arbitrage_share(data["surface"], data["maturities"], data["moneyness"])
    assert 1 - share["any"] >= 0.99


def test_2008_peak(data):
    d = data["dates"]
    m = (d >= "2008-09-01") & (d <= "2008-12-31")
    assert data["surface"][m, 0, 2].max() >= 0.6


def test_persistence(data):
    acf = mean_acf(data["surface"], [20, 60, 90])
    assert acf[20] >= 0.8 and acf[60] >= 0.6 and acf[90] >= 0.5


def test_skew_steeper_after_selloff(data):
    s, d = data["surface"], data["dates"]
    skew = s[:, 3, 1] - s[:, 3, 3]                          # 1y: 0.85 minus 1.15 moneyness
    crisis = (d >= "2008-10-01") & (d <= "2008-11-30")
    calm = (d >= "2017-01-01") & (d <= "2017-12-31")
    assert skew.min() > 0
    assert skew[crisis].mean() > skew[calm].mean()


def test_deterministic(data):
    again = make_default_arrays()
    for key in ("surface", "ret", "dates", "maturities", "moneyness"):
        assert np.array_equal(data[key], again[key])
    assert again["vix_corr"] == data["vix_corr"] and again["components"] == data["components"]


def test_ssvi_parameters_inside_bounds(data):
    c = data["components"]
    assert c["ssvi_eta"] * (1 + abs(c["rho_min"])) <= 2 and 0 < c["ssvi_gamma"] <= 0.5
    assert -1 < c["rho_min"] <= c["rho0"] <= c["rho_max"] < 0
    assert 0.9 < c["garch_persistence"] < 1 and c["vrp_variance_factor"] > 1


# --- any grid ------------------------------------------------------------------------------------

MAT6 = [1 / 12, 1 / 6, 1 / 4, 1 / 2, 1.0, 2.0]
MON7 = [0.9, 0.933, 0.967, 1.0, 1.033, 1.067, 1.1]


@pytest.fixture(scope="module")
def data6x7():
    return make_default_arrays(maturities=MAT6, moneyness=MON7)


def test_6x7_grid_shape_and_arbitrage(data, data6x7):
    s = data6x7["surface"]
    assert s.shape == (len(data["ret"]), 6, 7)
    assert np.array_equal(data6x7["ret"], data["ret"]) and np.array_equal(data6x7["dates"], data["dates"])
    np.testing.assert_array_equal(data6x7["maturities"], MAT6)
    np.testing.assert_array_equal(data6x7["moneyness"], MON7)
    assert np.all(np.isfinite(s)) and s.min() > 0
    share = arbitrage_share(s, MAT6, MON7)                 # measured: 0 violations
    assert 1 - share["any"] >= 0.99


def test_6x7_grid_same_calibration(data, data6x7):
    # the 1-month ATM series (and every point shared with the 5x5 grid) is the 5x5 build's, bit for bit
    np.testing.assert_array_equal(data6x7["surface"][:, 0, 3], data["surface"][:, 0, 2])
    np.testing.assert_array_equal(data6x7["surface"][:, [0, 2, 3, 4, 5], 3], data["surface"][:, :, 2])
    assert data6x7["components"] == data["components"] and data6x7["vix_corr"] == data["vix_corr"]


def test_calibration_does_not_need_the_1m_atm_point(data):
    mat, mon = [0.1, 0.3, 1.5], [0.95, 1.02, 1.08]
    d = make_default_arrays(maturities=mat, moneyness=mon)
    assert d["surface"].shape == (len(data["ret"]), 3, 3)
    assert d["components"]["vrp_variance_factor"] == data["components"]["vrp_variance_factor"]
    assert d["vix_corr"] == data["vix_corr"]
    assert arbitrage_share(d["surface"], mat, mon)["any"] <= 0.01


def test_default_cache_per_grid(tmp_path, data, data6x7):
    from backfill import data as data_mod
    grid = {"maturities": MAT6, "moneyness": MON7}
    p5, p6 = data_mod.default_cache_path(tmp_path), data_mod.default_cache_path(tmp_path, grid)
    assert p5.name == "default_v2.npz"                     # the 5x5 cache name is unchanged
    assert p6 != p5 and p6.name.startswith("default_v2_")
    assert data_mod.default_cache_path(tmp_path, {"maturities": MAT6, "moneyness": MON7[:-1]}) != p6
    ds6 = data_mod.load_default(tmp_path, grid)
    assert p6.exists() and not p5.exists()
    assert ds6.grid == (6, 7) and np.array_equal(ds6.surface, data6x7["surface"])
    ds5 = data_mod.load_default(tmp_path)
    assert p5.exists() and ds5.grid == (5, 5) and np.array_equal(ds5.surface, data["surface"])
    again = data_mod.load("default", cache_dir=tmp_path, grid=grid)
    assert "cached" in again.source and np.array_equal(again.surface, ds6.surface)
    p6.write_bytes(p5.read_bytes())                        # a cache of the wrong grid is rebuilt
    ds = data_mod.load_default(tmp_path, grid)
    assert "cached" not in ds.source and ds.grid == (6, 7)
