"""Proper scores (pinball, interval score, ensemble CRPS), Diebold-Mariano with the Harvey-Leybourne-
Newbold correction, the model confidence set, and split-conformal calibration of quantile forecasts.
Hand-computed cases and small synthetic data with fixed seeds; CPU only."""
import json
import math
import tracemalloc

import numpy as np
import pytest

from backfill import conformal, metrics


def _t3_two_sided_p(x):
    """Two-sided p-value of Student t with 3 df, closed form (not scipy):
    P(|T| > x) = 1 - (2/pi) (theta + sin(theta) cos(theta)), theta = atan(x / sqrt(3))."""
    th = math.atan(abs(x) / math.sqrt(3.0))
    return 1.0 - (2.0 / math.pi) * (th + math.sin(th) * math.cos(th))


# --- pinball, interval score, CRPS ---------------------------------------------------------------

def test_pinball_loss_hand_case():
    # u = truth - q = [-1, 0, 2]
    q, y = np.ones(3), np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(metrics.pinball_loss(q, y, 0.1), [0.9, 0.0, 0.2])
    np.testing.assert_allclose(metrics.pinball_loss(q, y, 0.9), [0.1, 0.0, 1.8])
    np.testing.assert_allclose(metrics.pinball_loss(q, y, 0.5), 0.5 * np.abs(y - q))


def test_interval_score_hand_case():
    # [1, 3], alpha 0.1: width 2, plus 20 x the miss
    y = np.array([2.0, 1.0, 3.0, 0.0, 3.5])
    np.testing.assert_allclose(metrics.interval_score(1.0, 3.0, y), [2, 2, 2, 22, 12])
    np.testing.assert_allclose(metrics.interval_score(1.0, 3.0, 0.0, alpha=0.5), 2 + 4 * 1)


def _fair_brute(s, y):
    """The fair ensemble CRPS by its definition: E|X - y| - sum_{i != j} |x_i - x_j| / (2 N (N - 1))."""
    N = len(s)
    return np.abs(s - y).mean(0) - np.abs(s[:, None] - s[None]).sum((0, 1)) / (2 * N * (N - 1))


def test_crps_ensemble_fair_hand_case_and_single_member():
    # members {0, 2}, y = 1: E|X - y| = 1, pairs i != j: |0 - 2| + |2 - 0| = 4, / (2 * 2 * 1) = 1 -> 0
    # (the plain empirical CRPS would be 1 - 0.5 * 1 = 0.5: the fair one removes its bias for small N)
    assert metrics.crps_ensemble(np.array([0.0, 2.0]), np.array(1.0)) == pytest.approx(0.0, abs=1e-15)
    # ... y = 3: E|X - y| = 2 -> 1; member order does not matter
    assert metrics.crps_ensemble(np.array([2.0, 0.0]), np.array(3.0)) == pytest.approx(1.0)
    x, y = np.array([[0.3, -1.0, 2.0]]), np.array([1.0, 1.0, -0.5])
    np.testing.assert_allclose(metrics.crps_ensemble(x, y), np.abs(x[0] - y), atol=1e-15)


def test_crps_ensemble_equals_fair_brute_force_and_scoringrules_fair():
    import scoringrules as sr
    rng = np.random.default_rng(0)
    s = rng.normal(size=(37, 4, 3, 2))
    y = rng.normal(size=(4, 3, 2))
    got = metrics.crps_ensemble(s, y)
    assert got.shape == (4, 3, 2)
    np.testing.assert_allclose(got, _fair_brute(s, y), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got, sr.crps_ensemble(y, s, m_axis=0, estimator="fair"), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError):
        metrics.crps_ensemble(s, y[:3])


def test_crps_fair_estimator_does_not_favour_bigger_ensembles():
    # draws from the true distribution N(0, 1), y ~ N(0, 1): the expected CRPS is 1/sqrt(pi) whatever N; the plain
    # empirical estimator adds E|X - X'| / (2N) = 1 / (N sqrt(pi)) (+10% at N = 10), which would favour the method
    # with more members
    rng = np.random.default_rng(3)
    y = rng.standard_normal(20000)
    for n in (5, 10, 200):
        c = metrics.crps_ensemble(rng.standard_normal((n, y.size)), y)
        assert c.mean() == pytest.approx(1 / math.sqrt(math.pi), rel=0.02)


