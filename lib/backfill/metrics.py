"""Metrics on implied-volatility surfaces: static-arbitrage checks and persistence (ACF).

Surfaces are arrays (..., n_maturity, n_moneyness) of implied vols in decimals; maturities in
years, moneyness K/S with zero rates and dividends (so the forward is the spot). Nothing here
assumes a particular grid size.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr          # the standard normal CDF (scipy.stats, which wraps it, costs ~0.7 s to import)



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
    return ndtr(d1) - K * ndtr(d1 - sd)


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


def score_backfill(p05, p50, p95, truth, segment, rv, maturities, moneyness, spread=None, crps=None,
                   arbitrage_raw=None) -> dict:
    """The per-window scores every method gets (VAE, baselines): arrays (days, n_mat, n_mon) over
    the days where truth is known; segment (days,) pass labels; rv (days,) realised vol; spread an
    optional (lo, hi) sampling-spread interval (5th-95th percentile of the sample p50 paths); crps the
    per-day, per-point ensemble CRPS where the method has samples; arbitrage_raw the arbitrage share
    before a repair, where one was made."""
    n = len(truth)
    p05, p50, p95, seg, rv = p05[:n], p50[:n], p95[:n], np.asarray(segment)[:n], np.asarray(rv)[:n]
    by_pass = rmse_by_segment(p50, truth, seg)
    passes = sorted(by_pass)
    scores = proper_scores(p05, p50, p95, truth)
    scores["crps"] = None if crps is None else float(np.mean(np.asarray(crps)[:n]))
    arb = arbitrage_share(p50, maturities, moneyness)["any"]
    return {"days": n, "rmse": rmse(p50, truth), "rmse_by_pass": [by_pass[s] for s in passes],
            "pass_ratio": by_pass[passes[-1]] / by_pass[passes[0]] if by_pass[passes[0]] > 0 else None,
            "ci_violation": ci_violation(p05, p95, truth),
            "coverage": {"p05": coverage(p05, truth), "p50": coverage(p50, truth), "p95": coverage(p95, truth)},
            "coverage_p05": coverage(p05, truth), "coverage_p50": coverage(p50, truth),
            "coverage_p95": coverage(p95, truth), **scores,
            "cointegration_share": cointegration_share(p50, rv),
            "arbitrage_share": arb, "arbitrage_share_raw": arb if arbitrage_raw is None else float(arbitrage_raw),
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


# --- proper scoring rules, DM with small-sample correction, model confidence set ----------------

def pinball_loss(q, truth, tau) -> np.ndarray:
    """Elementwise quantile (pinball) loss of the tau-quantile forecast q: max(tau u, (tau-1) u),
    u = truth - q. Its expectation is minimised by the true tau-quantile, so it scores calibration
    and sharpness together."""
    u = np.asarray(truth, float) - np.asarray(q, float)
    return np.maximum(tau * u, (tau - 1.0) * u)


def interval_score(lo, hi, truth, alpha: float = 0.1) -> np.ndarray:
    """Elementwise Winkler / Gneiting-Raftery score of the central (1-alpha) interval [lo, hi]:
    width plus 2/alpha times the distance by which truth falls outside (lower is better)."""
    lo, hi, y = (np.asarray(a, float) for a in (lo, hi, truth))
    return (hi - lo) + (2.0 / alpha) * (np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0))


def crps_ensemble(samples, truth) -> np.ndarray:
    """Elementwise CRPS of an ensemble, samples (N, ...), truth (...) -> (...), with the *fair* estimator
    E|X - y| - sum_{i != j} |x_i - x_j| / (2 N (N - 1)): unbiased for the CRPS of the distribution the members are
    drawn from, so methods with different ensemble sizes (the VAE's latent samples, a baseline's bootstrap paths)
    are scored alike. Computed by scoringrules' probability-weighted-moment estimator (`estimator="pwm"`), which on
    the sorted members is the same number in O(N) memory (scoringrules' `"fair"` forms all N^2 pairs: gigabytes
    here). One member: |x - y|."""
    import scoringrules as sr
    x, y = np.asarray(samples, float), np.asarray(truth, float)
    if x.ndim < 1 or x.shape[0] == 0 or x.shape[1:] != y.shape:
        raise ValueError(f"samples shape {x.shape} does not match truth shape {y.shape} (need N >= 1)")
    if x.shape[0] == 1:
        return np.abs(x[0] - y)
    return np.asarray(sr.crps_ensemble(y, x, m_axis=0, estimator="pwm", backend="numpy"), float)


def proper_scores(p05, p50, p95, truth, samples=None) -> dict:
    """Proper scores of a quantile forecast, means over the days where truth is known and the grid:
    pinball loss of each quantile and their mean, the 90% interval score, and the ensemble CRPS
    (None without samples). Arrays (days, n_mat, n_mon); truth (days_known, ...); samples
    (N, days, n_mat, n_mon)."""
    y = np.asarray(truth, float)
    n = len(y)
    q = {tau: np.asarray(a, float)[:n] for tau, a in ((0.05, p05), (0.5, p50), (0.95, p95))}
    pin = {tau: float(np.mean(pinball_loss(a, y, tau))) for tau, a in q.items()}
    return {"pinball_p05": pin[0.05], "pinball_p50": pin[0.5], "pinball_p95": pin[0.95],
            "pinball_mean": float(np.mean(list(pin.values()))),
            "interval_score": float(np.mean(interval_score(q[0.05], q[0.95], y, 0.1))),
            "crps": None if samples is None else float(np.mean(crps_ensemble(np.asarray(samples)[:, :n], y)))}


def daily_loss(kind: str, p05, p50, p95, truth) -> np.ndarray:
    """(days,) loss per day averaged over the grid, over the days where truth is known: 'squared'
    (p50 error), 'pinball' (mean of the three quantiles' pinball losses), 'interval' (90% interval
    score) or 'violation' (share of grid points outside [p05, p95]). The per-day series feed `dm_test`,
    `model_confidence_set` and the coverage intervals."""
    y = np.asarray(truth, float)
    n = len(y)
    lo, mid, hi = (np.asarray(a, float)[:n] for a in (p05, p50, p95))
    if kind == "squared":
        loss = (mid - y) ** 2
    elif kind == "pinball":
        loss = (pinball_loss(lo, y, 0.05) + pinball_loss(mid, y, 0.5) + pinball_loss(hi, y, 0.95)) / 3
    elif kind == "interval":
        loss = interval_score(lo, hi, y, 0.1)
    elif kind == "violation":
        loss = ((y < lo) | (y > hi)).astype(float)
    else:
        raise ValueError(f"unknown loss kind {kind!r}; use 'squared', 'pinball', 'interval' or 'violation'")
    return loss.reshape(n, -1).mean(1)


def dm_test(d, horizon: int = 1, lags: int | None = None) -> dict:
    """Diebold-Mariano test on a loss differential d (T,) = loss_a - loss_b (negative: a is better), by
    statsmodels' `diebold_mariano_test` with the Harvey-Leybourne-Newbold correction for h-step forecasts: the
    t statistic of the mean of d with a Newey-West (Bartlett) variance of `lags` lags (default h - 1), times
    sqrt((T + 1 - 2h + h(h - 1) / T) / T), p-value from Student t with T - 1 df. dm and p are NaN when d has no
    variance and when h >= T (the correction is zero or meaningless there)."""
    from statsmodels.tsa.stattools import diebold_mariano_test
    d = np.asarray(d, float).ravel()
    T, h = len(d), int(horizon)
    if h < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    lags = max(h - 1, 0) if lags is None else max(int(lags), 0)
    out = {"dm": float("nan"), "p_value": float("nan"), "mean_loss_diff": float(np.mean(d)) if T else float("nan"),
           "days": T, "lags": lags, "horizon": h}
    if T < 3 or h >= T or np.ptp(d) == 0:
        return out
    res = diebold_mariano_test(np.zeros(T), d, np.zeros(T), criterion=lambda y, f: f, lags=min(lags, T - 2),
                               harvey_adj=True, horizon=h)
    out.update(dm=float(res.statistic), p_value=float(res.pvalue))
    return out


def by_calendar_day(starts, series) -> tuple[np.ndarray, np.ndarray]:
    """Per-origin daily series averaged per calendar day: starts (n,) day index of each series' first day,
    series [(len_i,) ...] -> (day indices (U,), mean over the series covering each day (U,)). Overlapping
    rolling origins cover the same days many times; a test on the result counts each calendar day once."""
    idx = np.concatenate([s + np.arange(len(x)) for s, x in zip(starts, series)]).astype(int)
    val = np.concatenate([np.asarray(x, float) for x in series])
    days, inv = np.unique(idx, return_inverse=True)
    return days, np.bincount(inv, weights=val) / np.bincount(inv)


def model_confidence_set(losses: dict, size: float = 0.1, block_size: int | None = None, reps: int = 1000,
                         seed: int = 0) -> dict:
    """Hansen-Lunde-Nason model confidence set (arch.bootstrap.MCS, 'R' statistic, stationary
    bootstrap) of methods with loss series losses[method] (T,), equal T. Returns per method
    {'in_set': p_value > size, 'p_value': MCS p-value}. block_size defaults to round(T^(1/3)) >= 1;
    the bootstrap is seeded, so the result is deterministic. Methods with identical loss series are
    tested once (arch divides by a zero variance otherwise) and share the result."""
    from arch.bootstrap import MCS
    names = list(losses)
    L = [np.asarray(losses[m], float).ravel() for m in names]
    if not names or len({len(x) for x in L}) != 1:
        raise ValueError(f"losses must be a non-empty dict of equal-length series, got lengths {[len(x) for x in L]}")
    rep = []                                                          # representative column per method
    for j, x in enumerate(L):
        rep.append(next((rep[i] for i in range(j) if np.array_equal(L[i], x)), j))
    cols = sorted(set(rep))
    if len(cols) == 1:
        return {m: {"in_set": True, "p_value": 1.0} for m in names}
    T = len(L[0])
    bs = max(1, int(round(T ** (1 / 3)))) if block_size is None else int(block_size)
    mcs = MCS(np.column_stack([L[c] for c in cols]), size, reps=reps, block_size=bs, method="R",
              bootstrap="stationary", seed=seed)
    mcs.compute()
    pv = mcs.pvalues["Pvalue"]                                        # indexed by column position
    p = {c: float(pv.loc[k]) for k, c in enumerate(cols)}
    return {m: {"in_set": bool(p[rep[j]] > size), "p_value": p[rep[j]]} for j, m in enumerate(names)}
