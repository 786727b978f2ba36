"""evaluate: the evaluation helpers over every method's backfills (rolling summary, grading against the plan's
tables, Diebold-Mariano per calendar day, the tables 6.2 / 6.3 / 13.2, the conformal rows, widths against realised
vol). Small synthetic data, fixed seeds."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from backfill import conformal, evaluate, metrics
from backfill.data import Dataset
from backfill.generate import Backfill


MAT = np.array([0.5, 1.0])


MON = np.array([0.9, 1.0, 1.1])


GRID = (2, 3)


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


def test_tables_6_2_6_3_and_deployment_on_hand_made_scores(test_params):
    p = test_params

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
    # in units of realised vol x sqrt(lead): each test day's own realised vol scales its band; the median stays.
    # By hand: each calibration window's (truth - median) / (rv of its own days x sqrt(lead)), its order statistics
    # per lead bin (40 days x 12 points: 1-10, 11-30, 31-40), the extreme of the 6 windows (unit backfill)
    rv = np.linspace(0.1, 0.3, 600)
    mkt, mcals = evaluate.calibrate(calib, test, rv=rv, unit="backfill", scale="realised_vol")
    m = mkt["rolling_0"]["vae_o90_cal"]
    lead = np.arange(1, 41)
    edges = np.searchsorted([1, 11, 31, 91], lead, side="right") - 1
    lo_hand, hi_hand = np.full(3, np.inf), np.full(3, -np.inf)
    for w in calib.values():
        b = w["vae_o90"]
        z = (b.truth - b.p50) / (rv[b.start:b.start + 40] * np.sqrt(lead))[:, None, None]
        for j in range(3):
            x = np.sort(z[edges == j].ravel())
            lo_hand[j] = min(lo_hand[j], x[int(np.floor((len(x) + 1) * 0.05)) - 1])
            hi_hand[j] = max(hi_hand[j], x[int(np.ceil((len(x) + 1) * 0.95)) - 1])
    assert mcals["vae_o90"].scale == "realised_vol"
    np.testing.assert_allclose(mcals["vae_o90"].lower[:3], lo_hand)
    np.testing.assert_allclose(mcals["vae_o90"].upper[:3], hi_hand)
    s = (rv[500:540] * np.sqrt(lead))[:, None, None]                          # the test days' own scale
    np.testing.assert_array_equal(m.p50, raw.p50)
    np.testing.assert_allclose(m.p05, np.minimum(raw.p50 + s * lo_hand[edges][:, None, None], raw.p50), rtol=1e-10)
    np.testing.assert_allclose(m.p95, np.maximum(raw.p50 + s * hi_hand[edges][:, None, None], raw.p50), rtol=1e-10)
    with pytest.raises(ValueError, match="needs the realised vol series"):
        evaluate.calibrate(calib, test, scale="realised_vol")
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


def test_median_bias_on_calibration_and_test_days():
    """A median unbiased on the validation days and 0.01 too high on the test days: the table shows both, and the
    calibrated band, fitted where there was no bias, misses the test truths on the low side only."""
    flat = np.full((40, *GRID), 0.2)
    signs = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)[:, None, None]
    calib = {f"calib_{i}": {"m": _bf(f"calib_{i}", i, flat, flat + 0.005 * signs)} for i in range(4)}
    test = {"rolling_0": {"m": _bf("rolling_0", 500, flat, flat - 0.01)},
            "crisis": {"m": _bf("crisis", 700, flat, flat + 0.3)}}                # a named window: not a rolling origin
    row = evaluate.median_bias(calib, test, ["m"]).iloc[0]
    assert row["calibration: truth - p50"] == pytest.approx(0.0) and row["calibration: share below p50"] == 0.5
    assert row["test: truth - p50"] == pytest.approx(-0.01) and row["test: share below p50"] == 1.0
    out, _ = evaluate.calibrate(calib, test)
    cal = out["rolling_0"]["m_cal"]
    assert (cal.truth < cal.p05).mean() == 1.0 and (cal.truth > cal.p95).mean() == 0.0
    none = evaluate.median_bias({}, {"crisis": test["crisis"]}, ["m"]).iloc[0]    # no calibration; no rolling origin
    assert pd.isna(none["calibration: truth - p50"]) and none["test: truth - p50"] == pytest.approx(0.3)
    gap = test["rolling_0"]["m"].truth.copy()
    gap[:20] = np.nan                                                          # unknown truths are not counted
    gappy = {"rolling_0": {"m": dataclasses.replace(test["rolling_0"]["m"], truth=gap)}}
    assert evaluate.median_bias(calib, gappy, ["m"]).iloc[0]["test: share below p50"] == 1.0


def test_coverage_by_origin_one_row_per_rolling_origin():
    """Each rolling origin's violation share and its mean realised vol, by hand; named windows are left out."""
    flat = np.full((40, *GRID), 0.2)
    rv = np.zeros(1000)
    rv[500:540], rv[600:640] = 0.1, 0.3
    bfs = {"rolling_500": {"m": _bf("rolling_500", 500, flat, flat)},
           "rolling_600": {"m": _bf("rolling_600", 600, flat, flat - 0.01)},
           "crisis": {"m": _bf("crisis", 700, flat, flat)}}
    scores = {"rolling_500": {"m": {"ci_violation": 0.0}}, "rolling_600": {"m": {"ci_violation": 0.75}},
              "crisis": {"m": {"ci_violation": 1.0}}}
    t = evaluate.coverage_by_origin(bfs, scores, ["m", "absent"], rv)
    assert list(t.columns) == ["origin", "mean RV", "m"] and len(t) == 2
    assert t["mean RV"].tolist() == pytest.approx([0.1, 0.3]) and t["m"].tolist() == [0.0, 0.75]
    assert t["origin"].tolist() == [str(bfs["rolling_500"]["m"].dates[0]), str(bfs["rolling_600"]["m"].dates[0])]
    named = evaluate.coverage_by_origin(bfs, {"crisis": scores["crisis"]}, ["m"], rv)   # no rolling origin: every window
    assert named["m"].tolist() == [1.0]


