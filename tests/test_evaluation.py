"""Evaluation (SPEC sections 8-9): the econometric and random-walk baselines, the metrics every method is
scored with (RMSE by pass / grid / day, CI violation, coverage, co-integration, Newey-West, Diebold-Mariano)
and the evaluation helpers (rolling summary, grading, DM tables). Small synthetic data, fixed seeds."""
import math

import numpy as np
import pytest

from backfill import baselines, evaluate, metrics
from backfill.data import Dataset
from backfill.generate import Backfill

MAT = np.array([0.5, 1.0])
MON = np.array([0.9, 1.0, 1.1])
GRID = (2, 3)


def _phi(x):
    """Standard normal CDF, by hand (not scipy) so the p-value check is independent of the code."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_ewma_realized_vol_hand_case():
    # constant returns: s2 stays r^2, RV = sqrt(252) |r|; then zero returns: s2 decays by lam per day
    r = np.r_[np.full(20, 0.01), np.zeros(3)]
    rv = metrics.ewma_realized_vol(r)
    np.testing.assert_allclose(rv[:20], math.sqrt(252) * 0.01)
    np.testing.assert_allclose(rv[20:], np.sqrt(252 * 1e-4 * 0.94 ** np.arange(1, 4)))
    # the start: mean square of the first `warmup` days, then one update with r_0
    r2 = np.r_[0.02, np.zeros(19)]
    s2_0 = 0.94 * (0.02**2 / 20) + 0.06 * 0.02**2
    assert metrics.ewma_realized_vol(r2)[0] == pytest.approx(math.sqrt(252 * s2_0))


# --- econometric baseline ----------------------------------------------------------------------

N_SIM = 3000
A_TRUE = np.array([0.05, 0.08, 0.10, 0.04, 0.06, 0.12])
B_TRUE = np.array([0.9, 0.7, 0.5, 1.0, 0.8, 0.6])
C_TRUE = np.array([-1.5, -1.0, -0.5, -2.0, -1.2, -0.8])
PHI_TRUE = np.array([0.6, 0.66, 0.72, 0.78, 0.84, 0.9])
SIG_U = 0.005


@pytest.fixture(scope="module")
def econ_data():
    """IV simulated from the baseline's own model: IV = a + b RV + c r + u, u AR(1) per grid point with
    innovations correlated across the grid (equicorrelation 0.5)."""
    rng = np.random.default_rng(20240)
    nu = 5
    r = 0.01 * rng.standard_t(nu, N_SIM) / np.sqrt(nu / (nu - 2))
    rv = metrics.ewma_realized_vol(r)
    G = A_TRUE.size
    corr = 0.5 * np.ones((G, G)) + 0.5 * np.eye(G)
    eps = SIG_U * rng.standard_normal((N_SIM, G)) @ np.linalg.cholesky(corr).T
    u = np.zeros((N_SIM, G))
    u[0] = eps[0] / np.sqrt(1 - PHI_TRUE**2)
    for t in range(1, N_SIM):
        u[t] = PHI_TRUE * u[t - 1] + eps[t]
    iv = A_TRUE + B_TRUE * rv[:, None] + C_TRUE * r[:, None] + u
    ds = Dataset(surface=iv.reshape(N_SIM, *GRID), ret=r, dates=None, maturities=MAT, moneyness=MON)
    return ds, rv, u


def test_econometric_recovers_simulated_coefficients(econ_data):
    ds, _, u = econ_data
    model = baselines.fit_econometric(ds.surface, ds.ret, (0, N_SIM))
    assert model.coef.shape == (3, 6)
    assert model.phi.shape == (6,)
    assert model.innov.shape == (N_SIM - 1, 6)
    np.testing.assert_allclose(model.coef[0], A_TRUE, atol=0.02)
    np.testing.assert_allclose(model.coef[1], B_TRUE, atol=0.1)
    np.testing.assert_allclose(model.coef[2], C_TRUE, atol=0.1)
    # phi: within sampling error of the truth (SE ~ sqrt((1 - phi^2) / N) <= 0.015), and close to the
    # infeasible estimate from the true residuals (what OLS residuals should reproduce)
    np.testing.assert_allclose(model.phi, PHI_TRUE, atol=0.05)
    phi_u = (u[1:] * u[:-1]).sum(0) / (u[:-1] ** 2).sum(0)
    np.testing.assert_allclose(model.phi, phi_u, atol=0.01)
    # the innovations are the AR(1) residuals: their scale and cross-grid correlation come back
    np.testing.assert_allclose(model.innov.std(0), SIG_U, rtol=0.1)
    c = np.corrcoef(model.innov.T)[np.triu_indices(6, 1)]
    np.testing.assert_allclose(c, 0.5, atol=0.08)


def test_econometric_backfill_quantiles_and_ar_decay(econ_data):
    ds0, rv, _ = econ_data
    model = baselines.fit_econometric(ds0.surface, ds0.ret, (0, 2500))
    start, days = 2700, 40
    # a large last-context residual: +5 vol points on every grid point on day start-1
    surface = ds0.surface.copy()
    surface[start - 1] += 0.05
    ds = Dataset(surface=surface, ret=ds0.ret, dates=None, maturities=MAT, moneyness=MON)
    bf = baselines.econometric_backfill(model, ds, start, days, n_paths=200, seed=7, segment_len=15, name="w")
    assert isinstance(bf, Backfill)
    assert bf.name == "w" and bf.start == start and bf.days == days and bf.n_samples == 200
    assert bf.p05.shape == bf.p50.shape == bf.p95.shape == (days, *GRID)
    assert np.all(bf.p05 <= bf.p50) and np.all(bf.p50 <= bf.p95)
    assert np.all(bf.p95 - bf.p05 > 0)
    np.testing.assert_array_equal(bf.truth, surface[start:start + days])
    np.testing.assert_array_equal(bf.segment, np.arange(days) // 15)
    assert bf.passes == 3
    np.testing.assert_array_equal(bf.dates, np.arange(start, start + days).astype(str))

    # deterministic formula: a + b RV + c r + phi^k u0, with u0 the residual of day start-1
    X = np.column_stack([np.ones(days + 1), rv[start - 1:start + days], ds.ret[start - 1:start + days]])
    mean = X @ model.coef                                             # (1+days, G)
    u0 = surface[start - 1].reshape(-1) - mean[0]
    assert np.all(u0 > 0.03)                                          # the shock is really there
    k = np.arange(1, days + 1)[:, None]
    formula = mean[1:] + model.phi**k * u0
    p50 = bf.p50.reshape(days, -1)
    first = slice(0, 5)
    np.testing.assert_allclose(p50[first], formula[first], atol=0.003)
    # pulled towards the residual: well above the unconditional mean on day 1 ...
    assert np.all(p50[0] - mean[1] > 0.5 * model.phi * u0)
    # ... and decaying: after 40 days the pull is much smaller (phi^40 <= 0.015)
    assert np.all(np.abs((p50[-1] - mean[-1])) < 0.5 * np.abs(p50[0] - mean[1]))
    # the interval widens with the horizon as innovations accumulate
    w = (bf.p95 - bf.p05).reshape(days, -1)
    assert np.all(w[-1] > w[0])
    # ... and is a 90% interval: width ~ 2 * 1.645 * sd of the accumulated AR(1) innovations,
    # sd_k^2 = s^2 (1 - phi^(2k)) / (1 - phi^2) (innovations near-normal); averaged over days and grid
    s2 = model.innov.var(0)
    sd = np.sqrt(s2 * (1 - model.phi ** (2 * k)) / (1 - model.phi**2))
    ratio = np.mean(w / (2 * 1.6449 * sd))
    assert 0.9 < ratio < 1.1


def test_econometric_backfill_reproducible_with_seed(econ_data):
    ds, _, _ = econ_data
    model = baselines.fit_econometric(ds.surface, ds.ret, (0, 2000))
    a = baselines.econometric_backfill(model, ds, 2500, 10, n_paths=50, seed=3)
    b = baselines.econometric_backfill(model, ds, 2500, 10, n_paths=50, seed=3)
    c = baselines.econometric_backfill(model, ds, 2500, 10, n_paths=50, seed=4)
    np.testing.assert_array_equal(a.p05, b.p05)
    assert not np.array_equal(a.p05, c.p05)
    assert a.name == "econometric"


# --- random-walk baseline ----------------------------------------------------------------------

def _trend_dataset(n=60):
    """Vols growing at a constant daily log rate per grid point: every k-day log change is k * slope."""
    t = np.arange(n, dtype=float)
    slopes = np.array([[1, 2, 3], [-1, 0.5, 4]]) * 1e-3
    surface = 0.2 * np.exp(t[:, None, None] * slopes)
    return Dataset(surface=surface, ret=np.zeros(n), dates=None, maturities=MAT, moneyness=MON), slopes


def test_random_walk_quantiles_on_exponential_trend():
    ds, slopes = _trend_dataset()
    ch = baselines.fit_random_walk(ds.surface, (0, 40), max_k=5)
    assert ch.shape == (5, 2, 6)
    for k in range(1, 6):
        np.testing.assert_allclose(ch[k - 1, 0], k * slopes.reshape(-1), atol=1e-12)
        np.testing.assert_allclose(ch[k - 1, 1], k * slopes.reshape(-1), atol=1e-12)


def test_random_walk_quantiles_on_alternating_series():
    # log x alternates 0, 1, 0, 1, ...: 1-day log changes are +-1 (half each), 2-day changes are all 0,
    # 3-day changes +-1 again: the 5th / 95th percentiles are -1 / +1, 0 / 0, -1 / +1.
    x = np.exp((np.arange(41) % 2).astype(float))
    surface = np.broadcast_to(x[:, None, None], (41, *GRID))
    ch = baselines.fit_random_walk(surface, (0, 41), max_k=3)
    np.testing.assert_allclose(ch[0, 0], -1)
    np.testing.assert_allclose(ch[0, 1], 1)
    np.testing.assert_allclose(ch[1], 0, atol=1e-15)
    np.testing.assert_allclose(ch[2, 0], -1)
    np.testing.assert_allclose(ch[2, 1], 1)
    # the span is honoured: on days 0..1 only (one 1-day change, +1) both percentiles are +1
    np.testing.assert_allclose(baselines.fit_random_walk(surface, (0, 2), max_k=1)[0], 1)


def test_random_walk_short_split_extrapolates_by_the_square_root_of_the_lead():
    # 30 days, at least 20 pairs per k: k = 1..10 estimated, then k = 11..15 from k0 = 10 widened by sqrt(k / 10)
    rng = np.random.default_rng(2)
    surface = 0.2 * np.exp(np.cumsum(0.05 * rng.standard_normal((30, *GRID)), 0))
    ch = baselines.fit_random_walk(surface, (0, 30), max_k=15)
    x = np.log(surface.reshape(30, -1))
    np.testing.assert_allclose(ch[9], np.percentile(x[10:] - x[:-10], [5, 95], axis=0))
    for k in range(11, 16):
        np.testing.assert_allclose(ch[k - 1], ch[9] * np.sqrt(k / 10))
    with pytest.raises(ValueError, match="no day-to-day change"):
        baselines.fit_random_walk(surface, (0, 1), max_k=3)


def test_random_walk_backfill_is_last_context_surface():
    ds, slopes = _trend_dataset()
    ch = baselines.fit_random_walk(ds.surface, (0, 40), max_k=10)
    start, days = 45, 10
    bf = baselines.random_walk_backfill(ch, ds, start, days, segment_len=4)
    assert bf.name == "random_walk" and bf.n_samples == 0
    assert bf.p50.shape == (days, *GRID)
    for d in range(days):
        np.testing.assert_array_equal(bf.p50[d], ds.surface[start - 1])
    # interval: last surface * exp(k * slope) (both ends equal on an exponential trend), never below zero
    k = np.arange(1, days + 1)[:, None, None]
    np.testing.assert_allclose(bf.p05, ds.surface[start - 1] * np.exp(k * slopes), rtol=1e-12)
    np.testing.assert_allclose(bf.p95, ds.surface[start - 1] * np.exp(k * slopes), rtol=1e-12)
    # on the trend the interval end is exactly the truth
    np.testing.assert_allclose(bf.p95, bf.truth, rtol=1e-12)
    np.testing.assert_array_equal(bf.segment, np.arange(days) // 4)
    assert bf.passes == 3


def test_random_walk_backfill_truncates_at_end_of_data():
    ds, _ = _trend_dataset(60)
    ch = baselines.fit_random_walk(ds.surface, (0, 40), max_k=10)
    bf = baselines.random_walk_backfill(ch, ds, 55, 10)
    assert bf.days == 5 and bf.p50.shape == (5, *GRID) and bf.truth.shape == (5, *GRID)


def test_random_walk_backfill_rejects_too_short_changes():
    ds, _ = _trend_dataset()
    ch = baselines.fit_random_walk(ds.surface, (0, 40), max_k=5)
    with pytest.raises(ValueError, match="5 days"):
        baselines.random_walk_backfill(ch, ds, 45, 6)
    baselines.random_walk_backfill(ch, ds, 45, 5)          # exactly enough is fine


# --- co-integration ----------------------------------------------------------------------------

def test_cointegration_share_detects_cointegrated_pairs():
    rng = np.random.default_rng(11)
    T, G = 500, 6
    x = np.cumsum(rng.standard_normal(T))
    noise = np.zeros((T, G))
    e = rng.standard_normal((T, G))
    for t in range(1, T):                                   # stationary AR(1) noise, phi 0.5
        noise[t] = 0.5 * noise[t - 1] + e[t]
    y = 2 + 0.5 * x[:, None] + noise
    assert metrics.cointegration_share(y.reshape(T, 2, 3), x) >= 0.9


def test_cointegration_share_rejects_independent_random_walks():
    rng = np.random.default_rng(12)
    T, G = 500, 10
    x = np.cumsum(rng.standard_normal(T))
    y = np.cumsum(rng.standard_normal((T, G)), axis=0)
    assert metrics.cointegration_share(y.reshape(T, 2, 5), x) <= 0.2


def test_cointegration_share_constant_point_counts_as_not_cointegrated():
    rng = np.random.default_rng(13)
    T = 300
    x = np.cumsum(rng.standard_normal(T))
    y = np.stack([2 + 0.5 * x + rng.standard_normal(T), np.full(T, 0.2)], axis=1)
    assert metrics.cointegration_share(y, x) == pytest.approx(0.5)


# --- RMSE by pass, CI violation, coverage: score_backfill ---------------------------------------

def _hand_case():
    """6 days on a 2x3 grid, flat truth 0.2; pass 0 (days 0-2) errors +-0.01, pass 1 (days 3-5) +-0.03,
    constant across the grid each day so every surface stays flat (arbitrage-free)."""
    truth = np.full((6, *GRID), 0.2)
    err = np.array([0.01, -0.01, 0.01, 0.03, -0.03, 0.03])
    p50 = truth + err[:, None, None]
    p05 = p50 - 0.02
    p95 = p50 + 0.02
    segment = np.array([0, 0, 0, 1, 1, 1])
    return p05, p50, p95, truth, segment


def test_rmse_by_segment_hand_case():
    p05, p50, p95, truth, seg = _hand_case()
    by = metrics.rmse_by_segment(p50, truth, seg)
    assert set(by) == {0, 1}
    assert by[0] == pytest.approx(0.01)
    assert by[1] == pytest.approx(0.03)
    # labels need not be contiguous or start at 0
    by2 = metrics.rmse_by_segment(p50, truth, np.array([5, 2, 5, 2, 5, 2]))
    assert by2[5] == pytest.approx(math.sqrt((0.01**2 + 0.01**2 + 0.03**2) / 3))
    assert by2[2] == pytest.approx(math.sqrt((0.01**2 + 0.03**2 + 0.03**2) / 3))


def test_score_backfill_hand_case():
    p05, p50, p95, truth, seg = _hand_case()
    # every day the interval is p50 +- 0.02: days with |err| = 0.01 cover the truth, days with
    # |err| = 0.03 miss it -> 3 of 6 days, 18 of 36 points outside.
    # Make the count less symmetric: on day 0 narrow the interval at two points so they miss too.
    p05 = p05.copy()
    p95 = p95.copy()
    p05[0, 0, 0] = p50[0, 0, 0] - 0.001          # err +0.01: truth = p50 - 0.01 < p05 -> miss
    p95[0, 1, 2] = p50[0, 1, 2] + 0.001          # truth below p50 -> still inside (p05 unchanged)
    rv = 0.15 + 0.01 * np.arange(6)
    s = metrics.score_backfill(p05, p50, p95, truth, seg, rv, MAT, MON)
    assert s["days"] == 6
    assert s["rmse_by_pass"] == pytest.approx([0.01, 0.03])
    assert s["pass_ratio"] == pytest.approx(3.0)
    assert s["rmse"] == pytest.approx(math.sqrt((3 * 0.01**2 + 3 * 0.03**2) / 6))
    assert s["ci_violation"] == pytest.approx(19 / 36)
    # coverage: truth <= p05 on days with err +0.03 (days 3, 5) plus the narrowed point -> 13/36;
    # truth <= p50 on days with err > 0 (days 0, 2, 3, 5) -> 24/36;
    # truth <= p95 everywhere except day 4 (err -0.03, truth above p95) -> 30/36
    assert s["coverage"]["p05"] == pytest.approx(13 / 36)
    assert s["coverage"]["p50"] == pytest.approx(24 / 36)
    assert s["coverage"]["p95"] == pytest.approx(30 / 36)
    assert s["arbitrage_share"] == 0.0
    assert 0.0 <= s["cointegration_share"] <= 1.0


def test_score_backfill_trims_to_known_truth_and_handles_zero_first_pass():
    p05, p50, p95, truth, seg = _hand_case()
    p50z = p50.copy()
    p50z[:3] = truth[:3]                                     # perfect first pass
    # forecasts run 2 days past the known truth: only the first 4 days are scored
    ext = lambda a: np.concatenate([a, a[-2:]])              # noqa: E731
    s = metrics.score_backfill(ext(p05), ext(p50z), ext(p95), truth[:4], np.r_[seg, 1, 1],
                               np.full(8, 0.15), MAT, MON)
    assert s["days"] == 4
    assert s["rmse_by_pass"] == pytest.approx([0.0, 0.03])
    assert s["pass_ratio"] is None


def test_arbitrage_share_in_score_counts_bad_surfaces():
    p05, p50, p95, truth, seg = _hand_case()
    bad = p50.copy()
    bad[1, 1, :] = 0.10                                     # 1y total variance 0.01 < 6m 0.5*0.19^2: calendar
    s = metrics.score_backfill(p05, bad, p95, truth, seg, np.full(6, 0.15), MAT, MON)
    assert s["arbitrage_share"] == pytest.approx(1 / 6)


def test_coverage_and_ci_violation_boundaries():
    q = np.array([1.0, 2.0, 3.0, 4.0])
    truth = np.array([1.0, 2.5, 2.0, 5.0])
    assert metrics.coverage(q, truth) == pytest.approx(0.5)            # ties count as covered
    # interval [q-1, q]: truth on an end is inside; 2.5 > 2 and 5 > 4 are outside
    assert metrics.ci_violation(q - 1, q, truth) == pytest.approx(0.5)
    assert metrics.ci_violation(q - 1, q, np.array([-0.5, 1.0, 2.0, 3.0])) == pytest.approx(0.25)


# --- RMSE by grid / by day, CI width -----------------------------------------------------------

def test_rmse_by_grid_day_and_ci_width():
    truth = np.zeros((2, 2, 3))
    pred = np.zeros((2, 2, 3))
    pred[0] = [[1, 2, 3], [4, 5, 6]]
    pred[1] = [[1, 0, 3], [0, 5, 0]]
    g = metrics.rmse_by_grid(pred, truth)
    assert g.shape == GRID
    np.testing.assert_allclose(g, [[1, math.sqrt(2), 3], [math.sqrt(8), 5, math.sqrt(18)]])
    d = metrics.rmse_by_day(pred, truth)
    assert d.shape == (2,)
    np.testing.assert_allclose(d, [math.sqrt(91 / 6), math.sqrt(35 / 6)])
    lo = np.zeros((3, 2, 3))
    hi = np.ones((3, 2, 3)) * np.array([1.0, 2.0, 3.0])[:, None, None]
    hi[2, 0, 0] = 9.0
    w = metrics.ci_width_by_day(lo, hi)
    np.testing.assert_allclose(w, [1.0, 2.0, (5 * 3 + 9) / 6])


# --- evaluate: rolling summary, grading, DM tables ---------------------------------------------

def _scores(rmse, ci, by_pass, ratio):
    return {"rmse": rmse, "ci_violation": ci, "cointegration_share": 0.5, "arbitrage_share": 0.0,
            "pass_ratio": ratio, "rmse_by_pass": by_pass}


def test_rolling_summary_averages_only_rolling_windows():
    scores = {
        "rolling_000": {"vae_o90": _scores(0.01, 0.10, [0.01, 0.02, 0.03], 3.0),
                        "truth": {"cointegration_share": 0.8, "arbitrage_share": 0.0}},
        "rolling_021": {"vae_o90": _scores(0.03, 0.20, [0.02, 0.04], None),
                        "truth": {"cointegration_share": 0.6, "arbitrage_share": 0.1}},
        "crisis": {"vae_o90": _scores(1.0, 1.0, [1.0, 1.0, 1.0], 9.0),
                   "truth": {"cointegration_share": 0.0, "arbitrage_share": 1.0}},
    }
    out = evaluate.rolling_summary(scores)
    assert set(out) == {"vae_o90", "truth"}
    v = out["vae_o90"]
    assert v["rmse"] == pytest.approx(0.02)
    assert v["ci_violation"] == pytest.approx(0.15)
    assert v["pass_ratio"] == pytest.approx(3.0)          # the None is skipped
    assert v["rmse_by_pass"] == pytest.approx([0.015, 0.03])         # truncated to the shortest
    assert v["windows"] == 2
    assert out["truth"] == {"cointegration_share": pytest.approx(0.7), "arbitrage_share": pytest.approx(0.05),
                            "windows": 2}
    assert evaluate.rolling_summary({"crisis": scores["crisis"]}) == {}


@pytest.mark.parametrize("value, expected", [
    (0.10, "stretch"), (0.12, "target"), (0.13, "target"), (0.15, "between"),
    (0.16, "between"), (0.18, "between"), (0.19, "red flag"), (None, "n/a"), (float("nan"), "n/a")])
def test_grade_lower_is_better(value, expected):
    assert evaluate._grade(value, ["<", 0.15, 0.12, 0.18]) == expected


@pytest.mark.parametrize("value, expected", [
    (0.80, "stretch"), (0.70, "target"), (0.60, "target"), (0.55, "between"),
    (0.50, "between"), (0.45, "between"), (0.40, "red flag"), (None, "n/a")])
def test_grade_higher_is_better(value, expected):
    assert evaluate._grade(value, [">", 0.55, 0.70, 0.45]) == expected


def _bf(name, start, p50, truth):
    days = len(p50)
    z = np.zeros_like(p50)
    return Backfill(name=name, start=start, days=days, horizon=90, offset=90, passes=1, n_samples=1,
                    dates=np.arange(start, start + days).astype(str), p05=p50 - 0.01, p50=p50, p95=p50 + 0.01,
                    spread05=z, spread95=z, sample_p50=np.zeros((0, *GRID)), truth=truth,
                    segment=np.zeros(days, int))


def test_dm_tests_named_windows_and_per_calendar_day_over_rolling_origins():
    from statsmodels.tsa.stattools import diebold_mariano_test
    rng = np.random.default_rng(9)
    bfs = {}
    sizes = {"crisis": (0, 30), "rolling_100": (100, 20), "rolling_110": (110, 25)}     # the rolling ones overlap
    errs = {}
    for name, (start, days) in sizes.items():
        truth = 0.2 + 0.01 * rng.standard_normal((days, *GRID))
        e_vae = rng.normal(0, 0.005, truth.shape)
        e_eco = rng.normal(0, 0.02, truth.shape)
        e_rw = rng.normal(0, 0.03, truth.shape)
        errs[name] = (e_vae, e_eco, e_rw)
        bfs[name] = {"vae_o90": _bf(name, start, truth + e_vae, truth),
                     "econometric": _bf(name, start, truth + e_eco, truth),
                     "random_walk": _bf(name, start, truth + e_rw, truth)}
        bfs[name]["vae_o90_cal"] = bfs[name]["vae_o90"]
    out = evaluate.dm_tests(bfs, "vae_o90")
    assert set(out) == {"crisis", "rolling_by_day"}
    assert set(out["crisis"]) == {"vae_o90 vs econometric", "vae_o90 vs random_walk"}     # no calibrated row
    c = out["crisis"]["vae_o90 vs econometric"]
    assert c["days"] == 30 and c["dm"] < 0 and c["p_value"] < 0.01
    # within a window: HLN horizon H (capped at half the window, 15 of 30 days), bandwidth H - 1
    sq = lambda e: (e ** 2).reshape(len(e), -1).mean(1)                                  # noqa: E731
    want = diebold_mariano_test(np.zeros(30), sq(errs["crisis"][0]), sq(errs["crisis"][1]), criterion=lambda y, f: f,
                                lags=14, horizon=15, harvey_adj=True)
    assert c["dm"] == pytest.approx(want.statistic) and c["p_value"] == pytest.approx(want.pvalue)
    # the rolling origins: days 100..119 and 110..134 -> 35 calendar days, each counted once (not 45)
    by_day = out["rolling_by_day"]["vae_o90 vs random_walk"]
    assert by_day["days"] == 35
    loss = {}
    for k in (0, 2):
        acc = {}
        for w in ("rolling_100", "rolling_110"):
            for d, v in zip(range(sizes[w][0], sizes[w][0] + sizes[w][1]), sq(errs[w][k])):
                acc.setdefault(d, []).append(v)
        loss[k] = np.array([np.mean(acc[d]) for d in sorted(acc)])
    h = 90 if 90 < 35 // 2 else 35 // 2                                                  # H capped at half the days
    want = diebold_mariano_test(np.zeros(35), loss[0], loss[2], criterion=lambda y, f: f, lags=h - 1, horizon=h,
                                harvey_adj=True)
    assert by_day["dm"] == pytest.approx(want.statistic) and by_day["p_value"] == pytest.approx(want.pvalue)
    assert by_day["mean_loss_diff"] == pytest.approx(np.mean(loss[0] - loss[2]))


def test_dm_tests_scores_only_known_truth():
    # forecasts longer than the known truth (end of data): errors use the first len(truth) days only
    rng = np.random.default_rng(10)
    truth = 0.2 + 0.01 * rng.standard_normal((12, *GRID))
    pv = np.concatenate([truth + 0.001, np.full((5, *GRID), 9.0)])
    pe = np.concatenate([truth + 0.01 * rng.standard_normal(truth.shape), np.full((5, *GRID), -9.0)])
    out = evaluate.dm_tests({"normal": {"vae_o90": _bf("normal", 0, pv, truth),
                                        "econometric": _bf("normal", 0, pe, truth)}}, "vae_o90")
    r = out["normal"]["vae_o90 vs econometric"]
    assert r["days"] == 12
    assert "rolling_by_day" not in out
    d = ((pv[:12] - truth) ** 2).reshape(12, -1).mean(1) - ((pe[:12] - truth) ** 2).reshape(12, -1).mean(1)
    assert r["dm"] == pytest.approx(metrics.dm_test(d, horizon=6, lags=5)["dm"])


def test_tables_6_2_6_3_and_deployment_on_hand_made_scores():
    from backfill import params as _params
    p = _params.load(_params.profile_path("test"))

    def s(rmse, p1, p3, ci, co, arb=0.0):
        return {"rmse": rmse, "rmse_by_pass": [p1, p3], "ci_violation": ci, "ci_violation_sampling_spread": None,
                "cointegration_share": co, "arbitrage_share": arb, "pass_ratio": p3 / p1}
    truth = {"cointegration_share": 0.9, "arbitrage_share": 0.0}
    scores = {
        "crisis": {"vae": s(0.2, 0.1, 0.3, 0.5, 0.60), "econometric": s(0.1, 0.1, 0.1, 0.6, 1.0), "truth": truth},
        "normal": {"vae": s(0.1, 0.1, 0.1, 0.3, 0.96), "econometric": s(0.1, 0.1, 0.1, 0.6, 1.0), "truth": truth},
        "rolling_1": {"vae": s(0.10, 0.08, 0.12, 0.30, 0.9), "econometric": s(0.12, 0.1, 0.14, 0.6, 1.0), "truth": truth},
        "rolling_2": {"vae": s(0.12, 0.10, 0.14, 0.34, 0.9), "econometric": s(0.14, 0.1, 0.16, 0.7, 1.0), "truth": truth},
    }
    t62 = evaluate.table_6_2(scores, ["vae", "econometric"], p).set_index("metric")
    assert t62.loc["overall_rmse", "vae"] == "0.1100 stretch"                   # mean of rolling: < 0.12 stretch
    assert t62.loc["ci_violation", "vae"] == "0.3200 target"                   # 0.32 is not < 0.32: target only
    assert t62.loc["cointegration_crisis", "vae"] == "0.6000 target"
    assert t62.loc["cointegration_normal", "vae"] == "0.9600 stretch"
    assert t62.loc["ci_violation", "econometric"] == "0.6500 red flag"
    t63 = evaluate.table_6_3(scores, ["vae", "econometric"], {"vae": 3}).set_index("model")
    assert t63.loc["vae", "RMSE"] == pytest.approx(0.11) and t63.loc["vae", "passes"] == 3
    assert t63.loc["truth", "co-integration (crisis)"] == 0.9
    # a window in the training split is labelled in-sample wherever its score is shown
    split_of = {"crisis": "train (in-sample)", "normal": "test"}
    t63 = evaluate.table_6_3(scores, ["vae"], {}, split_of)
    assert "co-integration (crisis, in-sample)" in t63.columns and "co-integration (normal)" in t63.columns
    assert list(evaluate.table_6_2(scores, ["vae"], p, split_of)["metric"])[-2:] == [
        "cointegration_crisis (in-sample)", "cointegration_normal"]
    dep = evaluate.deployment_checks(scores, "vae", p)
    marks = {c["criterion"]: c["mark"] for c in dep["checks"]}
    assert marks["overall_rmse"] == "pass" and marks["ci_violation"] == "near"     # 0.32 within 10% of 0.35
    assert dep["checks"][-1]["value"] == pytest.approx(1 - 0.11 / 0.13)      # RMSE gain over econometric
    assert dep["decision"] in ("MARGINAL", "FAIL")


def test_verdicts_are_words_with_colours():
    import pandas as pd
    from backfill import report
    df = pd.DataFrame({"metric": ["a", "b", "c", "d"], "vae": ["0.1100 stretch", "0.3200 red flag", "n/a", "pass"],
                       "decision": ["PASS", "MARGINAL", "FAIL", "near"]})
    assert [report.verdict_of(v) for v in df["vae"]] == ["stretch", "red flag", None, "pass"]
    html = report.style_verdicts(df).to_html()
    assert "0.3200 red flag" in html and "MARGINAL" in html
    style = html.split("</style>")[0]
    for colour in ("#b5e0ba", "#f6c9c9", "#fbeec1", "#cdebd0"):      # stretch, red flag/FAIL, MARGINAL/near, pass
        assert colour in style
    assert "row2_col1" not in style and "col0" not in style         # n/a and the metric names stay plain
    assert not any(ch in html for ch in "\u2705\u274c\u2b50\u26a0")


def test_calibrate_adds_conformal_rows_fitted_on_validation_windows_only():
    import dataclasses
    rng = np.random.default_rng(3)
    flat = np.full((40, *GRID), 0.2)

    def window(name, start, scale):            # intervals of +-0.01 around a median that truth misses by N(0, s)
        return {"vae_o90": _bf(name, start, flat, flat + rng.normal(0, scale, flat.shape))}
    calib = {f"calib_{i}": window(f"calib_{i}", i, 0.02) for i in range(6)}
    test = {"rolling_0": window("rolling_0", 500, 0.02)}
    out, cals = evaluate.calibrate(calib, test, rv=np.linspace(0.1, 0.3, 600))
    raw, cal = out["rolling_0"]["vae_o90"], out["rolling_0"]["vae_o90_cal"]
    assert set(out["rolling_0"]) == {"vae_o90", "vae_o90_cal"} and set(cals) == {"vae_o90"}
    assert metrics.ci_violation(raw.p05, raw.p95, raw.truth) > 0.4           # too narrow
    assert abs(metrics.ci_violation(cal.p05, cal.p95, cal.truth) - 0.1) < 0.06
    assert cal.n_samples == 0 and cal.crps is None and (cal.p05 <= cal.p50).all() and (cal.p50 <= cal.p95).all()
    np.testing.assert_array_equal(cal.p50, raw.p50)                          # the median never moves
    assert cals["vae_o90"].rv_range == pytest.approx((0.1, float(np.linspace(0.1, 0.3, 600)[44])))   # days 0..44
    # calibrated RMSE is raw RMSE, and the calibrated row says how many of its days lie outside the calibration's RV
    run = _FakeRun(Dataset(np.full((600, *GRID), 0.2), np.full(600, 0.01), None, MAT, MON))
    sc = evaluate.score(run, out, cals)["rolling_0"]
    assert sc["vae_o90_cal"]["rmse"] == sc["vae_o90"]["rmse"]
    assert sc["vae_o90_cal"]["rv_outside_calibration"] is not None and "rv_outside_calibration" not in sc["vae_o90"]
    # a repaired method's calibrated tails are repaired again: stretching each point's own half-width can add
    # calendar arbitrage where the 3-month band is wider than the 1-year one
    mats, mons = np.array([0.25, 1.0]), np.array([0.9, 1.0, 1.1])
    smile = np.array([[0.22, 0.2, 0.21], [0.21, 0.2, 0.205]])
    base = np.broadcast_to(smile, (40, 2, 3)).copy()
    wide = base + np.array([0.1, 0.01])[None, :, None]                       # p95: 3-month half-width 0.1, 1-year 0.01

    def bf(name, start, truth):
        return dataclasses.replace(_bf(name, start, base, truth), p95=wide, arbitrage_raw=0.0)
    calib = {f"calib_{i}": {"vae_o90": bf(f"c{i}", i, base + 0.5)} for i in range(4)}   # truth far above: stretch
    test = {"rolling_0": {"vae_o90": bf("t", 500, base)}}
    shifted, _ = evaluate.calibrate(calib, test)
    assert metrics.arbitrage_share(shifted["rolling_0"]["vae_o90_cal"].p95, mats, mons)["any"] == 1.0
    fixed, _ = evaluate.calibrate(calib, test, (mats, mons))
    assert metrics.arbitrage_share(fixed["rolling_0"]["vae_o90_cal"].p95, mats, mons)["any"] == 0.0
    np.testing.assert_array_equal(fixed["rolling_0"]["vae_o90_cal"].p50, base)


class _FakeRun:
    """What evaluate.score reads of a run."""
    def __init__(self, ds):
        self.data = ds
