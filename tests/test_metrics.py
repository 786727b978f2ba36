"""metrics: the scores every method is judged by. Proper scores (pinball, interval score, ensemble CRPS),
Diebold-Mariano with the Harvey-Leybourne-Newbold correction, the model confidence set, RMSE by pass / grid / day,
CI violations and coverage, co-integration, the static-arbitrage checks and the mean autocorrelation.
Hand-computed cases and small synthetic data with fixed seeds; CPU only."""
import math
import tracemalloc

import numpy as np
import pytest

from backfill import metrics
from backfill.metrics import (arbitrage_share, butterfly_violations, calendar_violations,
                              mean_acf)


def _t3_two_sided_p(x):
    """Two-sided p-value of Student t with 3 df, closed form (not scipy):
    P(|T| > x) = 1 - (2/pi) (theta + sin(theta) cos(theta)), theta = atan(x / sqrt(3))."""
    th = math.atan(abs(x) / math.sqrt(3.0))
    return 1.0 - (2.0 / math.pi) * (th + math.sin(th) * math.cos(th))


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


MAT = np.array([0.5, 1.0])


MON = np.array([0.9, 1.0, 1.1])


GRID = (2, 3)


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


T5 = np.array([1 / 12, 1 / 4, 1 / 2, 1.0, 2.0])


K5 = np.array([0.7, 0.85, 1.0, 1.15, 1.3])


def test_flat_surface_passes():
    s = np.full((5, 5), 0.2)
    assert not calendar_violations(s, T5, K5)
    assert not butterfly_violations(s, T5, K5)
    assert arbitrage_share(s[None], T5, K5) == {"calendar": 0.0, "butterfly": 0.0, "any": 0.0}


def test_calendar_violation_flagged():
    s = np.full((5, 5), 0.2)
    s[3, :] = 0.2 * np.sqrt(0.4)    # 1y total variance 0.016 < 6m total variance 0.02
    assert calendar_violations(s, T5, K5)
    assert not butterfly_violations(s, T5, K5)
    s2 = np.full((5, 5), 0.2)
    s2[1, 2] = 0.1                   # one point only: 3m ATM total variance below 1m
    assert calendar_violations(s2, T5, K5)


def test_butterfly_violation_flagged():
    s = np.full((5, 5), 0.2)
    s[2, 2] = 0.6                    # ATM spike: call price jumps up, not convex in strike
    assert butterfly_violations(s, T5, K5)
    assert not calendar_violations(np.full((5, 5), 0.2), T5, K5)
    assert arbitrage_share(s[None], T5, K5)["butterfly"] == 1.0


def test_ssvi_inside_bounds_passes_on_6x7_grid(ssvi):
    T = np.array([1 / 52, 1 / 12, 0.25, 0.5, 1.0, 3.0])
    K = np.array([0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5])
    for rho in (-0.95, -0.5, 0.0, 0.3):
        for atm in (0.1, 0.3, 0.8):
            s = ssvi(T, K, atm=atm, rho=rho, eta=2 / (1 + abs(rho)) * 0.99, gamma=0.5)
            assert s.shape == (6, 7)
            assert not calendar_violations(s, T, K)
            assert not butterfly_violations(s, T, K)


def test_batched_shapes():
    rng = np.random.default_rng(0)
    s = 0.2 + 0.01 * rng.standard_normal((3, 4, 5, 5))           # (B, T, n_mat, n_mon)
    assert calendar_violations(s, T5, K5).shape == (3, 4)
    assert butterfly_violations(s, T5, K5).shape == (3, 4)
    share = arbitrage_share(s, T5, K5)
    assert set(share) == {"calendar", "butterfly", "any"}
    assert share["any"] >= max(share["calendar"], share["butterfly"])
    with pytest.raises(ValueError):
        calendar_violations(s, T5[:4], K5)


def test_mean_acf_ar1():
    rng = np.random.default_rng(1)
    n, phi = 20000, 0.9
    e = rng.standard_normal((n, 2, 3))
    x = np.empty_like(e)
    x[0] = e[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    acf = mean_acf(x, [1, 5, 10])
    for lag, v in acf.items():
        assert abs(v - phi**lag) < 0.03
    assert mean_acf(x, 0)[0] == pytest.approx(1.0)


def test_mean_acf_matches_statsmodels():
    from statsmodels.tsa.stattools import acf
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.standard_normal((500, 2, 2)), axis=0)
    ref = np.mean([acf(x[:, i, j], nlags=30)[[10, 30]] for i in range(2) for j in range(2)], axis=0)
    got = mean_acf(x, [10, 30])
    assert got[10] == pytest.approx(ref[0]) and got[30] == pytest.approx(ref[1])
