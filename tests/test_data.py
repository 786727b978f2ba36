"""Data loading, validation, features, splits, regimes, windows and the default-data cache (docs/design.md §9)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backfill import data, params
from backfill.data import Dataset, DataError

REF_MAT = [1 / 12, 1 / 4, 1 / 2, 1.0, 2.0]
REF_MON = [0.7, 0.85, 1.0, 1.15, 1.3]
MAT6 = np.array([1 / 12, 1 / 6, 1 / 4, 1 / 2, 1.0, 2.0])
MON7 = np.array([0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2])


# --- helpers -----------------------------------------------------------------------------------

def _surface(n, n_mat, n_mon, seed=0):
    rng = np.random.default_rng(seed)
    base = 0.2 + 0.05 * np.arange(n_mat)[:, None] / n_mat + 0.1 * np.abs(np.arange(n_mon) - n_mon // 2)[None, :] / n_mon
    return base[None] + 0.02 * rng.random((n, n_mat, n_mon))


def _ds(n=40, n_mat=5, n_mon=5, dates=True, **kw) -> Dataset:
    rng = np.random.default_rng(1)
    d = np.datetime64("2020-01-01") + np.arange(n) if dates else None
    mat = np.array(REF_MAT) if n_mat == 5 else np.linspace(0.1, 2.0, n_mat)
    mon = np.array(REF_MON) if n_mon == 5 else np.linspace(0.7, 1.3, n_mon)
    args = dict(surface=_surface(n, n_mat, n_mon), ret=0.01 * rng.standard_normal(n), dates=d,
                maturities=mat, moneyness=mon)
    args.update(kw)
    return Dataset(**args)


def _bad(ds, *words, min_len=1):
    with pytest.raises(DataError) as ei:
        data.validate(ds, min_len=min_len)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _load_bad(path, *words, **kw):
    with pytest.raises(DataError) as ei:
        data.load(str(path), **kw)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


@pytest.fixture(scope="module")
def default_ds(test_dataset):
    return test_dataset                     # the embedded default data (conftest)


@pytest.fixture(scope="module")
def full_p():
    return params.load(params.profile_path("full"))


# --- 1. validation: one clear error per bad-input class ----------------------------------------

def test_synthetic_dataset_is_valid():
    ds = _ds()
    assert data.validate(ds) is ds


def test_nan_in_surface():
    ds = _ds()
    ds.surface[7, 2, 3] = np.nan
    _bad(ds, "surface", "NaN", "2020-01-08")


def test_inf_in_ret():
    ds = _ds()
    ds.ret[5] = np.inf
    _bad(ds, "ret", "inf", "2020-01-06")


def test_vol_not_positive():
    ds = _ds()
    ds.surface[3, 0, 0] = 0.0
    _bad(ds, "outside (0, 5]", "2020-01-04")


def test_vol_above_five():
    ds = _ds()
    ds.surface[4, 1, 1] = 20.0                # a percentage, not a decimal
    _bad(ds, "outside (0, 5]", "decimals", "20")


def test_surface_ret_length_mismatch():
    ds = _ds()
    ds.ret = ds.ret[:-3]
    _bad(ds, "ret", "37", "40 days")


def test_surface_not_3d():
    ds = _ds()
    ds.surface = ds.surface.reshape(40, 25)
    _bad(ds, "surface must have shape", "(40, 25)")


def test_maturities_count_mismatch():
    ds = _ds(maturities=np.array([0.25, 0.5, 1.0, 2.0]))
    _bad(ds, "maturities has 4 values", "5 maturity rows")


def test_moneyness_count_mismatch():
    ds = _ds(moneyness=np.array([0.8, 0.9, 1.0, 1.1, 1.2, 1.3]))
    _bad(ds, "moneyness has 6 values", "5 moneyness columns")


def test_unsorted_maturities():
    ds = _ds(maturities=np.array([1 / 12, 1 / 2, 1 / 4, 1.0, 2.0]))
    _bad(ds, "maturities", "strictly increasing")


def test_unsorted_moneyness():
    ds = _ds(moneyness=np.array([0.7, 1.0, 0.85, 1.15, 1.3]))
    _bad(ds, "moneyness", "strictly increasing")


def test_duplicate_dates():
    ds = _ds()
    ds.dates[10] = ds.dates[9]
    _bad(ds, "duplicate date", "2020-01-10")


def test_series_too_short():
    ds = _ds(n=40)
    data.validate(ds, min_len=40)
    _bad(ds, "too short", "40 days", "41 days", min_len=41)


def test_npz_missing_ret(tmp_path):
    path = _npz(tmp_path, surface=_surface(20, 5, 5))
    _load_bad(path, "'ret'", "surface")


def test_npz_non_reference_grid_without_axes(tmp_path):
    path = _npz(tmp_path, surface=_surface(20, 4, 6), ret=np.zeros(20))
    _load_bad(path, "4x6", "maturities", "moneyness")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("1,2,3\n")
    _load_bad(path, "unsupported", ".txt")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    _load_bad(path, "not found", str(path))


def test_truncated_npz_is_a_data_error(tmp_path):
    good = _npz(tmp_path, "good.npz", surface=_surface(50, 5, 5), ret=np.zeros(50))
    blob = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(blob[: len(blob) // 2])
    _load_bad(bad, str(bad))


# --- 2. the public reference layout ------------------------------------------------------------

def test_reference_layout_npz(tmp_path):
    n = 30
    s = _surface(n, 5, 5, seed=3)
    ret = np.random.default_rng(4).normal(0, 0.01, n)
    skews = 0.5 * (s[:, 3, 1] + s[:, 3, 3]) - s[:, 3, 2]
    slopes = s[:, 4, 2] - s[:, 1, 2]
    path = _npz(tmp_path, surface=s, ret=ret, price=100 * np.exp(np.cumsum(ret)), skews=skews,
                slopes=slopes, levels=s[:, :, 2].mean(axis=1))
    ds = data.load(str(path))
    np.testing.assert_allclose(ds.maturities, REF_MAT)
    np.testing.assert_allclose(ds.moneyness, REF_MON)
    assert ds.dates is None
    np.testing.assert_array_equal(ds.day_labels(), np.arange(n))
    np.testing.assert_array_equal(ds.surface, s)
    f = ds.features()
    assert f.shape == (n, 3)
    np.testing.assert_allclose(f[:, 0], ret, rtol=1e-6, atol=1e-9)
    hand_skew = np.mean([s[:, 3, 1], s[:, 3, 3]], axis=0) - s[:, 3, 2]
    hand_slope = s[:, 4, 2] - s[:, 1, 2]
    np.testing.assert_allclose(f[:, 1], hand_skew, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(f[:, 2], hand_slope, rtol=1e-5, atol=1e-7)
    # and on this grid they are the reference file's own skews/slopes
    np.testing.assert_allclose(f[:, 1], skews, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(f[:, 2], slopes, rtol=1e-5, atol=1e-7)
    assert np.abs(hand_skew).max() > 1e-3 and np.abs(hand_slope).max() > 1e-3   # not trivially 0


def test_integer_index_data_cannot_be_located_by_date():
    ds = _ds(dates=False)
    assert ds.index_of(3) == 3
    with pytest.raises(DataError, match="no dates"):
        ds.index_of("2020-01-05")


# --- 3. a 6x7 grid -----------------------------------------------------------------------------

def test_6x7_grid_npz_features(tmp_path):
    n = 25
    s = _surface(n, 6, 7, seed=5)
    s += 0.01 * np.arange(6)[None, :, None] * np.arange(7)[None, None, :]   # break symmetries
    ret = np.random.default_rng(6).normal(0, 0.01, n)
    dates = (np.datetime64("2021-03-01") + np.arange(n)).astype(str)
    path = _npz(tmp_path, surface=s, ret=ret, dates=dates, maturities=MAT6, moneyness=MON7)
    ds = data.load(str(path))
    assert ds.grid == (6, 7)
    assert ds.day_labels()[0] == "2021-03-01" and ds.day_labels()[-1] == dates[-1]
    f = ds.features()
    assert f.shape == (n, 3)
    # hand-picked indices: ATM column 3 (1.0), neighbours 2 and 4; ~1y row 4; ~3m row 2; last row 5
    assert data.feature_indices(MAT6, MON7) == {"atm": 3, "lo": 2, "hi": 4, "m1y": 4, "m3m": 2, "mlast": 5}
    np.testing.assert_allclose(f[:, 0], ret, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(f[:, 1], 0.5 * (s[:, 4, 2] + s[:, 4, 4]) - s[:, 4, 3], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(f[:, 2], s[:, 5, 3] - s[:, 2, 3], rtol=1e-5, atol=1e-7)


# --- 4. long CSV / parquet ---------------------------------------------------------------------

def _long_tables(n=12):
    s = _surface(n, 6, 7, seed=7)
    ret = np.random.default_rng(8).normal(0, 0.01, n)
    dates = (np.datetime64("2022-01-03") + np.arange(n)).astype(str)
    rows = [(dates[t], MAT6[i], MON7[j], s[t, i, j]) for t in range(n) for i in range(6) for j in range(7)]
    long = pd.DataFrame(rows, columns=["date", "maturity", "moneyness", "iv"])
    long = long.sample(frac=1.0, random_state=0).reset_index(drop=True)    # order must not matter
    rets = pd.DataFrame({"date": dates, "return": ret})
    return s, ret, dates, long, rets


def _assert_same(a: Dataset, b: Dataset):
    np.testing.assert_allclose(a.surface, b.surface, rtol=1e-12)
    np.testing.assert_allclose(a.ret, b.ret, rtol=1e-12)
    np.testing.assert_array_equal(a.dates, b.dates)
    np.testing.assert_allclose(a.maturities, b.maturities, rtol=1e-12)
    np.testing.assert_allclose(a.moneyness, b.moneyness, rtol=1e-12)


def _write_long(tmp_path, fmt, long, rets):
    """The long surface table and the returns table as iv.<fmt> and ret.<fmt> (csv or parquet): their paths."""
    surf_path, ret_path = tmp_path / f"iv.{fmt}", tmp_path / f"ret.{fmt}"
    if fmt == "csv":
        long.to_csv(surf_path, index=False)
        rets.to_csv(ret_path, index=False)
    else:
        long.assign(date=pd.to_datetime(long["date"])).to_parquet(surf_path, index=False)
        rets.assign(date=pd.to_datetime(rets["date"])).to_parquet(ret_path, index=False)
    return surf_path, ret_path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_table_equals_npz(tmp_path, fmt):
    s, ret, dates, long, rets = _long_tables()
    ref = data.load(str(_npz(tmp_path, surface=s, ret=ret, dates=dates, maturities=MAT6, moneyness=MON7)))
    surf_path, ret_path = _write_long(tmp_path, fmt, long, rets)
    ds = data.load(str(surf_path), returns_path=str(ret_path))
    _assert_same(ds, ref)
    np.testing.assert_allclose(ds.features(), ref.features(), rtol=1e-6)


def test_long_table_missing_iv(tmp_path):
    _, _, _, long, rets = _long_tables()
    long.drop(columns="iv").to_csv(tmp_path / "iv.csv", index=False)
    rets.to_csv(tmp_path / "ret.csv", index=False)
    _load_bad(tmp_path / "iv.csv", "iv", "lacks column", returns_path=str(tmp_path / "ret.csv"))


def test_long_table_duplicate_row(tmp_path):
    _, _, _, long, rets = _long_tables()
    long = pd.concat([long, long.iloc[[5]]], ignore_index=True)
    long.to_csv(tmp_path / "iv.csv", index=False)
    rets.to_csv(tmp_path / "ret.csv", index=False)
    row = long.iloc[5]
    _load_bad(tmp_path / "iv.csv", "duplicate row", str(row["date"]), returns_path=str(tmp_path / "ret.csv"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_table_gaps_name_what_is_missing_and_where(tmp_path, fmt):
    """A missing row, a non-rectangular grid and a returns table shorter than the surfaces all read as 'N NaN/inf
    values' of the surface file; each now says what it is and names the right file."""
    _, _, dates, long, rets = _long_tables()

    def load(lg, rt):
        surf, ret = _write_long(tmp_path, fmt, lg, rt)
        return lambda *words: _load_bad(surf, *words, returns_path=str(ret))

    gone = (long["date"] == dates[3]) & (long["maturity"] == MAT6[2]) & (long["moneyness"] == MON7[4])
    msg = load(long[~gone], rets)(f"iv.{fmt} has no row for date {dates[3]}, maturity 0.25, moneyness 1.05",
                                   "1 rows missing on 1 of 12 dates")
    assert "NaN" not in msg
    pair = (long["maturity"] == MAT6[0]) & (long["moneyness"] == MON7[0])
    load(long[~pair], rets)(f"iv.{fmt}: the grid is not rectangular: no date has a row for maturity 0.0833333, "
                            f"moneyness 0.8", "1 of the 6x7")
    msg = load(long, rets.iloc[:-3])(f"returns table {tmp_path / f'ret.{fmt}'} has no return for 3 surface dates "
                                     f"(first {dates[-3]})")
    assert f"iv.{fmt}" not in msg
    load(long, rets.assign(**{"return": rets["return"].where(rets.index != 5)}))(
        f"returns table {tmp_path / f'ret.{fmt}'} has 1 NaN/inf returns (first on {dates[5]})")