def test_crps_ensemble_memory_linear_in_members():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(1000, 252, 5, 5))
    y = rng.normal(size=(252, 5, 5))
    tracemalloc.start()
    try:
        c = metrics.crps_ensemble(s, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert c.shape == (252, 5, 5) and np.all(c > 0)
    # a few copies of the samples; all N^2 pairs would be 1000 x
    assert peak < 5 * s.nbytes
    x = s[:, 10, 2, 3]
    assert c[10, 2, 3] == pytest.approx(_fair_brute(x, y[10, 2, 3]), rel=1e-10)


def _hand_forecast():
    """p05 = 0, p50 = 1, p95 = 2 on a (3, 1, 2) grid; truth known for 2 days: [[1, 1]], [[3, -1]].
    The unknown third day carries garbage that must not be scored."""
    p05, p50, p95 = np.zeros((3, 1, 2)), np.ones((3, 1, 2)), np.full((3, 1, 2), 2.0)
    for a in (p05, p50, p95):
        a[2] = 1e6
    truth = np.array([[[1.0, 1.0]], [[3.0, -1.0]]])
    return p05, p50, p95, truth


def test_proper_scores_hand_case():
    p05, p50, p95, truth = _hand_forecast()
    r = metrics.proper_scores(p05, p50, p95, truth)
    # p05 (q = 0): u = [1, 1, 3, -1] -> [.05, .05, .15, .95], mean .3
    assert r["pinball_p05"] == pytest.approx(0.3)
    # p50 (q = 1): 0.5 |u| = [0, 0, 1, 1]
    assert r["pinball_p50"] == pytest.approx(0.5)
    # p95 (q = 2): u = [-1, -1, 1, -3] -> [.05, .05, .95, .15]
    assert r["pinball_p95"] == pytest.approx(0.3)
    assert r["pinball_mean"] == pytest.approx(1.1 / 3)
    # width 2 everywhere, misses of 1 on day 2 (both points) -> [2, 2, 22, 22]
    assert r["interval_score"] == pytest.approx(12.0)
    assert r["crps"] is None
    # two members {0, 2} on every day (garbage on the unknown day): fair CRPS [0, 0, 1, 1]
    samples = np.stack([np.zeros((3, 1, 2)), np.full((3, 1, 2), 2.0)])
    samples[:, 2] = -1e6
    assert metrics.proper_scores(p05, p50, p95, truth, samples)["crps"] == pytest.approx(0.5)


def test_daily_loss_hand_case():
    p05, p50, p95, truth = _hand_forecast()
    np.testing.assert_allclose(metrics.daily_loss("squared", p05, p50, p95, truth), [0.0, 4.0])
    # per point mean of the three pinball losses: day 1 (.05 + 0 + .05) / 3, day 2 (.15 + 1 + .95) / 3
    np.testing.assert_allclose(metrics.daily_loss("pinball", p05, p50, p95, truth), [0.1 / 3, 0.7])
    np.testing.assert_allclose(metrics.daily_loss("interval", p05, p50, p95, truth), [2.0, 22.0])
    with pytest.raises(ValueError, match="unknown loss kind"):
        metrics.daily_loss("absolute", p05, p50, p95, truth)


# --- Diebold-Mariano with the HLN correction ------------------------------------------------------

def test_dm_test_hln_hand_case():
    d = [1.0, 3.0, 2.0, 6.0]                         # mean 3, T = 4, demeaned [-2, 0, -1, 3]: g0 3.5, g1 -0.75, g2 0.5
    # h = 2: bandwidth h - 1 = 1, lrv = 3.5 + 2 (1/2)(-0.75) = 2.75; HLN factor sqrt((4 + 1 - 4 + 2 * 1 / 4) / 4)
    r = metrics.dm_test(d, horizon=2)
    raw = 3.0 / math.sqrt(2.75 / 4)
    assert r["lags"] == 1 and r["days"] == 4 and r["horizon"] == 2 and r["mean_loss_diff"] == pytest.approx(3.0)
    assert r["dm"] == pytest.approx(raw * math.sqrt(0.375))
    assert r["p_value"] == pytest.approx(_t3_two_sided_p(raw * math.sqrt(0.375)), rel=1e-9)
    # h = 1: bandwidth 0, lrv = 3.5, factor sqrt((4 + 1 - 2) / 4) = sqrt(0.75)
    r1 = metrics.dm_test(d)
    raw1 = 3.0 / math.sqrt(3.5 / 4)
    assert r1["lags"] == 0 and r1["dm"] == pytest.approx(raw1 * math.sqrt(0.75))
    assert r1["p_value"] == pytest.approx(_t3_two_sided_p(raw1 * math.sqrt(0.75)), rel=1e-9)
    # an explicit bandwidth overrides horizon - 1 (the HLN factor still uses h)
    r2 = metrics.dm_test(d, horizon=1, lags=2)
    raw2 = 3.0 / math.sqrt((3.5 + 2 * (2 / 3) * -0.75 + 2 * (1 / 3) * 0.5) / 4)
    assert r2["lags"] == 2 and r2["dm"] == pytest.approx(raw2 * math.sqrt(0.75))


def test_dm_test_is_statsmodels_on_the_loss_differential():
    from statsmodels.tsa.stattools import diebold_mariano_test
    rng = np.random.default_rng(5)
    y = rng.normal(size=300)
    fa, fb = y + rng.normal(0, 1.0, 300), y + rng.normal(0, 1.2, 300)
    want = diebold_mariano_test(y, fa, fb, lags=6, horizon=7, harvey_adj=True)
    got = metrics.dm_test((y - fa) ** 2 - (y - fb) ** 2, horizon=7, lags=6)
    assert got["dm"] == pytest.approx(want.statistic, rel=1e-12)
    assert got["p_value"] == pytest.approx(want.pvalue, rel=1e-12)


def test_dm_test_nan_cases():
    r = metrics.dm_test(np.zeros(30), horizon=3)     # identical forecasts: zero differential
    assert math.isnan(r["dm"]) and math.isnan(r["p_value"]) and r["mean_loss_diff"] == 0.0
    assert not r["p_value"] < 0.05
    # horizon >= T: no HLN correction exists (the factor sqrt((T-h)(T-h+1))/T is 0 at h = T)
    r = metrics.dm_test(np.arange(5.0), horizon=5)
    assert math.isnan(r["dm"]) and math.isnan(r["p_value"])


def test_by_calendar_day_hand_case():
    # origins at days 10 and 12, 4 days each: days 10, 11 once; 12, 13 twice; 14, 15 once
    days, mean = metrics.by_calendar_day([10, 12], [np.array([1.0, 2, 3, 4]), np.array([5.0, 6, 7, 8])])
    np.testing.assert_array_equal(days, [10, 11, 12, 13, 14, 15])
    np.testing.assert_allclose(mean, [1, 2, (3 + 5) / 2, (4 + 6) / 2, 7, 8])


# --- model confidence set -------------------------------------------------------------------------

def test_mcs_keeps_only_the_clearly_best():
    rng = np.random.default_rng(11)
    T = 250
    losses = {"good": 1.0 + 0.3 * rng.standard_normal(T),
              "bad": 2.0 + 0.3 * rng.standard_normal(T),
              "worse": 2.5 + 0.3 * rng.standard_normal(T)}
    r = metrics.model_confidence_set(losses, reps=500)
    assert set(r) == set(losses)
    assert r["good"]["in_set"] and r["good"]["p_value"] == 1.0
    assert not r["bad"]["in_set"] and not r["worse"]["in_set"]
    assert r["bad"]["p_value"] <= 0.1 and r["worse"]["p_value"] <= 0.1


def test_mcs_equal_methods_all_in_set():
    rng = np.random.default_rng(12)
    a = 1.0 + 0.3 * rng.standard_normal(200)
    # same mean loss by construction (permutations of one series): nothing to eliminate
    r = metrics.model_confidence_set({"a": a, "b": a[::-1].copy(), "c": np.roll(a, 17)}, reps=300)
    assert all(v["in_set"] for v in r.values())
    assert all(v["p_value"] > 0.1 for v in r.values())
    # identical series (arch would divide by a zero variance): all in, p = 1
    r = metrics.model_confidence_set({"a": a, "b": a.copy()})
    assert r == {"a": {"in_set": True, "p_value": 1.0}, "b": {"in_set": True, "p_value": 1.0}}
    # a duplicate of the best method shares its result, the worse one is still out
    r = metrics.model_confidence_set({"a": a, "a2": a.copy(), "w": a + 1.0 + 0.1 * rng.standard_normal(200)},
                                     reps=300)
    assert r["a"]["in_set"] and r["a2"]["in_set"] and not r["w"]["in_set"]


def test_mcs_deterministic_and_default_block_size():
    rng = np.random.default_rng(13)
    T = 216                                            # T^(1/3) = 6
    losses = {"a": 1.0 + rng.standard_normal(T), "b": 1.15 + rng.standard_normal(T),
              "c": 1.3 + rng.standard_normal(T)}
    r1 = metrics.model_confidence_set(losses, reps=300, seed=3)
    r2 = metrics.model_confidence_set(losses, reps=300, seed=3)
    assert r1 == r2
    assert r1 == metrics.model_confidence_set(losses, reps=300, seed=3, block_size=6)
    # arch's own default block (sqrt(T) = 14) gives other bootstrap draws, so other p-values
    assert r1 != metrics.model_confidence_set(losses, reps=300, seed=3, block_size=14)
    with pytest.raises(ValueError):
        metrics.model_confidence_set({"a": np.zeros(5), "b": np.zeros(6)})


# --- conformal calibration of backfill intervals ---------------------------------------------------

GRID = (3, 4)
BINS = (1, 11, 31)
Z95 = 1.6448536269514722


def _backfills(rng, n, days, vol, width=(0.5, 1.0, 3.0)):
    """n windows of `days` leads; truth y = m + vol * sqrt(lead) * eps per grid point; the forecaster knows the
    scale vol * sqrt(lead) but states a band `width[bin]` times too narrow/wide per lead bin (bins BINS)."""
    lead = np.arange(1, days + 1)
    w = np.asarray(width)[conformal.lead_bin(lead, BINS)][:, None, None]
    s = vol * np.sqrt(lead)[:, None, None]
    out = []
    for _ in range(n):
        m = 0.2 + 0.05 * rng.standard_normal((days, *GRID))
        y = m + s * rng.standard_normal((days, *GRID))
        out.append((np.stack([m - w * Z95 * s, m, m + w * Z95 * s]), y, lead))
    return out


def _coverage_by_bin(windows, q_of):
    """{bin: (share below p05, share above p95)} over the windows, q_of(q, lead) giving the quantiles used."""
    out = {}
    for j in range(len(BINS)):
        lo, hi = [], []
        for q, y, lead in windows:
            c = q_of(q, lead)
            sel = conformal.lead_bin(lead, BINS) == j
            lo.append((y[sel] < c[0, sel]).ravel()), hi.append((y[sel] > c[2, sel]).ravel())
        out[j] = (np.concatenate(lo).mean(), np.concatenate(hi).mean())
    return out


def test_conformal_restores_coverage_per_lead_bin_when_volatility_shifts():
    # calibration in a volatile period (vol 0.03), test in a calm one (vol 0.01): the failure of additive shifts
    rng = np.random.default_rng(21)
    calib = _backfills(rng, 12, 60, vol=0.03)
    test = _backfills(rng, 40, 60, vol=0.01)
    cal = conformal.fit(calib, BINS)
    assert cal.empty() == [] and cal.n.shape == (3,) and cal.n[0] == 12 * 10 * GRID[0] * GRID[1]
    raw = _coverage_by_bin(test, lambda q, lead: q)
    new = _coverage_by_bin(test, lambda q, lead: conformal.apply(cal, q, lead))
    for j in range(len(BINS)):
        below, above = new[j]
        assert below == pytest.approx(0.05, abs=0.015) and above == pytest.approx(0.05, abs=0.015), (j, new[j])
    assert raw[0][0] > 0.15 and raw[2][0] < 0.01                       # raw: far too narrow (20%), then far too wide
    # the additive shift per lead bin (vol units, the earlier calibration), learned where vol was 3x higher, moves
    # the calm band by 3x too much: it fails on the same data
    def additive(q, lead):
        out = q.copy()
        for j in range(len(BINS)):
            r = np.concatenate([(y - qq[0])[conformal.lead_bin(ll, BINS) == j].ravel() for qq, y, ll in calib])
            u = np.concatenate([(y - qq[2])[conformal.lead_bin(ll, BINS) == j].ravel() for qq, y, ll in calib])
            sel = conformal.lead_bin(lead, BINS) == j
            out[0, sel] += np.sort(r)[conformal.lower_rank(len(r)) - 1]
            out[2, sel] += np.sort(u)[conformal.upper_rank(len(u)) - 1]
        return out
    old = _coverage_by_bin(test, additive)
    assert max(abs(old[j][0] - 0.05) for j in range(len(BINS))) > 0.03


def test_conformal_never_moves_the_median_and_keeps_the_tails_outside_it():
    rng = np.random.default_rng(3)
    calib = _backfills(rng, 4, 40, vol=0.02, width=(3.0, 3.0, 3.0))     # too wide everywhere: the tails move in
    cal = conformal.fit(calib, BINS)
    q, y, lead = _backfills(rng, 1, 40, vol=0.02)[0]
    out = conformal.apply(cal, q, lead)
    np.testing.assert_array_equal(out[1], q[1])
    assert np.all(out[0] <= out[1]) and np.all(out[2] >= out[1])
    assert np.all(out[0] > q[0]) and np.all(out[2] < q[2])               # narrowed
    # a calibration that would push a tail across the median stops it there
    cal.lower[:] = 5.0
    out = conformal.apply(cal, q, lead)
    np.testing.assert_array_equal(out[0], q[1])


def test_conformal_order_statistics_hand_case():
    # one window, one grid point, half-widths 1 (q05 = -1, q50 = 0, q95 = 1), 39 days in bin 0
    # lower scores r = y - q05 = y + 1; upper r = y - q95 = y - 1. n = 39: ranks floor(40 * .05) = 2, ceil(40 * .95) = 38
    y = np.random.default_rng(0).permutation(np.arange(1.0, 40.0))
    q = np.stack([np.full((39, 1, 1), -1.0), np.zeros((39, 1, 1)), np.ones((39, 1, 1))])
    cal = conformal.fit([(q, y[:, None, None], np.ones(39, int))], lead_bins=(1,))
    assert cal.lower[0] == pytest.approx(2.0 + 1) and cal.upper[0] == pytest.approx(38.0 - 1)
    out = conformal.apply(cal, q[:, :2], np.array([1, 5]))
    # q95 + s * r = 38; q05 + s * r = 2 would cross the median, so it stops there
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.0, 0.0, 1 + 37.0])
    # n = 18: (n + 1) 0.05 < 1, no 5% order statistic: the bin is empty
    cal18 = conformal.fit([(q, y[:, None, None], np.r_[np.ones(18, int), np.full(21, 11)])], lead_bins=(1, 11))
    assert np.isnan(cal18.lower[0]) and cal18.empty() == ["1-10 days"]
    assert conformal.lower_rank(19) == 1 and conformal.upper_rank(19) == 19


