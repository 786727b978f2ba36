"""Labelled backfills: the xarray Dataset (selection by date, grid point and quantile), its netCDF round trip, and
the long table that reads back through `data.load_long`. Backfill objects built by hand from small arrays."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backfill import data, export, generate

ROOT = Path(__file__).resolve().parents[1]
MAT, MON = data.REFERENCE_MATURITIES, data.REFERENCE_MONEYNESS
DATES = pd.bdate_range("2016-03-01", periods=252).strftime("%Y-%m-%d").to_numpy()


def _bf(days=252, dates=None, known=None, n_keep=4, start=4315, seed=0, name="out_of_sample"):
    """A Backfill on the 5x5 reference grid with random ordered quantiles; `known` days of truth."""
    rng = np.random.default_rng(seed)
    grid = (days, len(MAT), len(MON))
    p50 = 0.2 + 0.05 * rng.random(grid)
    p05, p95 = p50 - 0.02 * rng.random(grid), p50 + 0.02 * rng.random(grid)
    known = days if known is None else known
    return generate.Backfill(
        name=name, start=start, days=days, horizon=90, offset=90, passes=3, n_samples=100,
        dates=DATES[:days] if dates is None else dates, p05=p05, p50=p50, p95=p95, spread05=p50 - 0.01,
        spread95=p50 + 0.01, sample_p50=rng.random((n_keep, *grid)).astype(np.float32),
        truth=p50[:known] + 0.01 if known else None, segment=np.arange(days) // 90,
        crps=np.full((known, *grid[1:]), 0.003) if known else None, arbitrage_raw=0.0)


def test_select_by_label_matches_index_arithmetic():
    bf = _bf()
    ds = export.to_dataset(bf, MAT, MON, "vae_o90", fingerprint="abc123")
    # "the p95 of the 1-year backfill at maturity 1y, moneyness 0.85 on 2016-06-15"
    got = ds["iv"].sel(date="2016-06-15", maturity=1.0, moneyness=0.85, quantile=0.95).item()
    d, i, j = list(DATES).index("2016-06-15"), list(MAT).index(1.0), list(MON).index(0.85)
    assert got == bf.p95[d, i, j]
    assert ds["iv"].sel(date="2016-06-15", maturity=1 / 12, moneyness=1.3, quantile=0.05).item() == bf.p05[d, 0, 4]
    assert ds["truth"].sel(date="2016-06-15", maturity=1.0, moneyness=0.85).item() == bf.truth[d, i, j]
    assert ds["sample_p50"].sel(date="2016-06-15", maturity=1.0, moneyness=0.85)[2].item() == bf.sample_p50[2, d, i, j]
    assert ds["segment"].sel(date="2016-06-15").item() == bf.segment[d] and ds["day"][d].item() == bf.start + d
    np.testing.assert_array_equal(ds["iv"].sel(quantile=0.5).values, bf.p50)   # (date, maturity, moneyness)
    assert ds["iv"].dims == ("date", "maturity", "moneyness", "quantile")
    assert ds["date"].dtype == np.dtype("datetime64[ns]") and ds["quantile"].values.tolist() == [0.05, 0.5, 0.95]
    assert ds.attrs == {"method": "vae_o90", "window": "out_of_sample", "start": 4315, "days": 252, "offset": 90,
                        "passes": 3, "horizon": 90, "n_samples": 100, "fingerprint": "abc123",
                        "arbitrage_raw": 0.0}


def test_days_past_the_data_keep_their_forecast_with_no_date():
    days, known = 30, 20
    bf = _bf(days, dates=np.array([*DATES[:known], *[""] * (days - known)]), known=known)
    ds = export.to_dataset(bf, MAT, MON, "vae_o90")
    assert np.isnat(ds["date"].values).tolist() == [False] * known + [True] * (days - known)
    np.testing.assert_array_equal(ds["iv"].isel(date=25).values[..., 2], bf.p95[25])   # day d is isel(date=d)
    assert np.isnan(ds["truth"].values[known:]).all() and np.isnan(ds["crps"].values[known:]).all()
    np.testing.assert_array_equal(ds["truth"].values[:known], bf.truth)
    assert ds["iv"].sel(date=DATES[5], maturity=2.0, moneyness=1.0, quantile=0.5).item() == bf.p50[5, 4, 2]
    long = export.to_long_table({"vae_o90": bf}, MAT, MON)
    assert long["date"].nunique() == known and len(long) == known * 25 * 3


def test_integer_day_index_and_no_samples_or_truth():
    start, days = 100, 12
    labels = np.array([*map(str, range(start, start + 9)), "", "", ""])   # as `backfill` builds them
    bf = _bf(days, dates=labels, known=0, n_keep=0, start=start)
    ds = export.to_dataset(bf, MAT, MON, "vae_o45")
    assert ds["date"].values.tolist() == list(range(start, start + days))
    assert ds["iv"].sel(date=start + 10, maturity=0.25, moneyness=0.7, quantile=0.95).item() == bf.p95[10, 1, 0]
    assert "sample_p50" not in ds and "sample" not in ds.dims
    assert np.isnan(ds["truth"].values).all() and np.isnan(ds["crps"].values).all()
    long = export.to_long_table({"vae_o45": bf}, MAT, MON)
    assert long["date"].tolist()[:1] == [start] and long["date"].nunique() == days


def test_npz_round_trip_gives_the_same_dataset(tmp_path):
    bf = _bf(20, dates=np.array([*DATES[:15], *[""] * 5]), known=15)
    bf.save(tmp_path / "w.npz", MAT, MON)
    again = export.to_dataset(generate.load_backfill(tmp_path / "w.npz"), MAT, MON, "vae_o90")
    assert again.identical(export.to_dataset(bf, MAT, MON, "vae_o90"))


def test_bad_labels_and_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match="neither ISO dates nor day indices"):
        export.to_dataset(_bf(3, dates=np.array(["2016-03-01", "soon", ""])), MAT, MON, "m")
    with pytest.raises(ValueError, match=r"has shape \(3, 5, 5\), expected"):
        export.to_dataset(_bf(3), MAT[:4], MON, "m")


def test_netcdf_round_trip_is_atomic_hdf5(tmp_path):
    ds = export.to_dataset(_bf(40, dates=np.array([*DATES[:35], *[""] * 5]), known=30), MAT, MON, "vae_o90", "fp")
    path = tmp_path / "sub" / "w.nc"
    assert export.save_netcdf(ds, path) == path
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"                # netCDF4 = HDF5, not the netCDF3 fallback
    back = export.open_backfill(path)
    assert back.identical(ds) and back.attrs["fingerprint"] == "fp"
    assert back["iv"].sel(date="2016-03-08", maturity=1.0, moneyness=0.85, quantile=0.95).item() == \
        ds["iv"].sel(date="2016-03-08", maturity=1.0, moneyness=0.85, quantile=0.95).item()
    export.save_netcdf(ds.assign_attrs(window="again"), path)               # replaces the file in place
    assert export.open_backfill(path).attrs["window"] == "again"
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.nc"]       # no temporary files left


def test_long_table_reads_back_through_load_long(tmp_path):
    bfs = {"vae_o90": _bf(seed=1), "econometric": _bf(seed=2)}
    long = export.to_long_table(bfs, MAT, MON)
    assert list(long.columns) == ["date", "maturity", "moneyness", "method", "quantile", "iv"]
    assert len(long) == 2 * 252 * 25 * 3 and set(long["method"]) == set(bfs)
    path = export.save_parquet(long, tmp_path / "backfills.parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, long, check_dtype=False)
    one = back[(back["method"] == "vae_o90") & (back["quantile"] == 0.95)].drop(columns=["method", "quantile"])
    one.to_parquet(tmp_path / "p95.parquet", index=False)
    pd.DataFrame({"date": pd.to_datetime(DATES), "return": 0.0}).to_parquet(tmp_path / "ret.parquet", index=False)
    ds = data.validate(data.load_long(tmp_path / "p95.parquet", tmp_path / "ret.parquet"))
    np.testing.assert_array_equal(ds.surface, bfs["vae_o90"].p95)
    np.testing.assert_array_equal(ds.day_labels(), DATES)
    np.testing.assert_array_equal(ds.maturities, MAT) and np.testing.assert_array_equal(ds.moneyness, MON)
    one.to_csv(tmp_path / "p95.csv", index=False)                          # and as the long CSV input
    pd.DataFrame({"date": DATES, "return": 0.0}).to_csv(tmp_path / "ret.csv", index=False)
    np.testing.assert_allclose(data.load_long(tmp_path / "p95.csv", tmp_path / "ret.csv").surface,
                               bfs["vae_o90"].p95, rtol=1e-15)


def _label_a_real_backfill(path, tmp_path):
    bf, z = generate.load_backfill(path), np.load(path)
    ds = export.to_dataset(bf, z["maturities"], z["moneyness"], "vae_o90")
    d = min(100, bf.days - 1)
    i, j = int(np.argmin(np.abs(z["maturities"] - 1.0))), int(np.argmin(np.abs(z["moneyness"] - 0.85)))
    sel = ds["iv"].sel(maturity=1.0, moneyness=0.85, method="nearest").sel(quantile=0.95).isel(date=d)
    assert sel.item() == bf.p95[d, i, j]
    assert export.open_backfill(export.save_netcdf(ds, tmp_path / "w.nc")).identical(ds)


@pytest.mark.slow
def test_a_finished_runs_backfill(finished_run, tmp_path):
    _label_a_real_backfill(finished_run / "backfill" / "out_of_sample_o9.npz", tmp_path)


@pytest.mark.skipif(not (ROOT / "runs/smoke/backfill/out_of_sample_o90.npz").exists(), reason="no runs/smoke")
def test_a_real_smoke_backfill(tmp_path):
    _label_a_real_backfill(ROOT / "runs/smoke/backfill/out_of_sample_o90.npz", tmp_path)


def test_fan_charts_select_their_grid_points_by_label():
    """report.key_points names grid points by their labels, and report.fan_chart plots what `sel` picks there."""
    from backfill import report
    pts = report.key_points(MAT, MON)
    assert pts["ATM 1-year"] == {"maturity": 1.0, "moneyness": 1.0}
    assert pts["deep OTM put (3-month)"] == {"maturity": 0.25, "moneyness": min(MON)}
    assert pts["ATM 1-month"]["maturity"] == pytest.approx(1 / 12)
    bf = _bf(known=200)
    fig = report.fan_chart(export.to_dataset(bf, MAT, MON, "vae_o90").sel(**pts["ATM 1-year"]))
    i, j = list(MAT).index(1.0), list(MON).index(1.0)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_array_equal(by_name["forecast (mean p50)"].y, bf.p50[:, i, j])
    np.testing.assert_array_equal(by_name["truth"].y[:200], bf.truth[:, i, j])
    assert np.isnan(by_name["truth"].y[200:]).all()
    assert len(fig.layout.shapes) == 2                          # the boundaries of passes 2 and 3
    assert "T=1y, K/S=1.00" in fig.layout.title.text