def test_long_table_without_returns_path(tmp_path):
    _, _, _, long, _ = _long_tables()
    long.to_csv(tmp_path / "iv.csv", index=False)
    _load_bad(tmp_path / "iv.csv", "data.returns_path")


# --- 5. splits ---------------------------------------------------------------------------------

def test_date_splits_full_profile(default_ds, full_p):
    ds = default_ds
    assert str(ds.dates[0]) == "1999-01-05" and str(ds.dates[-1]) == "2018-12-31"
    sp = data.splits(ds, full_p)
    (t0, t1), (v0, v1), (s0, s1) = sp["train"], sp["val"], sp["test"]
    assert t0 < t1 == v0 < v1 <= s0 < s1 == ds.n_days
    assert ds.dates[t1 - 1] < ds.dates[v0]
    assert str(ds.dates[t0]) == "2000-01-03" and str(ds.dates[t0 - 1]).startswith("1999")
    assert str(ds.dates[v1 - 1]).startswith("2013") and str(ds.dates[v1]).startswith("2014")
    span = v1 - t0
    assert abs((v1 - v0) - 0.2 * span) <= 1
    # test starts on the first trading day of 2014
    assert str(ds.dates[s0]) == "2014-01-02" and str(ds.dates[s0 - 1]).startswith("2013")


