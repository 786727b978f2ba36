"""Implied-volatility surface data: loading, validation, features, splits and training windows.

A dataset is a daily series of surfaces on a (maturity x moneyness) grid plus the underlying's log
return. Nothing here assumes a 5x5 grid. Three sources load into the same `Dataset`:
an `.npz` (including the public reference layout `surface, ret, price, skews, slopes, levels`), a long
CSV/parquet (`date, maturity, moneyness, iv` plus a `date, return` table), or the embedded
market-calibrated default (`embedded_data.make_default_arrays`, cached on disk).
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_MATURITIES = np.array([1 / 12, 1 / 4, 1 / 2, 1.0, 2.0])
REFERENCE_MONEYNESS = np.array([0.7, 0.85, 1.0, 1.15, 1.3])
DEFAULT_CACHE_VERSION = "v2"   # v2: the VRP, slope and skew factors of issue 15; bump on every change to the data

# The columns of `Dataset.features`, named once: the return, the surface's skew and slope, then one log realised vol
# per half-life (model.rv_halflives) from column RV on.
FEATURES = ("return", "skew", "slope")
RET, SKEW, SLOPE, RV = 0, 1, 2, 3


class DataError(ValueError):
    """An invalid dataset; the message names the problem in one line."""


@dataclass
class Dataset:
    surface: np.ndarray      # (N, n_mat, n_mon) implied vols, decimals
    ret: np.ndarray          # (N,) daily log returns
    dates: np.ndarray        # (N,) datetime64[D], or None for an integer day index
    maturities: np.ndarray   # (n_mat,) years, increasing
    moneyness: np.ndarray    # (n_mon,) K/S, increasing
    source: str = ""

    @property
    def n_days(self) -> int:
        return len(self.ret)

    @property
    def grid(self) -> tuple[int, int]:
        return self.surface.shape[1], self.surface.shape[2]

    def features(self, rv_halflives=()) -> np.ndarray:
        """(N, 3 + len(rv_halflives)) extra features per day: [return, skew, slope, log RV_h ...] (columns RET, SKEW,
        SLOPE, RV...), RV_h the causal EWMA realised vol of the returns with a half-life of h days (known at each
        day's close)."""
        skew, slope = skew_slope(self.surface, self.maturities, self.moneyness)
        rv = [np.log(ewma_vol(self.ret, h)) for h in rv_halflives]
        return np.stack([self.ret, skew, slope, *rv], axis=-1).astype(np.float32)

    def to_xarray(self):
        """The surfaces as a labelled xarray DataArray `iv` (date, maturity, moneyness): select by label
        (`.sel(date="2008-10-10", maturity=1.0, moneyness=0.85)`), not by index. Data without dates is indexed by
        day number."""
        import xarray as xr
        date = self.dates.astype("datetime64[ns]") if self.dates is not None else np.arange(self.n_days)
        return xr.DataArray(self.surface, dims=("date", "maturity", "moneyness"), name="iv",
                            coords={"date": date, "maturity": np.asarray(self.maturities, float),
                                    "moneyness": np.asarray(self.moneyness, float)})

    def day_labels(self) -> np.ndarray:
        """ISO dates, or integer day indices when the data has no dates."""
        if self.dates is None:
            return np.arange(self.n_days)
        return np.datetime_as_string(self.dates, unit="D")

    def index_of(self, when) -> int:
        """Day index of a date (first trading day on or after it) or of an integer index."""
        if isinstance(when, (int, np.integer)):
            if not 0 <= when < self.n_days:
                raise DataError(f"day index {when} is outside the data (0..{self.n_days - 1})")
            return int(when)
        if self.dates is None:
            raise DataError(f"the data has no dates, so '{when}' cannot be located; use day indices")
        i = int(np.searchsorted(self.dates, np.datetime64(str(when), "D")))
        if i >= self.n_days:
            raise DataError(f"date {when} is after the last day of the data ({self.dates[-1]})")
        return i


# --- features ----------------------------------------------------------------------------------

def feature_indices(maturities, moneyness) -> dict:
    """Grid indices used by skew and slope: ATM column, its neighbours, ~1y and ~3m rows, last row."""
    mat, mon = np.asarray(maturities, float), np.asarray(moneyness, float)
    atm = int(np.argmin(np.abs(mon - 1.0)))
    lo, hi = max(atm - 1, 0), min(atm + 1, len(mon) - 1)
    return {"atm": atm, "lo": lo, "hi": hi, "m1y": int(np.argmin(np.abs(mat - 1.0))),
            "m3m": int(np.argmin(np.abs(mat - 0.25))), "mlast": len(mat) - 1}


def skew_slope(surface, maturities, moneyness):
    """skew = mean of the two moneyness points beside ATM minus ATM at the ~1y maturity;
    slope = ATM at the longest maturity minus ATM at the ~3m maturity.
    Works on numpy arrays and torch tensors of shape (..., n_mat, n_mon); returns (...,) each."""
    ix = feature_indices(maturities, moneyness)
    row = surface[..., ix["m1y"], :]
    skew = 0.5 * (row[..., ix["lo"]] + row[..., ix["hi"]]) - row[..., ix["atm"]]
    slope = surface[..., ix["mlast"], ix["atm"]] - surface[..., ix["m3m"], ix["atm"]]
    return skew, slope


RISKMETRICS_LAMBDA = 0.94      # the daily decay of the RiskMetrics EWMA (the plan's econometric baseline)


def halflife_of(lam: float) -> float:
    """The half-life in days of an EWMA with daily decay `lam` (lam = 0.5^(1/halflife)): 0.94 is ~11.2 days."""
    return math.log(0.5) / math.log(lam)


RISKMETRICS_HALFLIFE = halflife_of(RISKMETRICS_LAMBDA)


def ewma_vol(ret, halflife: float, periods: int = 252, warmup: int = 20) -> np.ndarray:
    """Annualised EWMA volatility of daily log returns with the given half-life in days, causal (the one EWMA
    vol of the package: the model's RV features, the baselines' realised vol, RiskMetrics at
    RISKMETRICS_HALFLIFE): s2_t = lam s2_{t-1} + (1 - lam) r_t^2, lam = 0.5^(1/halflife), started from the mean
    square of the first `warmup` days, floored at 1e-4 so its log is finite."""
    from scipy.signal import lfilter
    r2 = np.asarray(ret, dtype=float) ** 2
    lam = 0.5 ** (1.0 / halflife)
    s0 = np.mean(r2[:warmup]) if len(r2) else 0.0
    s2, _ = lfilter([1 - lam], [1, -lam], r2, zi=[lam * s0])
    return np.sqrt(np.maximum(periods * s2, 1e-8))


# --- validation --------------------------------------------------------------------------------

def validate(ds: Dataset, min_len: int = 1) -> Dataset:
    """Raise DataError with one clear line on anything that would make training meaningless."""
    s, r = ds.surface, ds.ret
    where = f" in {ds.source}" if ds.source else ""
    if s.ndim != 3:
        raise DataError(f"surface must have shape (days, n_maturity, n_moneyness), got {s.shape}{where}")
    if r.ndim != 1 or len(r) != len(s):
        raise DataError(f"ret has shape {r.shape} but surface has {len(s)} days{where}")
    if ds.maturities.shape != (s.shape[1],):
        raise DataError(f"maturities has {ds.maturities.size} values but the surface has {s.shape[1]} "
                        f"maturity rows{where}")
    if ds.moneyness.shape != (s.shape[2],):
        raise DataError(f"moneyness has {ds.moneyness.size} values but the surface has {s.shape[2]} "
                        f"moneyness columns{where}")
    if s.shape[1] < 2 or s.shape[2] < 3:
        raise DataError(f"the grid must have >= 2 maturities and >= 3 moneyness points, got "
                        f"{s.shape[1]}x{s.shape[2]}{where}")
    for name, arr in (("maturities", ds.maturities), ("moneyness", ds.moneyness)):
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise DataError(f"{name} must be finite and > 0{where}")
        if np.any(np.diff(arr) <= 0):
            raise DataError(f"{name} must be strictly increasing (unsorted grid): {arr.tolist()}{where}")
    bad = ~np.isfinite(s)
    if bad.any():
        d = int(np.argwhere(bad)[0][0])
        raise DataError(f"surface has {int(bad.sum())} NaN/inf values (first on day {_label(ds, d)}){where}")
    if not np.all(np.isfinite(r)):
        d = int(np.argwhere(~np.isfinite(r))[0][0])
        raise DataError(f"ret has NaN/inf values (first on day {_label(ds, d)}){where}")
    out = (s <= 0) | (s > 5)
    if out.any():
        d = int(np.argwhere(out)[0][0])
        raise DataError(f"surface has {int(out.sum())} vols outside (0, 5] (first on day {_label(ds, d)}: "
                        f"{s[d][out[d]][0]:.4g}); vols must be decimals{where}")
    if ds.dates is not None:
        if len(ds.dates) != len(s):
            raise DataError(f"dates has {len(ds.dates)} entries but surface has {len(s)} days{where}")
        dup = ds.dates[1:] == ds.dates[:-1]
        if dup.any():
            raise DataError(f"duplicate date {ds.dates[1:][dup][0]}{where}")
        if np.any(ds.dates[1:] < ds.dates[:-1]):
            raise DataError(f"dates are not in increasing order{where}")
    if len(s) < min_len:
        raise DataError(f"the series has {len(s)} days, too short for the longest training window "
                        f"({min_len} days){where}")
    return ds


def _label(ds, d):
    return str(ds.dates[d]) if ds.dates is not None else str(d)


# --- loaders -----------------------------------------------------------------------------------

def _parse_dates(raw, source):
    if raw is None:
        return None
    try:
        return np.asarray(raw).astype("datetime64[D]")
    except (ValueError, TypeError):
        raise DataError(f"dates in {source} are not ISO dates (YYYY-MM-DD)") from None


def load_npz(path) -> Dataset:
    """`.npz` with `surface` (N, n_mat, n_mon) and `ret` (N,); optional dates, maturities, moneyness.
    The reference layout (surface, ret, price, skews, slopes, levels) loads on its 5x5 grid."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return _from_npz(z, path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if not zipfile.is_zipfile(path):
            raise DataError(f"cannot read {path}: not an .npz archive (numpy.savez writes one)") from None
        hint = " (store dates as strings, not objects)" if "allow_pickle" in str(e) else ""
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}{hint}") from None


def _from_npz(z, path) -> Dataset:
    for key in ("surface", "ret"):
        if key not in z.files:
            raise DataError(f"{path} has no '{key}' array (found: {', '.join(z.files)})")
    surface = np.asarray(z["surface"], dtype=np.float64)
    ret = np.asarray(z["ret"], dtype=np.float64)
    dates = _parse_dates(z["dates"] if "dates" in z.files else None, path)
    if surface.ndim == 3 and surface.shape[1:] != (5, 5) and not {"maturities", "moneyness"} <= set(z.files):
        raise DataError(f"{path} has a {surface.shape[1]}x{surface.shape[2]} grid: it needs "
                        f"'maturities' and 'moneyness' arrays (only 5x5 defaults to the reference grid)")
    mat = np.asarray(z["maturities"], float) if "maturities" in z.files else REFERENCE_MATURITIES.copy()
    mon = np.asarray(z["moneyness"], float) if "moneyness" in z.files else REFERENCE_MONEYNESS.copy()
    return Dataset(surface, ret, dates, mat, mon, source=str(path))


def load_long(path, returns_path) -> Dataset:
    """Long table `date, maturity, moneyness, iv` (CSV or parquet) plus a `date, return` table."""
    import pandas as pd

    def read(p):
        p = Path(p)
        if not p.exists():
            raise DataError(f"file not found: {p}")
        try:
            return pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p)
        except Exception as e:                      # pyarrow / the CSV parser: one line, not a traceback
            raise DataError(f"cannot read {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
                from None

    def numeric(frame, col, p):
        v = pd.to_numeric(frame[col], errors="coerce")
        bad = v.isna() & frame[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{p}: column '{col}' has a non-numeric value {frame[col].iloc[i]!r} (row {i + 1})")
        frame[col] = v

    if returns_path is None:
        raise DataError(f"{path} is a long table: data.returns_path must name the `date, return` table")
    df, rets = read(path), read(returns_path)
    for cols, frame, p in ((("date", "maturity", "moneyness", "iv"), df, path), (("date", "return"), rets, returns_path)):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise DataError(f"{p} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})")
    for col in ("maturity", "moneyness", "iv"):
        numeric(df, col, path)
    numeric(rets, "return", returns_path)
    if df.duplicated(["date", "maturity", "moneyness"]).any():
        row = df[df.duplicated(["date", "maturity", "moneyness"])].iloc[0]
        raise DataError(f"{path} has a duplicate row for date {row['date']}, maturity {row['maturity']}, "
                        f"moneyness {row['moneyness']}")
    if rets["date"].duplicated().any():
        raise DataError(f"duplicate date {rets['date'][rets['date'].duplicated()].iloc[0]} in {returns_path}")
    cube = df.pivot_table(index="date", columns=["maturity", "moneyness"], values="iv", aggfunc="first",
                          dropna=False).sort_index()
    mat = np.array(sorted(df["maturity"].unique()), float)
    mon = np.array(sorted(df["moneyness"].unique()), float)
    cube = cube.reindex(columns=pd.MultiIndex.from_product([mat, mon]))
    _check_long_grid(df, cube.index, mat, mon, path)
    lacking = cube.index[~cube.index.isin(rets["date"])]
    if len(lacking):               # NaN after the reindex below, which would read as bad values of the surface file
        raise DataError(f"returns table {returns_path} has no return for {len(lacking)} surface dates (first "
                        f"{_day(lacking[0])})")
    r = rets.set_index("date")["return"].reindex(cube.index)
    bad = ~np.isfinite(r.to_numpy(float))
    if bad.any():
        raise DataError(f"returns table {returns_path} has {int(bad.sum())} NaN/inf returns (first on "
                        f"{_day(r.index[bad][0])})")
    surface = cube.to_numpy(float).reshape(len(cube), len(mat), len(mon))
    dates = _parse_dates(cube.index.astype(str).to_numpy(), path)
    return Dataset(surface, r.to_numpy(float), dates, mat, mon, source=str(path))


def _day(d) -> str:
    """A date of a long table as YYYY-MM-DD (CSV gives strings, parquet timestamps)."""
    import pandas as pd
    try:
        return pd.Timestamp(d).strftime("%Y-%m-%d")
    except (TypeError, ValueError):
        return str(d)


def _check_long_grid(df, dates, mat, mon, path) -> None:
    """Every date of a long table needs a row for every (maturity, moneyness) pair of its grid: a pair that no date
    has is a grid that is not rectangular, a pair that some date lacks is a missing row (both would otherwise read
    as NaN vols). dates: the sorted dates, mat (n_mat,), mon (n_mon,)."""
    import pandas as pd
    rows = df.assign(n=1).pivot_table(index="date", columns=["maturity", "moneyness"], values="n", aggfunc="sum")
    rows = rows.reindex(index=dates, columns=pd.MultiIndex.from_product([mat, mon])).fillna(0)
    have = rows.to_numpy() > 0                                     # (n_dates, n_mat * n_mon)
    never = ~have.any(axis=0)
    if never.any():
        m, k = rows.columns[int(np.argmax(never))]
        raise DataError(f"{path}: the grid is not rectangular: no date has a row for maturity {m:g}, moneyness {k:g} "
                        f"({int(never.sum())} of the {len(mat)}x{len(mon)} maturity x moneyness pairs are missing)")
    if not have.all():
        d, c = np.argwhere(~have)[0]
        m, k = rows.columns[c]
        raise DataError(f"{path} has no row for date {_day(dates[d])}, maturity {m:g}, moneyness {k:g} "
                        f"({int((~have).sum())} rows missing on {int((~have).any(axis=1).sum())} of {len(dates)} dates)")


def default_cache_dir(cache_dir=None) -> Path:
    return Path(cache_dir or os.environ.get("BACKFILL_CACHE") or Path.home() / ".cache" / "backfill")


def default_grid(grid=None) -> tuple[np.ndarray, np.ndarray]:
    """(maturities, moneyness) of the default dataset: data.grid {maturities: [years], moneyness:
    [K/S]}, or the reference 5x5 grid when None."""
    if grid is None:
        return REFERENCE_MATURITIES.copy(), REFERENCE_MONEYNESS.copy()
    if not isinstance(grid, dict) or set(grid) != {"maturities", "moneyness"}:
        raise DataError(f"data.grid must map 'maturities' and 'moneyness' to lists of numbers, got {grid!r}")
    out = []
    for key, n_min in (("maturities", 2), ("moneyness", 3)):
        try:
            a = np.asarray(grid[key], dtype=float)
        except (TypeError, ValueError):
            a = np.array([np.nan])
        if a.ndim != 1 or a.size < n_min or not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(np.diff(a) <= 0):
            raise DataError(f"data.grid.{key} must be >= {n_min} positive, strictly increasing numbers, "
                            f"got {grid[key]!r}")
        out.append(a)
    return out[0], out[1]


def default_cache_path(cache_dir=None, grid=None) -> Path:
    """Cache file of the default dataset on a grid: default_<version>.npz for the reference grid
    (so existing caches stay valid), default_<version>_<grid hash>.npz for any other."""
    mat, mon = default_grid(grid)
    name = f"default_{DEFAULT_CACHE_VERSION}"
    if not (np.array_equal(mat, REFERENCE_MATURITIES) and np.array_equal(mon, REFERENCE_MONEYNESS)):
        h = hashlib.sha256(np.array([mat.size, mon.size], np.int64).tobytes() + mat.tobytes() + mon.tobytes())
        name += f"_{h.hexdigest()[:12]}"
    return default_cache_dir(cache_dir) / f"{name}.npz"


def load_default(cache_dir=None, grid=None) -> Dataset:
    """The embedded market-calibrated SPX-like dataset on a grid (None: the reference 5x5; see
    default_grid), built once per grid and cached as an .npz."""
    from . import embedded_data
    mat, mon = default_grid(grid)
    path = default_cache_path(cache_dir, grid)
    if path.exists():
        try:
            ds = load_npz(path)
            if np.array_equal(ds.maturities, mat) and np.array_equal(ds.moneyness, mon):
                ds.source = "default (market-calibrated, cached)"
                return ds
        except DataError:
            pass
    try:                               # checked before the build: an unwritable cache is one line, not a traceback
        path.unlink(missing_ok=True)   # a broken or foreign cache is rebuilt, never trusted
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise _cache_error(path, e) from None
    arrays = embedded_data.make_default_arrays(maturities=None if grid is None else mat,
                                               moneyness=None if grid is None else mon)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, surface=arrays["surface"], ret=arrays["ret"], dates=np.asarray(arrays["dates"], dtype="U10"),
                 maturities=arrays["maturities"], moneyness=arrays["moneyness"],
                 vix_corr=np.float64(arrays["vix_corr"]))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _cache_error(path, e) from None
    return Dataset(arrays["surface"], arrays["ret"], _parse_dates(arrays["dates"], "default"),
                   np.asarray(arrays["maturities"], float), np.asarray(arrays["moneyness"], float),
                   source="default (market-calibrated)")


def _cache_error(path: Path, e: OSError) -> DataError:
    return DataError(f"cannot write the default dataset's cache {path} ({e.strerror or type(e).__name__}); set "
                     f"data.cache_dir (or BACKFILL_CACHE) to a writable directory")


def load(source: str, returns_path=None, cache_dir=None, min_len: int = 1, grid=None) -> Dataset:
    """Load and validate any supported source ("default", .npz, .csv, .parquet); grid (data.grid)
    only for "default"."""
    if source == "default":
        ds = load_default(cache_dir, grid)
    elif grid is not None:
        raise DataError(f"data.grid applies only to data.source 'default' ({source} has its own grid)")
    else:
        p = Path(source)
        if not p.exists():
            raise DataError(f"data file not found: {p}")
        if p.suffix == ".npz":
            ds = load_npz(p)
        elif p.suffix in (".csv", ".parquet", ".pq"):
            ds = load_long(p, returns_path)
        else:
            raise DataError(f"unsupported data format '{p.suffix}' for {p} (use .npz, .csv or .parquet)")
    return validate(ds, min_len)


def load_for(p: dict) -> Dataset:
    """The dataset of a params dict, validated against the params' longest window and splits."""
    from . import params as _params
    d = p["data"]
    ds = load(d["source"], d["returns_path"], d["cache_dir"], min_len=_params.longest_window(p),
              grid=d.get("grid"))
    if p["model"]["feat_dim"] is not None and list(ds.grid) != list(p["model"]["feat_dim"]):
        raise DataError(f"model.feat_dim is {p['model']['feat_dim']} but the data's grid is "
                        f"{ds.grid[0]}x{ds.grid[1]}")
    sp = splits(ds, p)   # raises if split dates fall outside the data
    need = _params.longest_window(p)
    for name, key in (("train", "data.train"), ("val", "data.val_fraction")):
        n = sp[name][1] - sp[name][0]
        if n < need:
            raise DataError(f"{key}: the {'training' if name == 'train' else 'validation'} split has {n} days, fewer "
                            f"than the longest training window ({need} days)")
    C, days = p["model"]["context_len"], p["generation"]["days_1year"]
    a, b = sp["test"]
    if b - max(a, C) < days:
        raise DataError(f"data.test: the test split ({_label(ds, a)}..{_label(ds, b - 1)}) has {b - a} days, fewer than "
                        f"one {days}-day backfill (generation.days_1year)")
    in_test = []
    for name, when in p["generation"]["windows"].items():
        if ds.dates is None and not isinstance(when, int):
            raise DataError(f"generation.windows.{name} is a date ({when}) but the data has no dates; give a day index")
        try:
            i = ds.index_of(when)  # a date after the data or an index outside it: one line, here, not in notebook 08
        except DataError as e:
            raise DataError(f"generation.windows.{name}: {e}") from None
        if i < C:
            raise DataError(f"generation.windows.{name} ({when}) has {i} days of history before it, fewer than the "
                            f"{C} context days (model.context_len)")
        if i + days > ds.n_days:
            raise DataError(f"generation.windows.{name} ({when}): its {days}-day backfill (generation.days_1year) runs "
                            f"past the last day of the data ({_label(ds, ds.n_days - 1)})")
        if sp["test"][0] <= i < sp["test"][1]:
            in_test.append(name)
    if not in_test:
        a, b = sp["test"]
        raise DataError(f"generation.windows: none starts in the test split ({_label(ds, a)}..{_label(ds, b - 1)}); "
                        f"add one, so that the headline window is out of sample")
    return ds


def fingerprint(ds: Dataset) -> str:
    """A short hash of the data, recorded with every run."""
    h = hashlib.sha256()
    for a in (ds.surface, ds.ret, ds.maturities, ds.moneyness):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


# --- splits, regimes, windows ------------------------------------------------------------------

def _span_indices(ds: Dataset, span, key) -> tuple[int, int]:
    """[start, end] (inclusive, dates or indices) -> half-open day-index range [i0, i1)."""
    a, b = span
    if isinstance(a, int) and isinstance(b, int):
        if not (0 <= a < b < ds.n_days):
            raise DataError(f"data.{key} index span {span} is outside the data (0..{ds.n_days - 1})")
        return a, b + 1
    if ds.dates is None:
        raise DataError(f"data.{key} is given by date but the data has no dates; use day indices")
    lo, hi = ds.dates[0], ds.dates[-1]
    da, db = np.datetime64(a, "D"), np.datetime64(b, "D")
    slack = np.timedelta64(7, "D")     # calendar dates may fall on holidays/weekends at either end
    if da < lo - slack or db > hi + slack:
        raise DataError(f"data.{key} span {a}..{b} is outside the data ({lo}..{hi})")
    i0 = int(np.searchsorted(ds.dates, da, "left"))
    i1 = int(np.searchsorted(ds.dates, db, "right"))
    return i0, i1


def splits(ds: Dataset, p: dict) -> dict:
    """Half-open day-index ranges {'train', 'val', 'test'}; validation = the training span's last part."""
    d = p["data"]
    t0, t1 = _span_indices(ds, d["train"], "train")
    s0, s1 = _span_indices(ds, d["test"], "test")
    n_val = int(round((t1 - t0) * d["val_fraction"]))
    return {"train": (t0, t1 - n_val), "val": (t1 - n_val, t1), "test": (s0, s1)}


def crisis_mask(ds: Dataset, p: dict) -> np.ndarray:
    """(N,) True on crisis-regime days; the rest is the 'normal' regime."""
    c0, c1 = _span_indices(ds, p["data"]["crisis"], "crisis")
    m = np.zeros(ds.n_days, bool)
    m[c0:c1] = True
    return m


def regime_spells(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a boolean series as half-open (start, end) index pairs."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(int)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def window_starts(span: tuple[int, int], length: int) -> np.ndarray:
    """Start indices of every window of `length` days that lies inside the half-open span."""
    i0, i1 = span
    n = i1 - i0 - length + 1
    return np.arange(i0, i0 + max(n, 0))


def phase_window_lengths(p: dict) -> dict[str, int]:
    """Days per training window of each phase: C+1, C+max(h), C+(S-1)*max(O)+H."""
    C, t = p["model"]["context_len"], p["training"]
    out = {"phase1": C + 1, "phase2": C + max(t["phase2_horizons"])}
    for ph in (3, 4):
        out[f"phase{ph}"] = C + (t[f"phase{ph}_ar_steps"] - 1) * max(t[f"phase{ph}_offsets"]) + t[f"phase{ph}_horizon"]
    return out
