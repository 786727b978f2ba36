"""baselines: the plan's econometric model and the random walk, and the strong baselines with the VAE's
information (`har`, the VAE's own linear `backbone`) with their residual-path intervals, against hand-computed
cases and data simulated from each model, small and seeded; CPU only."""
import numpy as np
import pytest
import torch

from backfill import baselines, data, metrics
from backfill.data import Dataset
from backfill.generate import Backfill
from backfill.model import CVAE, ModelConfig

MAT = np.array([0.5, 1.0])
MON = np.array([0.9, 1.0, 1.1])
GRID = (2, 3)


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
    rv = data.ewma_vol(r, data.RISKMETRICS_HALFLIFE)
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



# --- the strong baselines -----------------------------------------------------------------------

def _returns(n, seed=0):
    rng = np.random.default_rng(seed)
    vol = 0.01 * np.exp(0.5 * np.sin(np.arange(n) / 150))                    # slow swings in volatility
    return vol * rng.standard_normal(n)


def test_har_features_hand_case():
    r = _returns(300)
    X = baselines.har_features(r, (5, 21))
    assert X.shape == (300, 4)
    np.testing.assert_allclose(X[:, 0], np.log(data.ewma_vol(r, 5)))
    np.testing.assert_allclose(X[:, 2], r)
    assert X[25, 3] == pytest.approx(r[6:26].sum())                            # the 20-day return, ending that day
    assert X[3, 3] == pytest.approx(r[:4].sum())


def test_har_recovers_its_own_model_and_anchors_the_residual():
    # log vol = a + B x + u, x the HAR inputs, u AR(1) with phi 0.9 per grid point
    n = 2500
    r = _returns(n, 1)
    X = baselines.har_features(r)
    Z = (X - X[:1500].mean(0)) / X[:1500].std(0)
    rng = np.random.default_rng(2)
    coef = np.vstack([np.log(np.linspace(0.15, 0.25, 6)), 0.05 * rng.standard_normal((X.shape[1], 6))])
    u = np.zeros((n, 6))
    for t in range(1, n):
        u[t] = 0.9 * u[t - 1] + 0.001 * rng.standard_normal(6)
    surface = np.exp(coef[0] + Z @ coef[1:] + u).reshape(n, *GRID)
    ds = Dataset(surface, r, None, MAT, MON)
    har = baselines.fit_har(ds, (0, 1500), (1500, 2000))
    assert har.ridge <= 1e-3                                                  # the true model needs no shrinkage
    np.testing.assert_allclose(har.coef, coef, atol=0.01)
    np.testing.assert_allclose(har.level(X[2000:]), coef[0] + Z[2000:] @ coef[1:], atol=0.005)   # out of sample
    np.testing.assert_allclose(har.phi, 0.9, atol=0.05)                       # OLS on residuals: biased low
    # the forecast from origin t: the level path plus phi^k times the last context day's residual
    t, L = 2100, 30
    f = har.log_forecast(ds, [t], L)[0]
    logy = np.log(surface.reshape(n, -1))
    u0 = logy[t - 1] - har.level(X[t - 1:t])[0]
    k = np.arange(1, L + 1)[:, None]
    np.testing.assert_allclose(f, har.level(X[t:t + L]) + har.phi ** k * u0, rtol=1e-12)
    assert abs(f[0] - logy[t]).mean() < 0.005                                # one day ahead: near the truth


def test_har_ridge_is_chosen_on_validation_to_stop_extrapolation():
    # training span with a spurious input: a calm span where the 1-year RV barely moves; validation punishes the
    # unpenalised fit of it, so a penalty > 0 wins
    n = 1200
    r = _returns(n, 3)
    X = baselines.har_features(r)
    rng = np.random.default_rng(4)
    logv = np.log(0.2) + 0.3 * (X[:, 1] - X[:, 1].mean()) + 0.02 * rng.standard_normal(n)
    surface = np.exp(np.repeat(logv[:, None], 6, 1)).reshape(n, *GRID)
    ds = Dataset(surface, r, None, MAT, MON)
    chosen = baselines.fit_har(ds, (300, 500), (500, 900))
    errs = {}
    for lam in baselines.HAR_RIDGE:
        h = baselines.fit_har(ds, (300, 500), (500, 900), penalties=(lam,))
        errs[lam] = metrics.rmse(np.exp(h.level(X[500:900])), surface[500:900].reshape(400, -1))
    assert chosen.ridge == min(errs, key=errs.get)
    assert chosen.ridge > 0 and errs[0.0] > 3 * errs[chosen.ridge]            # least squares extrapolates badly