def test_coverage_inside_outside_splits_days_by_the_calibration_rv_range():
    """By hand: origin 500's 40 days have RV inside [0.1, 0.3] and are covered; origin 600's first 10 days are inside
    and covered, its last 30 are outside (RV 0.5) and missed everywhere."""
    from backfill.conformal import Calibration
    flat = np.full((40, *GRID), 0.2)
    rv = np.zeros(1000)
    rv[500:540], rv[600:610], rv[610:640] = 0.2, 0.3, 0.5
    truth = flat.copy()
    truth[10:] += 0.05                                   # beyond the band (+-0.01) on the outside days
    cal = Calibration(lead_bins=(1,), lower=np.zeros(1), upper=np.zeros(1), n=np.array([100]), rv_range=(0.1, 0.3))
    bfs = {"rolling_500": {"m_cal": _bf("rolling_500", 500, flat, flat)},
           "rolling_600": {"m_cal": _bf("rolling_600", 600, flat, truth)}}
    t = evaluate.coverage_inside_outside(bfs, {"m": cal, "no_row": cal}, rv)
    assert t.to_dict(orient="records") == [{"method": "m_cal", "calibration RV": "0.100-0.300", "days inside": 50,
                                            "violation inside": 0.0, "days outside": 30, "violation outside": 1.0}]
    no_range = Calibration(lead_bins=(1,), lower=np.zeros(1), upper=np.zeros(1), n=np.array([100]), rv_range=None)
    assert evaluate.coverage_inside_outside(bfs, {"m": no_range}, rv).empty


def test_coverage_interval_counts_each_calendar_day_once_and_judges_against_the_noise():
    """By hand: origins 100 and 110 (20 days each) overlap on days 110..119. 'overlap' misses those days in both
    origins: per calendar day 1 on 10 of 30 days, a mean of 1/3 (pooled origin-days would say 20/40 = 1/2); 'late'
    misses them in origin 100 only: 0.5 on 10 of 30 days, 1/6 (pooled: 10/40). The named window is left out; 'inside'
    never misses, 'outside' always."""
    flat = np.full((20, *GRID), 0.2)
    miss = flat + 0.05                                     # beyond the +-0.01 band everywhere
    last10, first10 = flat.copy(), flat.copy()
    last10[10:] += 0.05                                    # origin 100's days 110..119
    first10[:10] += 0.05                                   # origin 110's days 110..119
    bfs = {"rolling_100": {"overlap": _bf("r", 100, flat, last10), "late": _bf("r", 100, flat, last10),
                           "inside": _bf("r", 100, flat, flat), "outside": _bf("r", 100, flat, miss)},
           "rolling_110": {"overlap": _bf("r", 110, flat, first10), "late": _bf("r", 110, flat, flat),
                           "inside": _bf("r", 110, flat, flat), "outside": _bf("r", 110, flat, miss)},
           "crisis": {m: _bf("c", 500, flat, miss if m == "inside" else flat) for m in ("overlap", "late", "inside",
                                                                                       "outside")}}
    t = evaluate.coverage_interval(bfs, ["overlap", "late", "inside", "outside"], reps=200).set_index("method")
    assert (t["days"] == 30).all()
    assert t.loc["overlap", "violation per day"] == pytest.approx(1 / 3)
    assert t.loc["late", "violation per day"] == pytest.approx(1 / 6)
    assert (t["lower"] <= t["violation per day"]).all() and (t["violation per day"] <= t["upper"]).all()
    assert t.loc["inside", "violation per day"] == 0.0 and t.loc["inside", "verdict"] == "over-covers"
    assert t.loc["outside", "violation per day"] == 1.0 and t.loc["outside", "verdict"] == "under-covers"
    assert evaluate.coverage_interval({"crisis": bfs["crisis"]}, ["late"]).empty        # no rolling origin: no interval
    s = evaluate.coverage_sentence(t.reset_index().iloc[3])
    assert s == "outside under-covers: 100.0% of truths outside its 5-95% band per calendar day (90% interval " \
                "100.0-100.0%, nominal 10%, 30 days)"