def test_index_splits(default_ds, full_p):
    p = {**full_p, "data": {**full_p["data"], "split_by": "index", "train": [1000, 5000],
                            "test": [5001, default_ds.n_days - 1]}}
    p = params.validate(p)
    sp = data.splits(default_ds, p)
    # n = 4001 days, n_val = round(4001 * 0.2) = 800
    assert sp["train"] == (1000, 4201)
    assert sp["val"] == (4201, 5001)
    assert sp["test"] == (5001, default_ds.n_days)


def test_index_split_outside_data(default_ds, full_p):
    p = {**full_p, "data": {**full_p["data"], "split_by": "index", "train": [1000, 5000],
                            "test": [5001, default_ds.n_days + 10]}}
    with pytest.raises(DataError, match="data.test"):
        data.splits(default_ds, params.validate(p))


# --- 6. windows --------------------------------------------------------------------------------

def test_ewma_vol_hand_case():
    # RiskMetrics (lambda 0.94): constant returns: s2 stays r^2, RV = sqrt(252) |r|; then zero returns: s2 decays by
    # lambda per day
    r = np.r_[np.full(20, 0.01), np.zeros(3)]
    rv = data.ewma_vol(r, data.RISKMETRICS_HALFLIFE)
    np.testing.assert_allclose(rv[:20], math.sqrt(252) * 0.01)
    np.testing.assert_allclose(rv[20:], np.sqrt(252 * 1e-4 * 0.94 ** np.arange(1, 4)))
    # the start: mean square of the first `warmup` days, then one update with r_0
    r2 = np.r_[0.02, np.zeros(19)]
    s2_0 = 0.94 * (0.02**2 / 20) + 0.06 * 0.02**2
    assert data.ewma_vol(r2, data.RISKMETRICS_HALFLIFE)[0] == pytest.approx(math.sqrt(252 * s2_0))