def _model(rate=30.0):
    cfg = ModelConfig(2, 3, latent_dim=2, mem_hidden=8, mem_layers=1, mem_dropout=0.0,
                      surface_hidden=(4,), context_len=5, prior="conditional", target="change", known_future=True,
                      rv_halflives=(5, 21))
    torch.manual_seed(0)
    m = CVAE(cfg)
    with torch.no_grad():
        m.backbone.ecm_a.copy_(torch.full((6,), 0.05))
        m.backbone.ecm_b.copy_(torch.tensor([[1.0] * 6, [0.5] * 6]))
        m.backbone.ecm_rate.fill_(rate)
    return m.eval()


def test_backbone_is_the_models_linear_path_by_hand():
    n = 400
    r = _returns(n, 5)
    surface = np.full((n, *GRID), 0.2) * np.exp(0.01 * np.random.default_rng(6).standard_normal((n, *GRID)))
    ds = Dataset(surface, r, None, MAT, MON)
    feats = ds.features((5, 21))
    rv = np.exp(feats[:, data.RV:])                                           # RV in vol units, (n, 2)
    # rate 30: rho = 1 - sigmoid(30) ~ 1e-13, so after one day log x = log L_t = log(a + b . RV_t); no RV link
    bb = baselines.Backbone(_model(30.0))
    t, L = 200, 20
    f = bb.log_forecast(ds, [t], L)[0]
    want = np.log(0.05 + rv[t:t + L] @ np.array([1.0, 0.5]))[:, None] * np.ones(6)
    np.testing.assert_allclose(f, want, rtol=1e-5)
    # rate -30: rho ~ 1, the level never pulls; an RV link W adds c_std * W (z_t - z_anchor), z the standardised RV
    m = _model(-30.0)
    with torch.no_grad():
        m.backbone.rv_link.weight.copy_(torch.tensor([[0.1, -0.2]] * 6))
        m.scaler.c_std.fill_(0.5)
    f = baselines.Backbone(m).log_forecast(ds, [t], L)[0]
    z = (feats[:, data.RV:] - m.scaler.f_mean[data.RV:].numpy()) / m.scaler.f_std[data.RV:].numpy()
    want = np.log(surface[t - 1].reshape(-1)) + 0.5 * ((z[t:t + L] - z[t - 1]) @ np.array([0.1, -0.2]))[:, None]
    np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-6)
    assert baselines.has_backbone(m)


def test_error_bank_elasticity_and_linear_backfill():
    # a method whose log errors scale exactly with rv: gamma 1; errors that ignore rv: gamma 0
    n = 900
    r = _returns(n, 7)
    rv = data.ewma_vol(r, data.RISKMETRICS_HALFLIFE)
    rng = np.random.default_rng(8)

    class Fixed:                                           # forecasts the truth divided by exp(noise)
        def __init__(self, noise):
            self.noise = noise

        def log_forecast(self, ds, starts, L):
            logy = np.log(ds.surface.reshape(ds.n_days, -1))
            return np.stack([logy[t:t + L] - self.noise[t:t + L] for t in starts])
    for scale, gamma in ((rv[:, None], 1.0), (0.1, 0.0)):
        noise = scale * 0.05 * rng.standard_normal((n, 6))
        ds = Dataset(np.full((n, *GRID), 0.2), r, None, MAT, MON)
        bank = baselines.fit_error_bank(Fixed(noise), ds, (0, 600), 40, every=5)
        assert bank.length == 40 and bank.errors.shape[2] == 6
        assert bank.gamma == pytest.approx(gamma, abs=0.1)
    # the backfill: median = the method's point forecast exactly, a band around it from the bank
    bf = baselines.linear_backfill(Fixed(np.zeros((n, 6))), bank, ds, 700, 60, 200, seed=1, segment_len=20,
                                   label="har")
    assert bf.name == "har" and bf.n_samples == 200 and bf.days == 60
    np.testing.assert_allclose(bf.p50, 0.2)
    assert np.all(bf.p05 <= bf.p50) and np.all(bf.p95 >= bf.p50) and np.all(bf.p95 > bf.p05)
    assert bf.crps.shape == (60, *GRID) and np.all(bf.crps >= 0)
    # leads beyond the bank's 40 days reuse its last lead's errors: days 40..59 share one band
    np.testing.assert_allclose(bf.p95[45], bf.p95[55], rtol=0.2)