def test_conformal_matches_crepes_normalised_mondrian_predictive_system():
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(8)
    calib = _backfills(rng, 5, 40, vol=0.02)
    cal = conformal.fit(calib, BINS)
    q, _, lead = _backfills(rng, 1, 40, vol=0.01)[0]
    ours = conformal.apply(cal, q, lead)
    # crepes: residuals y - p50, sigmas the tail's half-width, Mondrian categories: the lead bin
    def flat(a):
        return a.reshape(-1)
    def cats(ld, days):
        return flat(conformal.lead_bin(ld, BINS)[:, None, None] + np.zeros((days, *GRID), int))
    res = np.concatenate([flat(y - qq[1]) for qq, y, _ in calib])
    bins = np.concatenate([cats(ll, len(y)) for _, y, ll in calib])
    for tail, pct in ((0, {"lower_percentiles": 5}), (2, {"higher_percentiles": 95})):
        sig = np.concatenate([flat(np.abs(qq[1] - qq[tail])) for qq, _, _ in calib])
        cps = crepes.ConformalPredictiveSystem().fit(res, sigmas=sig, bins=bins)
        want = cps.predict(flat(q[1]), sigmas=flat(np.abs(q[1] - q[tail])), bins=cats(lead, len(lead)), **pct)
        np.testing.assert_allclose(flat(ours[tail]), want, rtol=1e-10, atol=1e-12)


