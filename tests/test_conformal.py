"""conformal: split-conformal calibration of backfill intervals (normalised per-tail scores, Mondrian by lead
time), against hand-computed order statistics, crepes' predictive system and small synthetic backfills with fixed
seeds; CPU only."""
import json

import numpy as np
import pytest

from backfill import conformal


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


def test_backfill_unit_keeps_each_backfills_own_order_statistics_and_the_most_extreme():
    """By hand: per backfill and lead bin, the order statistics of its own scores (as unit 'day' computes them for one
    backfill alone); the calibration keeps the lowest lower-tail and the highest upper-tail score of the K backfills,
    and states K / (K + 1); a backfill too short for a bin does not count there."""
    rng = np.random.default_rng(8)
    calib = _backfills(rng, 3, 40, vol=0.02) + [_backfills(rng, 1, 10, vol=0.05)[0]]   # the last: the first bin only
    cal = conformal.fit(calib, BINS, unit="backfill")
    alone = [conformal.fit([w], BINS) for w in calib]
    lo = np.array([c.lower for c in alone])                       # (4, 3); NaN where the backfill has no statistic
    hi = np.array([c.upper for c in alone])
    np.testing.assert_array_equal(cal.lower, np.nanmin(lo, 0))
    np.testing.assert_array_equal(cal.upper, np.nanmax(hi, 0))
    assert cal.units.tolist() == [4, 3, 3] and cal.unit == "backfill"
    np.testing.assert_allclose(cal.confidence(), [4 / 5, 3 / 4, 3 / 4])
    assert np.isnan(conformal.fit(calib, BINS).confidence()).all()            # unit 'day' states none
    np.testing.assert_array_equal(cal.n, conformal.fit(calib, BINS).n)
    back = conformal.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.unit == "backfill" and back.units.tolist() == [4, 3, 3]
    with pytest.raises(ValueError, match="unit must be one of day, backfill"):
        conformal.fit(calib, BINS, unit="origin")
    q, y, lead = calib[0]
    with pytest.raises(ValueError, match="no backfill has the 19 scores"):
        conformal.fit([(q[:, :1], y[:1], lead[:1])], unit="backfill")    # 12 scores: none


def test_backfill_unit_covers_a_regime_that_pooled_days_dilute():
    """Ten calm calibration backfills and two stressed ones whose truth moves three times as far as the forecaster's
    band says. Pooled days (unit 'day') learn mostly the calm regime: a stressed test period is missed far beyond 5%
    per tail. Whole backfills as the unit keep the stressed backfills' shift: the stressed test holds 5% per tail
    (and the calm one is over-covered, the price of not knowing which regime comes)."""
    rng = np.random.default_rng(13)
    days = 60
    lead = np.arange(1, days + 1)
    s = 0.01 * np.sqrt(lead)[:, None, None]                        # the scale the forecaster states

    def window(stress):
        m = 0.2 + 0.05 * rng.standard_normal((days, *GRID))
        y = m + stress * s * rng.standard_normal((days, *GRID))
        return np.stack([m - Z95 * s, m, m + Z95 * s]), y, lead

    calib = [window(1.0) for _ in range(10)] + [window(3.0) for _ in range(2)]
    stressed, calm = [window(3.0) for _ in range(30)], [window(1.0) for _ in range(30)]
    by_day, by_backfill = conformal.fit(calib, BINS), conformal.fit(calib, BINS, unit="backfill")
    miss = lambda cal, ws: _coverage_by_bin(ws, lambda q, ld: conformal.apply(cal, q, ld))     # noqa: E731
    for j in range(len(BINS)):
        assert max(miss(by_day, stressed)[j]) > 0.10, (j, miss(by_day, stressed)[j])
        below, above = miss(by_backfill, stressed)[j]
        assert below <= 0.06 and above <= 0.06, (j, below, above)
        assert max(miss(by_backfill, calm)[j]) < 0.01


def _fixed_band(rng, n, days, vol, half=0.02):
    """n windows whose forecaster states one fixed band (half-width `half`, vol units) whatever the market, while the
    truth's spread is vol * sqrt(lead): the econometric baseline and the random walk, or a model fitted on a calm span.
    Returns [(q, y, lead, rv)] with rv the (days,) realised vol, `vol` on every day."""
    lead = np.arange(1, days + 1)
    s = vol * np.sqrt(lead)[:, None, None]
    out = []
    for _ in range(n):
        m = 0.2 + 0.05 * rng.standard_normal((days, *GRID))
        y = m + s * rng.standard_normal((days, *GRID))
        out.append((np.stack([m - half, m, m + half]), y, lead, np.full(days, vol)))
    return out


