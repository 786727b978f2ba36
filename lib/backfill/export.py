"""Labelled backfills: an xarray Dataset (netCDF) and a long table (parquet) addressed by date, grid point and
quantile instead of array indices.

`to_dataset` turns one `generate.Backfill` into a Dataset with dims (date, maturity, moneyness, quantile);
`save_netcdf` / `open_backfill` write and read it (HDF5-based netCDF4 through h5netcdf). `to_long_table` stacks
several methods' forecasts into rows `date, maturity, moneyness, method, quantile, iv`, the project's long input
schema plus `method` and `quantile`, so one method's quantile reads back through `data.load_long`.

Dates: ISO labels become datetime64; days past the end of the data (empty labels) keep their forecast with a NaT
date in the Dataset (so `isel(date=d)` is day d of the Backfill arrays; a `day` coordinate holds the day index)
and are dropped from the long table, which is addressed by date. Data without dates uses integer day indices.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

QUANTILES = [0.05, 0.5, 0.95]
ENGINE = "h5netcdf"        # netCDF4 (HDF5) from PyPI wheels, no system libraries
GRID = ("maturity", "moneyness")


def date_coord(bf) -> np.ndarray:
    """(days,) datetime64[ns] of the labels (NaT where empty), or the integer day indices start + d when the
    labels are day indices (or all empty)."""
    labels = np.asarray(bf.dates).astype(str)
    if len(labels) != bf.days:
        raise ValueError(f"backfill '{bf.name}' has {len(labels)} date labels for {bf.days} days")
    known = labels[labels != ""]
    if all(s.lstrip("-").isdigit() for s in known):
        return bf.start + np.arange(bf.days)
    try:
        return np.array([np.datetime64(s, "ns") if s else np.datetime64("NaT", "ns") for s in labels])
    except ValueError:
        raise ValueError(f"backfill '{bf.name}' has date labels that are neither ISO dates nor day indices "
                         f"(first: '{known[0]}')") from None


def _padded(a, shape) -> np.ndarray:
    """(days_known, ...) or None -> `shape` = (days, ...) float, NaN after the known days."""
    out = np.full(shape, np.nan)
    if a is not None:
        out[:len(a)] = a[:shape[0]]
    return out


def to_dataset(bf, maturities, moneyness, method: str, fingerprint: str = "") -> xr.Dataset:
    """One backfill as a Dataset: iv (date, maturity, moneyness, quantile) the p05/p50/p95 forecast, spread05/95
    the sampling-spread interval, truth and crps (NaN where unknown), sample_p50 (sample, date, maturity,
    moneyness) when samples were kept, segment (date,) the H-day pass; the window's settings as attributes."""
    mat, mon = np.asarray(maturities, float), np.asarray(moneyness, float)
    grid = (bf.days, len(mat), len(mon))
    if bf.p50.shape != grid:
        raise ValueError(f"backfill '{bf.name}' has shape {bf.p50.shape}, expected (days, maturity, moneyness) "
                         f"= {grid}")
    cube = ("date", *GRID)
    data = {"iv": (("date", *GRID, "quantile"), np.stack([bf.p05, bf.p50, bf.p95], axis=-1)),   # (days, m, k, 3)
            "spread05": (cube, bf.spread05), "spread95": (cube, bf.spread95),
            "truth": (cube, _padded(bf.truth, grid)), "crps": (cube, _padded(bf.crps, grid)),
            "segment": (("date",), np.asarray(bf.segment if bf.segment is not None else
                                              np.arange(bf.days) // bf.horizon, dtype=np.int64))}
    if bf.sample_p50 is not None and len(bf.sample_p50):
        data["sample_p50"] = (("sample", *cube), bf.sample_p50)                               # (n_keep, days, m, k)
    attrs = {"method": method, "window": bf.name, "start": int(bf.start), "days": int(bf.days),
             "offset": int(bf.offset), "passes": int(bf.passes), "horizon": int(bf.horizon),
             "n_samples": int(bf.n_samples), "fingerprint": fingerprint}
    if bf.arbitrage_raw is not None:
        attrs["arbitrage_raw"] = float(bf.arbitrage_raw)
    return xr.Dataset(data, coords={"date": date_coord(bf), "day": ("date", bf.start + np.arange(bf.days)),
                                    "maturity": mat, "moneyness": mon, "quantile": QUANTILES},
                      attrs=attrs)


def save_netcdf(ds: xr.Dataset, path) -> Path:
    """Write `ds` as netCDF4 (compressed) atomically (`rundir.atomic_path`): readers never see half a file."""
    from .rundir import atomic_path
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine=ENGINE, encoding={v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
    return Path(path)


def open_backfill(path) -> xr.Dataset:
    """Read a Dataset written by `save_netcdf` into memory (the file is closed on return)."""
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds.load()


def to_long_table(bfs: dict, maturities, moneyness) -> pd.DataFrame:
    """{method: Backfill} -> rows (date, maturity, moneyness, method, quantile, iv), one per dated day, grid point
    and quantile; `date` is datetime64 (integer day index for data without dates)."""
    frames = []
    for method, bf in bfs.items():
        da = to_dataset(bf, maturities, moneyness, method)["iv"]
        if np.issubdtype(da["date"].dtype, np.datetime64):
            da = da.isel(date=~np.isnat(da["date"].values))                # days past the data have no date
        df = da.drop_vars("day").to_dataframe().reset_index()
        frames.append(df.assign(method=method))
    cols = ["date", "maturity", "moneyness", "method", "quantile", "iv"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def save_parquet(df: pd.DataFrame, path) -> Path:
    """Atomically write a long table as parquet (no index)."""
    from .rundir import atomic_write_bytes
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