def test_coverage_interval_holds_nominal_for_a_band_at_nominal():
    """Days in runs of five, a fifth of them with half the grid outside the band (a 10% mean, clustered in time as
    a path forecast's misses are): 'within the noise', its interval holds 0.1; the same band missing twice as often
    over as many days is 'under-covers'."""
    rng = np.random.default_rng(3)
    runs = rng.permutation(np.r_[np.ones(20), np.zeros(80)])          # 100 runs of 5 days: 500 calendar days
    for share, k, verdict in ((0.1, 3, "within the noise"), (0.2, 6, "under-covers")):    # k of the 6 points
        bad = np.repeat(runs, 5).astype(bool)
        flat = np.full((500, *GRID), 0.2)
        truth = flat.copy()
        truth.reshape(500, -1)[np.ix_(bad, np.arange(k))] += 0.05
        bfs = {f"rolling_{s}": {"m": _bf("r", s, flat[s:s + 100], truth[s:s + 100])} for s in range(0, 500, 100)}
        row = evaluate.coverage_interval(bfs, ["m"], reps=300).iloc[0]
        assert row["violation per day"] == pytest.approx(share) and row["verdict"] == verdict
        assert row["lower"] < share < row["upper"]


def test_calibration_table_states_the_backfills_and_the_confidence_per_bin():
    """Unit 'backfill': per lead bin the backfills with a statistic of their own and K / (K + 1); unit 'day': neither;
    an empty bin says it borrows."""
    from backfill.conformal import Calibration
    by_bf = Calibration(lead_bins=(1, 11), lower=np.array([-0.5, np.nan]), upper=np.array([0.2, np.nan]),
                        n=np.array([120, 6]), rv_range=None, windows=4, unit="backfill", units=np.array([4, 0]))
    by_day = dataclasses.replace(by_bf, unit="day", units=None)
    t = evaluate.calibration_table({"a": by_bf, "b": by_day})
    rows = t.to_dict(orient="records")
    assert rows[0] == {"method": "a", "scale": "halfwidth", "lead": "1-10 days", "scores": 120, "backfills": 4, "confidence": 0.8,
                       "lower tail score": -0.5, "upper tail score": 0.2, "filled": "yes"}
    assert rows[1]["backfills"] == 0 and pd.isna(rows[1]["confidence"]) and rows[1]["filled"].startswith("no")
    assert pd.isna(rows[2]["backfills"]) and pd.isna(rows[2]["confidence"]) and rows[2]["lower tail score"] == -0.5


def test_calibration_rule_says_the_params_in_words():
    assert evaluate.calibration_rule("backfill", "realised_vol") == (
        "scores from the median in units of the day's realised vol x sqrt(lead), an order statistic per tail, "
        "Mondrian by lead time, whole backfills as the exchangeable unit")
    assert "own half-width" in evaluate.calibration_rule("day", "halfwidth")
    assert "days pooled" in evaluate.calibration_rule("day", "halfwidth")
    with pytest.raises(ValueError, match="not among"):
        evaluate.calibration_rule("origin", "halfwidth")


def test_coverage_by_point_hand_case():
    # two rolling origins of 4 days on a 1 x 2 grid: point (0, 0) misses 1 of 4 days then 3 of 4, point (0, 1) never
    y1 = np.array([[0.2, 0.2], [0.4, 0.2], [0.2, 0.2], [0.2, 0.2]])[:, None, :]
    y2 = np.array([[0.05, 0.2], [0.4, 0.2], [0.35, 0.2], [0.2, 0.2]])[:, None, :]

    def bf(y, start):                                            # band 0.1-0.3 around 0.2
        return dataclasses.replace(_bf("r", start, np.full((4, 1, 2), 0.2), y), p05=np.full((4, 1, 2), 0.1),
                                   p95=np.full((4, 1, 2), 0.3))
    bfs = {"rolling_0": {"m": bf(y1, 0)}, "rolling_1": {"m": bf(y2, 10)}, "calib": {"m": bf(y2 * 0, 20)}}
    got = evaluate.coverage_by_point(bfs, ["m"])["m"]
    np.testing.assert_allclose(got, [[0.5, 0.0]])                # (1/4 + 3/4) / 2; the named window is not counted
