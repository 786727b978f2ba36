"""Metrics on implied-volatility surfaces: static-arbitrage checks and persistence (ACF).

Surfaces are arrays (..., n_maturity, n_moneyness) of implied vols in decimals; maturities in
years, moneyness K/S with zero rates and dividends (so the forward is the spot). Nothing here
assumes a particular grid size.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm


def _grids(surface, maturities, moneyness):
    s = np.asarray(surface, dtype=float)
    T = np.asarray(maturities, dtype=float)
    K = np.asarray(moneyness, dtype=float)
    if s.shape[-2:] != (T.size, K.size):
        raise ValueError(f"surface trailing shape {s.shape[-2:]} != ({T.size}, {K.size})")
    return s, T, K


def total_variance(surface, maturities) -> np.ndarray:
    """sigma^2 * T, same shape as surface (..., n_mat, n_mon)."""
    s = np.asarray(surface, dtype=float)
    return s**2 * np.asarray(maturities, dtype=float)[:, None]


def call_prices(surface, maturities, moneyness) -> np.ndarray:
    """Undiscounted Black-Scholes calls C(K)/S with S = 1, K = moneyness; shape of surface."""
    s, T, K = _grids(surface, maturities, moneyness)
    sd = np.sqrt(np.maximum(s**2 * T[:, None], 1e-300))      # (..., n_mat, n_mon)
    d1 = -np.log(K) / sd + 0.5 * sd
    return norm.cdf(d1) - K * norm.cdf(d1 - sd)


def calendar_violations(surface, maturities, moneyness, tol: float = 1e-6) -> np.ndarray:
    """bool (...,): total variance falls with maturity (at fixed K/S) by more than tol anywhere."""
    s, T, _ = _grids(surface, maturities, moneyness)
    dw = np.diff(total_variance(s, T), axis=-2)              # (..., n_mat-1, n_mon)
    return (dw < -tol).any(axis=(-2, -1))


def butterfly_violations(surface, maturities, moneyness, tol: float = 1e-6) -> np.ndarray:
    """bool (...,): call prices not convex, not decreasing, or falling faster than -1 in strike.

    Finite differences on the (possibly non-uniform) strike grid: slopes must lie in [-1, 0] and
    be non-decreasing in strike (all up to tol)."""
    s, T, K = _grids(surface, maturities, moneyness)
    C = call_prices(s, T, K)                                 # (..., n_mat, n_mon)
    slope = np.diff(C, axis=-1) / np.diff(K)                 # (..., n_mat, n_mon-1)
    bad = (slope > tol) | (slope < -1.0 - tol)
    bad = bad.any(axis=(-2, -1))
    if K.size >= 3:
        bad |= (np.diff(slope, axis=-1) < -tol).any(axis=(-2, -1))
    return bad


def arbitrage_share(surface, maturities, moneyness) -> dict:
    """Share of surfaces (over all leading axes) with a calendar, a butterfly, or any violation."""
    cal = calendar_violations(surface, maturities, moneyness)
    fly = butterfly_violations(surface, maturities, moneyness)
    return {"calendar": float(np.mean(cal)), "butterfly": float(np.mean(fly)),
            "any": float(np.mean(cal | fly))}


def mean_acf(surface, lags) -> dict:
    """Mean over grid points of the sample autocorrelation (statsmodels' unadjusted estimator)
    of each point's series; surface (N, ...) with time on axis 0."""
    x = np.asarray(surface, dtype=float).reshape(len(surface), -1)   # (N, P)
    x = x - x.mean(axis=0)
    denom = (x**2).sum(axis=0)                                       # (P,)
    out = {}
    for lag in np.atleast_1d(lags):
        lag = int(lag)
        if not 0 <= lag < len(x):
            raise ValueError(f"lag {lag} out of range for series of length {len(x)}")
        num = (x[lag:] * x[:len(x) - lag]).sum(axis=0)
        out[lag] = float(np.mean(num / denom))
    return out


# --- forecast accuracy and calibration ---------------------------------------------------------

def rmse(pred, truth, axis=None):
    """Root mean squared error over `axis` (all axes by default)."""
    d = np.asarray(pred, dtype=float) - np.asarray(truth, dtype=float)
    return float(np.sqrt(np.mean(d**2))) if axis is None else np.sqrt(np.mean(d**2, axis=axis))


def ci_violation(lo, hi, truth, axis=None):
    """Share of truth outside [lo, hi] (nominal 10% for a p05..p95 interval)."""
    t = np.asarray(truth, dtype=float)
    out = (t < np.asarray(lo)) | (t > np.asarray(hi))
    return float(np.mean(out)) if axis is None else np.mean(out, axis=axis)


def rmse_by_segment(pred, truth, segment_of_day) -> dict:
    """RMSE per pass/segment: pred, truth (days, ...); segment_of_day (days,) int labels."""
    seg = np.asarray(segment_of_day)
    return {int(s): rmse(np.asarray(pred)[seg == s], np.asarray(truth)[seg == s]) for s in np.unique(seg)}


def coverage(q_pred, truth) -> float:
    """Share of truth at or below a predicted quantile (should be close to the quantile level)."""
    return float(np.mean(np.asarray(truth) <= np.asarray(q_pred)))


def ewma_realized_vol(ret, lam: float = 0.94, periods: int = 252, warmup: int = 20) -> np.ndarray:
    """RiskMetrics EWMA volatility of daily log returns, annualised: sqrt(periods * s2_t), where
    s2_t = lam * s2_{t-1} + (1 - lam) * r_t^2, started from the mean square of the first `warmup` days."""
    r = np.asarray(ret, dtype=float)
    s2 = np.empty_like(r)
    prev = np.mean(r[:warmup] ** 2) if len(r) else 0.0
    for t, x in enumerate(r):
        prev = lam * prev + (1 - lam) * x * x
        s2[t] = prev
    return np.sqrt(periods * s2)


def cointegration_share(iv_paths, rv, alpha: float = 0.05) -> float:
    """Share of grid points whose IV path is co-integrated with the RV path (Engle-Granger,
    statsmodels.tsa.stattools.coint, p < alpha). iv_paths (T, ...), rv (T,)."""
    import warnings
    from statsmodels.tsa.stattools import coint
    x = np.asarray(iv_paths, dtype=float).reshape(len(iv_paths), -1)
    rv = np.asarray(rv, dtype=float)
    hits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(x.shape[1]):
            y = x[:, j]
            if np.std(y) < 1e-12 or np.std(rv) < 1e-12:
                hits.append(False)
                continue
            hits.append(coint(y, rv, trend="c", autolag="aic")[1] < alpha)
    return float(np.mean(hits))


def score_backfill(p05, p50, p95, truth, segment, rv, maturities, moneyness, spread=None) -> dict:
    """The per-window scores every method gets (VAE, baselines): arrays (days, n_mat, n_mon) over
    the days where truth is known; segment (days,) pass labels; rv (days,) realised vol; spread an
    optional (lo, hi) sampling-spread interval (5th-95th percentile of the sample p50 paths)."""
    n = len(truth)
    p05, p50, p95, seg, rv = p05[:n], p50[:n], p95[:n], np.asarray(segment)[:n], np.asarray(rv)[:n]
    by_pass = rmse_by_segment(p50, truth, seg)
    passes = sorted(by_pass)
    return {"days": n, "rmse": rmse(p50, truth), "rmse_by_pass": [by_pass[s] for s in passes],
            "pass_ratio_last_first": by_pass[passes[-1]] / by_pass[passes[0]] if by_pass[passes[0]] > 0 else None,
            "ci_violation": ci_violation(p05, p95, truth),
            "coverage": {"p05": coverage(p05, truth), "p50": coverage(p50, truth), "p95": coverage(p95, truth)},
            "cointegration_share": cointegration_share(p50, rv),
            "arbitrage_share": arbitrage_share(p50, maturities, moneyness)["any"],
            "ci_violation_sampling_spread": None if spread is None else ci_violation(spread[0][:n], spread[1][:n], truth)}


def rmse_by_grid(pred, truth) -> np.ndarray:
    """(n_mat, n_mon) RMSE over days for each grid point; arrays (days, n_mat, n_mon)."""
    return rmse(pred, truth, axis=0)


def rmse_by_day(pred, truth) -> np.ndarray:
    """(days,) RMSE over the grid on each backfilled day (horizon day 1, 2, ...)."""
    d = np.asarray(pred, float) - np.asarray(truth, float)
    return np.sqrt((d.reshape(len(d), -1) ** 2).mean(1))


def ci_width_by_day(lo, hi) -> np.ndarray:
    """(days,) mean width of the interval over the grid on each day."""
    w = np.asarray(hi, float) - np.asarray(lo, float)
    return w.reshape(len(w), -1).mean(1)


def newey_west_variance(x, lags: int | None = None) -> float:
    """Long-run variance of a series with Bartlett weights; default lags floor(4 (T/100)^(2/9))."""
    x = np.asarray(x, float) - np.mean(x)
    T = len(x)
    if lags is None:
        lags = int(np.floor(4 * (T / 100) ** (2 / 9)))
    v = x @ x / T
    for k in range(1, min(lags, T - 1) + 1):
        v += 2 * (1 - k / (lags + 1)) * (x[k:] @ x[:-k]) / T
    return float(v)


def diebold_mariano(err_a, err_b, lags: int | None = None) -> dict:
    """DM test on squared-error loss: d_t = mean-over-grid(e_a^2) - mean-over-grid(e_b^2) per day.
    Negative statistic: method a is more accurate. Two-sided p-value from the normal distribution;
    both are NaN when the loss differential has no variance (e.g. identical forecasts)."""
    ea = np.asarray(err_a, float).reshape(len(err_a), -1)
    eb = np.asarray(err_b, float).reshape(len(err_b), -1)
    d = (ea ** 2).mean(1) - (eb ** 2).mean(1)
    lrv = newey_west_variance(d, lags)
    stat = float(np.mean(d) / np.sqrt(lrv / len(d))) if lrv > 0 else float("nan")
    p = float(2 * norm.sf(abs(stat))) if np.isfinite(stat) else float("nan")
    return {"dm": stat, "p_value": p, "mean_loss_diff": float(np.mean(d)), "days": len(d)}