def test_conformal_short_validation_span_fills_the_bins_it_reaches():
    # validation backfills whose truth stops after 5..25 days: bins 1-10 and 11-30 fill, 31+ stays empty and takes
    # the nearest filled bin (11-30) on the test days that need it
    rng = np.random.default_rng(4)
    calib = []
    for k in (25, 20, 15, 10, 5, 25, 20):
        q, y, lead = _backfills(rng, 1, 60, vol=0.02)[0]
        calib.append((q, y[:k], lead))
    cal = conformal.fit(calib, BINS)
    assert cal.n[2] == 0 and cal.n[0] == (6 * 10 + 5) * GRID[0] * GRID[1]   # leads 1-10: six windows reach 10, one 5
    assert cal.empty() == ["31+ days"]
    assert cal.to_dict()["empty_bins"] == ["31+ days"]
    q, _, lead = _backfills(rng, 1, 60, vol=0.02)[0]
    out = conformal.apply(cal, q, lead)
    far = lead >= 31
    s_hi = q[2] - q[1]
    np.testing.assert_allclose(out[2, far], (q[2] + s_hi * cal.upper[1])[far])


def test_conformal_json_round_trip_and_rv_range():
    rng = np.random.default_rng(5)
    calib = _backfills(rng, 3, 30, vol=0.02)
    cal = conformal.fit(calib, BINS, rv=[np.full(30, 0.1), np.linspace(0.12, 0.2, 30), np.full(30, 0.15)])
    assert cal.rv_range == (0.1, 0.2)
    back = conformal.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.lead_bins == BINS and back.rv_range == (0.1, 0.2) and back.windows == 3
    np.testing.assert_array_equal(back.n, cal.n)
    q, _, lead = calib[0]
    np.testing.assert_array_equal(conformal.apply(back, q, lead), conformal.apply(cal, q, lead))
    assert conformal.outside_share(cal, np.array([0.05, 0.1, 0.15, 0.2, 0.3])) == pytest.approx(0.4)


def test_conformal_errors():
    q, y, lead = np.zeros((3, 25, 2, 2)), np.zeros((25, 2, 2)), np.arange(1, 26)
    with pytest.raises(ValueError, match="no calibration windows"):
        conformal.fit([])
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q[:2], y, lead)])                # 2 quantiles
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q, np.zeros((26, 2, 2)), lead)])  # truth longer than the forecast
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q, y, lead[:4])])
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q, y, lead), (np.zeros((3, 25, 2, 3)), np.zeros((25, 2, 3)), lead)])
    with pytest.raises(ValueError, match="lead bins"):
        conformal.fit([(q, y, lead)], lead_bins=(2, 10))
    with pytest.raises(ValueError, match="19 scores"):
        conformal.fit([(q[:, :4], y[:4], lead[:4])])        # 4 days x 4 points: no order statistic anywhere
    with pytest.raises(ValueError, match="leads must be"):
        conformal.lead_bin(np.array([0, 1]))
    cal = conformal.fit([(q, y, lead)], lead_bins=(1,))
    with pytest.raises(ValueError, match="do not match"):
        conformal.apply(cal, np.zeros((3, 5, 3, 2)), np.arange(1, 5))
