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


def test_crps_ensemble_hand_case_and_single_member():
    # members {0, 2}, y = 1: E|X - y| = 1, E|X - X'| = (0 + 2 + 2 + 0) / 4 = 1 -> 1 - 0.5
    assert metrics.crps_ensemble(np.array([0.0, 2.0]), np.array(1.0)) == pytest.approx(0.5)
    # ... y = 3: E|X - y| = 2 -> 1.5; a member order does not matter
    assert metrics.crps_ensemble(np.array([2.0, 0.0]), np.array(3.0)) == pytest.approx(1.5)
    x, y = np.array([[0.3, -1.0, 2.0]]), np.array([1.0, 1.0, -0.5])
    np.testing.assert_allclose(metrics.crps_ensemble(x, y), np.abs(x[0] - y), atol=1e-15)


def test_crps_ensemble_equals_brute_force():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(37, 4, 3, 2))
    y = rng.normal(size=(4, 3, 2))
    brute = np.abs(s - y).mean(0) - 0.5 * np.abs(s[:, None] - s[None]).mean((0, 1))
    got = metrics.crps_ensemble(s, y)
    assert got.shape == (4, 3, 2)
    np.testing.assert_allclose(got, brute, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(metrics.crps_ensemble(s, y, chunk=5), brute, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError):
        metrics.crps_ensemble(s, y[:3])


def test_crps_ensemble_memory_frugal():
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
    # one sorted copy of the samples plus small chunks; broadcasting |X - y| or any N^2 would be >= 2x
    assert peak < 1.5 * s.nbytes
    # standard normal ensemble: CRPS ~ E|Z - y| - 1/sqrt(pi); spot check one point against brute force
    x = s[:, 10, 2, 3]
    brute = np.abs(x - y[10, 2, 3]).mean() - 0.5 * np.abs(x[:, None] - x[None]).mean()
    assert c[10, 2, 3] == pytest.approx(brute, rel=1e-10)


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
    # two members {0, 2} on every day (garbage on the unknown day): CRPS [.5, .5, 1.5, 1.5]
    samples = np.stack([np.zeros((3, 1, 2)), np.full((3, 1, 2), 2.0)])
    samples[:, 2] = -1e6
    assert metrics.proper_scores(p05, p50, p95, truth, samples)["crps"] == pytest.approx(1.0)


def test_daily_loss_hand_case():
    p05, p50, p95, truth = _hand_forecast()
    np.testing.assert_allclose(metrics.daily_loss("squared", p05, p50, p95, truth), [0.0, 4.0])
    # per point mean of the three pinball losses: day 1 (.05 + 0 + .05) / 3, day 2 (.15 + 1 + .95) / 3
    np.testing.assert_allclose(metrics.daily_loss("pinball", p05, p50, p95, truth), [0.1 / 3, 0.7])
    np.testing.assert_allclose(metrics.daily_loss("interval", p05, p50, p95, truth), [2.0, 22.0])
    with pytest.raises(ValueError, match="unknown loss kind"):
        metrics.daily_loss("absolute", p05, p50, p95, truth)


# --- Diebold-Mariano with the HLN correction ------------------------------------------------------

def test_long_run_variance_bartlett_hand_case():
    # x = [1, 3, 2, 6], demeaned [-2, 0, -1, 3]: g0 = 3.5, g1 = -0.75, g2 = 0.5, g3 = -1.5
    x = [1.0, 3.0, 2.0, 6.0]
    assert metrics.long_run_variance(x, 0) == pytest.approx(3.5)
    assert metrics.long_run_variance(x, 1) == pytest.approx(3.5 + 2 * (1 / 2) * -0.75)
    assert metrics.long_run_variance(x, 2) == pytest.approx(3.5 + 2 * (2 / 3) * -0.75 + 2 * (1 / 3) * 0.5)
    assert metrics.long_run_variance(x, 5) == pytest.approx(metrics.newey_west_variance(x, 5))


def test_dm_test_hln_hand_case():
    d = [1.0, 3.0, 2.0, 6.0]                         # mean 3, T = 4
    # h = 2: bandwidth h - 1 = 1, lrv = 2.75; HLN factor sqrt((4 + 1 - 4 + 2 * 1 / 4) / 4) = sqrt(0.375)
    r = metrics.dm_test(d, horizon=2)
    raw = 3.0 / math.sqrt(2.75 / 4)
    assert r["lags"] == 1 and r["days"] == 4 and r["mean_loss_diff"] == pytest.approx(3.0)
    assert r["dm_raw"] == pytest.approx(raw)
    assert r["dm"] == pytest.approx(raw * math.sqrt(0.375))
    assert r["p_value"] == pytest.approx(_t3_two_sided_p(raw * math.sqrt(0.375)), rel=1e-9)
    # h = 1: bandwidth 0, lrv = 3.5, factor sqrt((4 + 1 - 2) / 4) = sqrt(0.75)
    r1 = metrics.dm_test(d)
    raw1 = 3.0 / math.sqrt(3.5 / 4)
    assert r1["lags"] == 0 and r1["dm_raw"] == pytest.approx(raw1)
    assert r1["dm"] == pytest.approx(raw1 * math.sqrt(0.75))
    assert r1["p_value"] == pytest.approx(_t3_two_sided_p(raw1 * math.sqrt(0.75)), rel=1e-9)
    # an explicit bandwidth overrides horizon - 1 (the HLN factor still uses h)
    r2 = metrics.dm_test(d, horizon=1, lags=2)
    raw2 = 3.0 / math.sqrt((3.5 + 2 * (2 / 3) * -0.75 + 2 * (1 / 3) * 0.5) / 4)
    assert r2["lags"] == 2 and r2["dm"] == pytest.approx(raw2 * math.sqrt(0.75))


def test_dm_test_nan_cases():
    r = metrics.dm_test(np.zeros(30), horizon=3)     # identical forecasts: zero differential
    assert math.isnan(r["dm"]) and math.isnan(r["p_value"]) and r["mean_loss_diff"] == 0.0
    assert not r["p_value"] < 0.05
    # horizon >= T: no HLN correction exists (the factor sqrt((T-h)(T-h+1))/T is 0 at h = T)
    r = metrics.dm_test(np.arange(5.0), horizon=5)
    assert math.isnan(r["dm"]) and math.isnan(r["p_value"]) and np.isfinite(r["dm_raw"])


def test_diebold_mariano_with_horizon_uses_hln():
    rng = np.random.default_rng(5)
    ea = rng.normal(0, 0.01, (250, 2, 3))
    eb = rng.normal(0, 0.03, (250, 2, 3))
    d = (ea**2).reshape(250, -1).mean(1) - (eb**2).reshape(250, -1).mean(1)
    r = metrics.diebold_mariano(ea, eb, horizon=5)
    assert r["dm"] < 0 and r["p_value"] < 0.01 and r["mean_loss_diff"] < 0
    assert r["lags"] == 4 and r["days"] == 250
    want = metrics.dm_test(d, horizon=5)
    assert r["dm"] == pytest.approx(want["dm"]) and r["p_value"] == pytest.approx(want["p_value"])
    T, h = 250, 5
    assert r["dm"] / r["dm_raw"] == pytest.approx(math.sqrt((T + 1 - 2 * h + h * (h - 1) / T) / T))
    # lags with an explicit horizon: bandwidth lags
    assert metrics.diebold_mariano(ea, eb, lags=2, horizon=5)["dm"] == pytest.approx(
        metrics.dm_test(d, horizon=5, lags=2)["dm"])
    # identical forecasts -> NaN
    r = metrics.diebold_mariano(ea, ea.copy(), horizon=3)
    assert math.isnan(r["dm"]) and math.isnan(r["p_value"])


def test_diebold_mariano_without_horizon_is_unchanged():
    # the historical statistic: raw DM, Newey-West default lags, normal p-value (evaluate.dm_tests)
    rng = np.random.default_rng(7)
    ea, eb = rng.normal(0, 0.02, (120, 6)), rng.normal(0, 0.021, (120, 6))
    d = (ea**2).mean(1) - (eb**2).mean(1)
    r = metrics.diebold_mariano(ea, eb)
    stat = d.mean() / math.sqrt(metrics.newey_west_variance(d) / 120)
    assert r["dm"] == pytest.approx(stat)
    assert r["p_value"] == pytest.approx(math.erfc(abs(stat) / math.sqrt(2)))
    assert set(r) == {"dm", "p_value", "mean_loss_diff", "days"}


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


# --- split-conformal calibration ------------------------------------------------------------------

LEVELS = (0.05, 0.5, 0.95)
GRID = (5, 5)
DAYS, HORIZON = 100, 50                               # buckets 0 and 1


def _windows(rng, n_windows, s):
    """y = m + s eps; quantiles m + (-w, 0, w) s with w = 0.5 (too narrow) in bucket 0, 3 (too wide) in 1."""
    bucket = np.arange(DAYS) // HORIZON
    w = np.where(bucket == 0, 0.5, 3.0)[:, None, None]
    out = []
    for _ in range(n_windows):
        m = 0.2 + 0.05 * rng.standard_normal((DAYS, *GRID))
        y = m + s * rng.standard_normal((DAYS, *GRID))
        q = np.stack([m - w * s, m, m + w * s])
        out.append((q, y, bucket))
    return out


def test_conformal_restores_coverage_per_bucket():
    rng = np.random.default_rng(21)
    s = 0.01 + 0.04 * rng.uniform(size=GRID)          # per grid point scale
    cal = conformal.fit(_windows(rng, 4, s), LEVELS)
    np.testing.assert_array_equal(cal.buckets, [0, 1])
    np.testing.assert_array_equal(cal.n, [200, 200])
    assert cal.shift.shape == (2, 3, *GRID)
    test = _windows(rng, 8, s)                         # an independent draw
    for b in (0, 1):
        raw, new = [], []
        for q, y, bucket in test:
            c = conformal.apply(cal, q, bucket)
            sel = bucket == b
            raw.append((q[:, sel], y[sel]))
            new.append((c[:, sel], y[sel]))
        for pairs, calibrated in ((raw, False), (new, True)):
            q = np.concatenate([p[0] for p in pairs], axis=1)
            y = np.concatenate([p[1] for p in pairs])
            inside = np.mean((y >= q[0]) & (y <= q[2]))
            if calibrated:
                assert inside == pytest.approx(0.90, abs=0.02)
                for k, tau in enumerate(LEVELS):
                    assert np.mean(y <= q[k]) == pytest.approx(tau, abs=0.02 if tau != 0.5 else 0.03)
            else:                                       # raw: 38% (bucket 0) and 99.7% (bucket 1)
                assert abs(inside - 0.90) > 0.08


def test_conformal_order_statistics_hand_case():
    # one grid point, residuals 1..39 in bucket 0 (q = 0): n = 39, (n + 1) = 40
    # p95: ceil(40 * .95) = 38th smallest = 38; p05: floor(40 * .05) = 2nd = 2; p50: median 20
    r = np.arange(1.0, 40.0)
    q = np.zeros((3, 39, 1, 1))
    cal = conformal.fit([(q, r[:, None, None], np.zeros(39, int))])
    np.testing.assert_allclose(cal.shift[0, :, 0, 0], [2.0, 20.0, 38.0])
    # n = 9: ceil(10 * .95) = 10 clipped to 9 -> max; floor(10 * .05) = 0 clipped to 1 -> min
    rng = np.random.default_rng(0)
    r9 = rng.permutation(np.arange(1.0, 10.0))
    cal9 = conformal.fit([(np.zeros((3, 9, 1, 1)), r9[:, None, None], np.zeros(9, int))])
    np.testing.assert_allclose(cal9.shift[0, :, 0, 0], [1.0, 5.0, 9.0])


def test_conformal_counts_only_known_truth():
    rng = np.random.default_rng(22)
    q = rng.normal(size=(3, 10, 2, 2))
    q.sort(axis=0)
    y = rng.normal(size=(6, 2, 2))                      # truth known for 6 of 10 days
    bucket = np.arange(10) // 4                         # known days: buckets 0 (4 days) and 1 (2 days)
    garbage = q.copy()
    garbage[:, 6:] = 1e9
    cal = conformal.fit([(garbage, y, bucket)])
    ref = conformal.fit([(q[:, :6], y, bucket[:6])])
    np.testing.assert_array_equal(cal.buckets, [0, 1])
    np.testing.assert_array_equal(cal.n, [4, 2])
    np.testing.assert_allclose(cal.shift, ref.shift)
    assert np.all(np.abs(cal.shift) < 10)


def _hand_cal():
    shift = np.zeros((2, 3, 1, 1))
    shift[0, :, 0, 0] = [-1.0, 0.0, 1.0]                # bucket 0
    shift[1, :, 0, 0] = [-10.0, 0.0, 10.0]              # bucket 3
    return conformal.Calibration(levels=LEVELS, buckets=np.array([0, 3]), shift=shift, n=np.array([50, 40]))


def test_conformal_unseen_bucket_uses_nearest():
    cal = _hand_cal()
    bucket = np.array([-1, 0, 1, 2, 3, 7])
    q = np.zeros((3, 6, 1, 1))
    out = conformal.apply(cal, q, bucket)
    assert out.shape == q.shape
    # nearest seen bucket: -1, 0, 1 -> 0; 2, 3 -> 3; 7 (beyond the calibrated horizons) -> the last one
    np.testing.assert_allclose(out[2, :, 0, 0], [1, 1, 1, 10, 10, 10])
    np.testing.assert_allclose(out[0, :, 0, 0], [-1, -1, -1, -10, -10, -10])


def test_conformal_output_is_monotone():
    shift = np.zeros((1, 3, 1, 2))
    shift[0, 0] = 5.0                                   # p05 pushed above p50 and p95
    cal = conformal.Calibration(levels=LEVELS, buckets=np.array([0]), shift=shift, n=np.array([10]))
    q = np.stack([np.full((4, 1, 2), v) for v in (0.0, 1.0, 2.0)])
    out = conformal.apply(cal, q, np.zeros(4, int))
    assert np.all(np.diff(out, axis=0) >= 0)
    np.testing.assert_allclose(out[:, 0, 0, 0], [1.0, 2.0, 5.0])


def test_conformal_json_round_trip():
    cal = _hand_cal()
    back = conformal.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.levels == LEVELS
    np.testing.assert_array_equal(back.buckets, cal.buckets)
    np.testing.assert_array_equal(back.shift, cal.shift)
    np.testing.assert_array_equal(back.n, cal.n)
    q = np.zeros((3, 4, 1, 1))
    b = np.array([0, 1, 2, 5])
    np.testing.assert_array_equal(conformal.apply(back, q, b), conformal.apply(cal, q, b))


def test_conformal_errors():
    q, y, b = np.zeros((3, 5, 2, 2)), np.zeros((5, 2, 2)), np.zeros(5, int)
    with pytest.raises(ValueError, match="no calibration windows"):
        conformal.fit([])
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q[:2], y, b)])                  # 2 quantiles for 3 levels
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q, np.zeros((6, 2, 2)), b)])    # truth longer than the forecast
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q, y, b[:4])])                  # bucket labels for 4 of 5 days
    with pytest.raises(ValueError, match="shapes disagree"):
        conformal.fit([(q, y, b), (np.zeros((3, 5, 2, 3)), np.zeros((5, 2, 3)), b)])   # grids differ
    cal = conformal.fit([(q, y, b)])
    with pytest.raises(ValueError):
        conformal.apply(cal, np.zeros((3, 5, 2, 3)), b)