def test_realised_vol_scale_restores_coverage_where_the_methods_own_band_does_not_follow_the_market():
    # calibration in a calm period (vol 0.01), test in a crisis (vol 0.04), the method's own band fixed: scores in its
    # own half-widths are 4x larger in the test and the calibrated band under-covers; scores in realised vol x
    # sqrt(lead) are exchangeable across the regimes and restore 5% per tail in every lead bin
    rng = np.random.default_rng(5)
    calib = _fixed_band(rng, 12, 60, vol=0.01)
    test = _fixed_band(rng, 40, 60, vol=0.04)
    own = conformal.fit([w[:3] for w in calib], BINS, unit="backfill")
    market = conformal.fit([w[:3] for w in calib], BINS, rv=[w[3] for w in calib], unit="backfill",
                           scale="realised_vol")
    assert market.scale == "realised_vol" and own.scale == "halfwidth"
    rv_of = {id(w[0]): w[3] for w in test}
    got_own = _coverage_by_bin([w[:3] for w in test], lambda q, lead: conformal.apply(own, q, lead))
    got = _coverage_by_bin([w[:3] for w in test], lambda q, lead: conformal.apply(market, q, lead, rv_of[id(q)]))
    for j in range(len(BINS)):
        assert got[j][0] <= 0.07 and got[j][1] <= 0.07 and sum(got[j]) >= 0.03, (j, got[j])
        assert sum(got_own[j]) > 0.3, (j, got_own[j])


def test_realised_vol_scale_hand_case_and_median():
    # one window, one lead bin, scores (y - q50) / (rv sqrt(lead)): 19 days x 1 point -> k = 1 and k' = 19
    lead = np.arange(1, 20)
    rv = np.full(19, 0.1)
    mid = np.full((19, 1, 1), 0.2)
    z = np.linspace(-2.0, 2.5, 19)
    y = mid + (z * 0.1 * np.sqrt(lead))[:, None, None]
    q = np.stack([mid - 0.5, mid, mid + 0.5])                     # the own band plays no part
    cal = conformal.fit([(q, y, lead)], (1,), rv=[rv], scale="realised_vol")
    assert cal.lower[0] == pytest.approx(-2.0) and cal.upper[0] == pytest.approx(2.5)
    out = conformal.apply(cal, q, lead, rv)
    s = (0.1 * np.sqrt(lead))[:, None, None]
    np.testing.assert_allclose(out[0], mid - 2.0 * s)
    np.testing.assert_allclose(out[2], mid + 2.5 * s)
    np.testing.assert_array_equal(out[1], q[1])                   # the median as given
    back = conformal.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.scale == "realised_vol"
    np.testing.assert_allclose(conformal.apply(back, q, lead, rv), out)
    old_record = cal.to_dict()
    del old_record["scale"]                                       # a metrics.json from before the scale existed
    assert conformal.Calibration.from_dict(old_record).scale == "halfwidth"
    with pytest.raises(ValueError, match="scale must be one of"):
        conformal.Calibration.from_dict({**cal.to_dict(), "scale": "vol"})
    # both edges on one side of the median (a biased calibration median): the far tail stays at the median
    up = conformal.fit([(q, mid + (np.abs(z) + 0.1)[:, None, None], lead)], (1,), rv=[rv], scale="realised_vol")
    assert up.lower[0] > 0
    np.testing.assert_array_equal(conformal.apply(up, q, lead, rv)[0], q[1])


def test_realised_vol_scale_errors():
    rng = np.random.default_rng(0)
    w = _fixed_band(rng, 2, 30, vol=0.01)
    with pytest.raises(ValueError, match="scale must be one of halfwidth, realised_vol"):
        conformal.fit([x[:3] for x in w], BINS, scale="vol")
    with pytest.raises(ValueError, match="needs the realised vol of every calibration window"):
        conformal.fit([x[:3] for x in w], BINS, scale="realised_vol")
    with pytest.raises(ValueError, match="realised vol for 10 of its 30"):
        conformal.fit([x[:3] for x in w], BINS, rv=[x[3][:10] for x in w], scale="realised_vol")
    cal = conformal.fit([x[:3] for x in w], BINS, rv=[x[3] for x in w], scale="realised_vol")
    with pytest.raises(ValueError, match="needs the realised vol of the backfilled days"):
        conformal.apply(cal, w[0][0], w[0][2])
    with pytest.raises(ValueError, match="one value per day"):
        conformal.apply(cal, w[0][0], w[0][2], w[0][3][:5])
    with pytest.raises(ValueError, match="not finite"):
        conformal.apply(cal, w[0][0], w[0][2], np.full(30, np.nan))
