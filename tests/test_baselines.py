"""The strong baselines with the VAE's information (`har`, the VAE's own linear `backbone`) and their
residual-path intervals, against hand-computed cases on small synthetic data; CPU only."""
import numpy as np
import pytest
import torch

from backfill import baselines, data, evaluate, metrics
from backfill.data import Dataset
from backfill.model import CVAE, ModelConfig

MAT = np.array([0.5, 1.0])
MON = np.array([0.9, 1.0, 1.1])
GRID = (2, 3)


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
    rv = metrics.ewma_realized_vol(r)
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


def test_calibration_starts_spread_evenly_and_stop_at_the_split_end():
    from backfill import generate, params
    p = params.load(params.profile_path("test"))
    p["model"]["context_len"] = 10
    p["generation"].update(calibration_every=10, max_calibration=4, calibration_lead_bins=[1, 6])
    ds = Dataset(np.full((400, *GRID), 0.2), np.zeros(400), None, MAT, MON)
    out = generate.calibration_starts(ds, p, (100, 200), 25)
    # candidates 100, 110, ..., 190 (the last one fills the first 5-day bin); 4 spread over all ten
    assert [s for s, _ in out.values()] == [100, 130, 160, 190]
    assert [k for _, k in out.values()] == [25, 25, 25, 10]                  # truth stops at the split's end
    assert list(out) == ["calib_100", "calib_130", "calib_160", "calib_190"]


def test_headline_window_is_the_hardest_named_test_year():
    from backfill import report
    rv = np.r_[np.full(100, 0.1), np.full(100, 0.3), np.full(200, 0.15)]
    starts = {"crisis": 100, "calm": 250, "hot": 120, "rolling_130": 130}
    # 'crisis' and 'hot' start before the test split (from 110): only 'calm' is out of sample
    assert report.headline_window(starts, (110, 400), rv, 50) == "hot"
    assert report.headline_window(starts, (200, 400), rv, 50) == "calm"
    with pytest.raises(ValueError, match="test split"):
        report.headline_window({"rolling_300": 300}, (200, 400), rv, 50)


def test_width_vs_rv_and_the_versus_sentence():
    from backfill.generate import Backfill
    n, days = 200, 40
    rv = np.r_[np.full(100, 0.1), np.full(100, 0.4)]
    bfs = {}
    for t in (40, 60, 80, 100, 120):
        truth = np.full((days, *GRID), 0.2)
        w = rv[t:t + days][:, None, None] * np.ones((days, *GRID))            # width proportional to rv
        e = 0.5 * w
        z = np.zeros_like(truth)
        bfs[f"rolling_{t}"] = {"m": Backfill("m", t, days, 20, 20, 2, 10, np.arange(days).astype(str), truth + e - w / 2,
                                             truth + e, truth + e + w / 2, z, z, np.zeros((0, *GRID)), truth,
                                             np.zeros(days, int))}
    wr = evaluate.width_vs_rv(bfs, ["m"], rv).iloc[0]
    assert wr["width ratio (top / bottom)"] == pytest.approx(4.0) and wr["abs error ratio (top / bottom)"] == pytest.approx(4.0)
    assert wr["days"] == 120
    rolling = {"vae": {"rmse": 0.010}, "har": {"rmse": 0.012}}
    dm = {"rolling_by_day": {"vae vs har": {"dm": -2.5, "p_value": 0.01, "days": 400}}}
    assert evaluate.versus(rolling, dm, "vae", "har").startswith("vae beats har: RMSE 0.0100 against 0.0120 (-16.7%)")
    dm["rolling_by_day"]["vae vs har"]["p_value"] = 0.2
    assert "does not beat" in evaluate.versus(rolling, dm, "vae", "har")
    assert "not scored" in evaluate.versus(rolling, dm, "vae", "backbone")
