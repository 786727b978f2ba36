"""Properties of the embedded, market-calibrated default dataset (embedded_data; docs/design.md §9, issue 15)."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from backfill.embedded_data import MARKET_STATS, make_default_arrays, market_band, market_comparison
from backfill.data import ewma_vol
from backfill.metrics import arbitrage_share, mean_acf


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """Whatever a test builds through data.load_default lands in a temporary cache, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKFILL_CACHE", str(tmp_path_factory.mktemp("backfill_cache")))
        yield


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


def test_arbitrage_free_on_the_reference_grid(data):
    share = arbitrage_share(data["surface"], data["maturities"], data["moneyness"])
    assert share == {"calendar": 0.0, "butterfly": 0.0, "any": 0.0}      # measured: no violation at all


# --- issue 15: the 1-month ATM vol moves against the returns as the real VIX does ------------------

# The real VIX's statistics, 2014-2018, as issue 15's table gives them: pins the measurement itself.
VIX_TABLE = {"level_r2": 0.72, "level_resid_sd": 0.134, "level_resid_ar1": 0.82, "change_r2": 0.67,
             "change_corr": -0.82}


@pytest.fixture(scope="module")
def market(data):
    return market_comparison(data["surface"][:, 0, 2], data["ret"], data["dates"])


def test_market_statistics_measure_the_vix_as_issue_15(market):
    assert market["n_days"] > 1200
    assert {k: market[k]["vix"] for k in MARKET_STATS} == pytest.approx(VIX_TABLE, abs=0.006)
    assert market_band("level_r2", 0.72) == pytest.approx((0.67, 0.77))           # +-0.05
    assert market_band("level_resid_sd", 0.134) == pytest.approx((0.1139, 0.1541))  # +-15%
    assert market_band("change_corr", -0.82) == pytest.approx((-0.87, -0.77))


@pytest.mark.parametrize("key", list(MARKET_STATS))
def test_market_statistic_inside_its_band(market, key):
    # before issue 15 (returns-only surfaces): level R^2 0.88, residual sd 0.107, AR(1) 0.89, corr -0.70
    m = market[key]
    assert m["inside"] and m["lo"] <= m["data"] <= m["hi"], f"{key}: {m}"


def test_term_structure_inverts_in_stress(data):
    s, d = data["surface"], data["dates"]
    spread = s[:, 0, 2] - s[:, 3, 2]                     # 1-month minus 1-year ATM vol
    rv = ewma_vol(data["ret"], 21)
    stressed, calm = rv >= np.quantile(rv, 0.99), rv <= np.quantile(rv, 0.5)
    assert np.mean(spread[stressed] > 0) >= 0.95         # measured: 1.00
    assert np.mean(spread[calm] > 0) <= 0.1              # measured: 0.06 (returns-only data: 0.12)
    for day in ("2008-10-10", "2008-11-20", "2011-08-08", "2015-08-24", "2018-02-05"):
        assert spread[d == day][0] > 0.05, day           # inverted by more than 5 vol points
    year_2017 = (d >= "2017-01-01") & (d <= "2017-12-31")
    assert spread[year_2017].mean() < -0.02              # calm: upward sloping by 2+ vol points


def test_factors_have_their_stated_laws():
    # each factor is an AR(1) with its own shocks: sd, persistence, mean and (VRP) correlation with the returns
    from backfill import embedded_data as cal
    ret = 0.01 * np.random.default_rng(0).standard_normal(200_000)    # 1% daily vol: h = 1 (%^2)
    x, s, k = cal._factors(ret, np.ones_like(ret), 1.0, 0.0)
    for f, mean, sd, phi in ((x, 0.0, cal.VRP_SD, cal.VRP_PHI), (s, cal.SLOPE_MEAN, cal.SLOPE_SD, cal.SLOPE_PHI),
                             (k, 0.0, cal.SKEW_SD, cal.SKEW_PHI)):
        assert f.mean() == pytest.approx(mean, abs=0.15 * sd) and f.std() == pytest.approx(sd, rel=0.1)
        assert np.corrcoef(f[:-1], f[1:])[0, 1] == pytest.approx(phi, abs=0.01)
    shock = x[1:] - cal.VRP_PHI * x[:-1]
    assert np.corrcoef(shock, -ret[1:])[0, 1] == pytest.approx(cal.VRP_RET_CORR, abs=0.01)   # sell-offs raise it
    assert abs(np.corrcoef(s, ret)[0, 1]) < 0.01 and abs(np.corrcoef(k, ret)[0, 1]) < 0.01  # their own shocks
    # loadings: the slope factor leaves 1 month alone and moves 1 year by exp(s); the VRP factor has mean one
    h, T = np.ones(5), np.array([1 / 12, 1.0])
    flat = cal._market_variance(h, 1.0, T, np.zeros(5), np.zeros(5))
    tilted = cal._market_variance(h, 1.0, T, np.zeros(5), np.full(5, 0.3))
    assert np.array_equal(tilted[:, 0], flat[:, 0]) and tilted[:, 1] == pytest.approx(flat[:, 1] * np.exp(0.3))
    load = np.minimum(1.0, (np.array([1 / 12, 1.0]) * 12) ** -cal.VRP_TERM_POWER)
    factor = np.exp(load * x[:, None] - (load * cal.VRP_SD) ** 2 / 2)
    assert factor.mean(0) == pytest.approx([1.0, 1.0], abs=0.01)


def test_one_garch_fit_for_the_data_and_the_report(data):
    # notebook 01's GARCH half-life is the generator's own fit and persistence
    from backfill import report
    gh = report.garch_half_life(data["ret"])
    assert gh["persistence"] == data["components"]["garch_persistence"]
    assert gh["half_life_days"] == pytest.approx(np.log(0.5) / np.log(gh["persistence"]))


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


def test_deterministic_whatever_the_blas_threads(data):
    code = ("import hashlib; from backfill.embedded_data import make_default_arrays; "
            "print(hashlib.sha256(make_default_arrays()['surface'].tobytes()).hexdigest())")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(data["surface"].tobytes()).hexdigest()


def test_ssvi_parameters_inside_bounds(data):
    c = data["components"]
    assert c["ssvi_eta"] * (1 + abs(c["rho_min"])) <= 2 and 0 < c["ssvi_gamma"] <= 0.5
    assert -1 < c["rho_min"] <= c["rho0"] <= c["rho_max"] < 0
    assert 0.9 < c["garch_persistence"] < 1 and c["vrp_variance_factor"] > 1
    assert 0 < c["long_run_weight"] < 1 and 0 < c["vrp_ret_corr"] < 1
    assert all(0 < c[k] < 1 for k in ("vrp_phi", "slope_phi", "skew_phi"))


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