def test_one_ewma_vol_is_riskmetrics_at_its_half_life(default_ds):
    """data.ewma_vol is the package's one EWMA vol: RiskMetrics' daily decay 0.94 is a half-life of
    log(0.5) / log(0.94) days, and at it the lfilter recursion equals the textbook loop on the real returns."""
    from backfill import metrics
    assert data.RISKMETRICS_HALFLIFE == pytest.approx(11.2023, abs=1e-4)
    assert 0.5 ** (1 / data.RISKMETRICS_HALFLIFE) == pytest.approx(0.94, abs=1e-15)
    r = default_ds.ret
    s2, prev = np.empty_like(r), np.mean(r[:20] ** 2)
    for t, x in enumerate(r):
        prev = 0.94 * prev + (1 - 0.94) * x * x
        s2[t] = prev
    rv = data.ewma_vol(r, data.RISKMETRICS_HALFLIFE)
    np.testing.assert_allclose(rv, np.sqrt(252 * s2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("L", [61, 150, 240, 330])
def test_window_counts(L):
    # Every start t with t + L <= 4001 gives a window: 4001 - L + 1 of them. (The plan's table 3
    # reports 3,940 / 3,851 / 3,761 / 3,671 = 4001 - L, one fewer: an off-by-one in the plan.)
    w = data.window_starts((0, 4001), L)
    assert len(w) == 4001 - L + 1
    assert w[0] == 0 and w[-1] + L == 4001
    w = data.window_starts((1000, 5001), L)
    assert len(w) == 4001 - L + 1 and w[0] == 1000 and w[-1] + L == 5001


def test_window_starts_span_shorter_than_window():
    assert len(data.window_starts((10, 20), 11)) == 0
    assert list(data.window_starts((10, 20), 10)) == [10]


def test_phase_window_lengths_full(full_p):
    assert data.phase_window_lengths(full_p) == {"phase1": 61, "phase2": 150, "phase3": 240, "phase4": 330}


# --- 7. regimes --------------------------------------------------------------------------------

def test_crisis_regime(default_ds, full_p):
    ds = default_ds
    m = data.crisis_mask(ds, full_p)
    spells = data.regime_spells(m)
    assert len(spells) == 1
    c0, c1 = spells[0]
    assert str(ds.dates[c0]) == "2008-01-02" and str(ds.dates[c0 - 1]).startswith("2007")
    assert str(ds.dates[c1 - 1]).startswith("2010") and str(ds.dates[c1]).startswith("2011")
    assert str(ds.dates[c1 - 1]) == "2010-12-31"
    assert m.sum() == c1 - c0
    # the rest is 'normal': two spells, before and after
    assert data.regime_spells(~m) == [(0, c0), (c1, ds.n_days)]


def test_regime_spells_edges():
    assert data.regime_spells(np.array([True, True, False, True, False, False, True])) == [(0, 2), (3, 4), (6, 7)]
    assert data.regime_spells(np.zeros(4, bool)) == []


# --- 8. the default-dataset cache --------------------------------------------------------------

def test_default_cache_written_and_corrupt_cache_rebuilt(tmp_path, default_ds):
    cache = tmp_path / "default_v2.npz"
    cache.write_bytes(b"this is not an npz file \x00\x01\x02" * 64)       # a corrupted cache
    ds = data.load_default(cache_dir=tmp_path)                           # rebuilt, not trusted
    assert cache.exists() and cache.stat().st_size > 100_000
    assert not list(tmp_path.glob("*.tmp*"))
    data.validate(ds)
    with np.load(cache) as z:
        assert {"surface", "ret", "dates", "maturities", "moneyness"} <= set(z.files)
    again = data.load_default(cache_dir=tmp_path)                        # now read from the cache
    assert "cached" in again.source
    _assert_same(again, ds)
    # deterministic: the same data as the shared cache the rest of the suite uses
    _assert_same(ds, default_ds)
    assert data.fingerprint(ds) == data.fingerprint(default_ds)


def test_truncated_default_cache_is_rebuilt(tmp_path, default_ds):
    # a cache cut short (an interrupted copy/sync): fails fast today, so this test stays cheap
    good = tmp_path / "src.npz"
    np.savez(good, surface=default_ds.surface, ret=default_ds.ret)
    blob = good.read_bytes()
    (tmp_path / "default_v2.npz").write_bytes(blob[: len(blob) // 2])
    ds = data.load_default(cache_dir=tmp_path)
    _assert_same(ds, default_ds)


def test_an_unwritable_cache_dir_is_one_line(tmp_path):
    """A cache_dir under a regular file (or read-only) was a NotADirectoryError traceback; now one line naming the
    cache, before the dataset is built."""
    import os
    import subprocess
    import sys
    (tmp_path / "file").write_text("x")
    for cache in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(DataError) as ei:
            data.load_default(cache_dir=cache, grid={"maturities": [0.5, 1.0], "moneyness": [0.9, 1.0, 1.1]})
        msg = str(ei.value)
        assert "\n" not in msg and "cannot write the default dataset's cache" in msg and str(cache) in msg, msg
    res = subprocess.run([sys.executable, "-m", "backfill", "run", str(params.profile_path("test")), "--run-dir",
                          str(tmp_path / "run"), "--set", f"data.cache_dir={tmp_path / 'file' / 'sub'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "data.cache_dir" in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()
    if os.geteuid() != 0:                                        # root writes into a read-only directory
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(DataError, match="cannot write the default dataset's cache"):
            data.load_default(cache_dir=tmp_path / "ro", grid={"maturities": [0.5, 1.0], "moneyness": [0.9, 1.0, 1.1]})


# --- 6. inputs that used to fail late or unclearly ----------------------------------------------

def test_random_bytes_are_not_an_npz(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    msg = _load_bad(path, "not an .npz archive", str(path))
    assert "dates as strings" not in msg


def test_non_numeric_iv_in_a_csv_is_one_line(tmp_path):
    _, _, _, long, rets = _long_tables()
    long["iv"] = long["iv"].astype(object)
    long.loc[17, "iv"] = "n.a."
    long.to_csv(tmp_path / "iv.csv", index=False)
    rets.to_csv(tmp_path / "ret.csv", index=False)
    _load_bad(tmp_path / "iv.csv", "column 'iv'", "'n.a.'", "row 18", returns_path=str(tmp_path / "ret.csv"))


def test_an_unreadable_parquet_is_one_line(tmp_path):
    (tmp_path / "iv.parquet").write_bytes(b"not parquet at all")
    _, _, _, _, rets = _long_tables()
    rets.to_csv(tmp_path / "ret.csv", index=False)
    _load_bad(tmp_path / "iv.parquet", "cannot read", "iv.parquet", returns_path=str(tmp_path / "ret.csv"))


def test_window_dates_on_data_without_dates_fail_at_load(tmp_path):
    import yaml
    from backfill import params
    n = 700
    path = _npz(tmp_path, surface=_surface(n, 5, 5), ret=np.random.default_rng(2).normal(0, 0.01, n))
    p = yaml.safe_load(params.profile_path("test").read_text())
    p["data"].update(source=str(path), split_by="index", train=[0, 399], test=[400, 699], crisis=[100, 200])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(DataError, match=r"generation.windows.crisis is a date \(2008-06-02\) but the data has no dates"):
        data.load_for(params.load(tmp_path / "p.yaml"))
    p["generation"]["windows"] = {"early": 450, "late": 650}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(p))
    assert data.load_for(params.load(tmp_path / "p.yaml")).dates is None


def test_named_windows_are_checked_at_load(tmp_path):
    """Every named window needs its context before it and its whole backfill inside the data, and one must start in
    the test split (the headline is out of sample): one line naming the key, before any training."""
    import yaml
    from backfill import params
    n = 700
    path = _npz(tmp_path, surface=_surface(n, 5, 5), ret=np.random.default_rng(2).normal(0, 0.01, n))
    p = yaml.safe_load(params.profile_path("test").read_text())
    p["data"].update(source=str(path), split_by="index", train=[0, 399], test=[400, 699], crisis=[100, 200])
    for windows, msg in (({"early": 5, "late": 650}, r"generation.windows.early \(5\) has 5 days of history before it, "
                                                     r"fewer than the 10 context days"),
                         ({"late": 690}, r"generation.windows.late \(690\): its 25-day backfill .* runs past the last day"),
                         ({"early": 300}, r"generation.windows: none starts in the test split \(400..699\)"),
                         ({"gone": 900}, r"generation.windows.gone: day index 900 is outside the data"),
                         ({"late": 650, "short": 400}, None)):
        p["generation"]["windows"] = windows
        if msg is None:                                          # a test split shorter than one backfill
            p["data"]["test"], msg = [680, 699], r"data.test: the test split \(680..699\) has 20 days, fewer than one 25-day"
            p["generation"]["windows"] = {"late": 670}
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(p))
        with pytest.raises(DataError, match=msg):
            data.load_for(params.load(tmp_path / "p.yaml"))
    for name in ("smoke", "regime_shift", "short_history", "full", "full_working", "smoke_plan", "test"):
        q = params.load(params.profile_path(name))
        ds = data.load_for(q)                                   # every committed profile has a test-split window
        a, b = data.splits(ds, q)["test"]
        assert any(a <= ds.index_of(w) < b for w in q["generation"]["windows"].values()), name


def test_the_surfaces_select_by_label(test_dataset):
    ds = test_dataset
    iv = ds.to_xarray()
    d = ds.index_of("2008-10-10")
    i, j = list(ds.maturities).index(1.0), list(ds.moneyness).index(0.85)
    assert iv.sel(date="2008-10-10", maturity=1.0, moneyness=0.85).item() == ds.surface[d, i, j]
    assert iv.dims == ("date", "maturity", "moneyness") and iv.shape == ds.surface.shape
