"""The embedded default dataset: market-calibrated SPX-like implied-vol surfaces (docs/design.md §9).

Not quoted option data. The surfaces are driven by the real S&P 500 closes 1999-2018 and
calibrated to the real VIX 2014-2018, both shipped inside the `arch` package (no download):

1. GJR-GARCH(1,1) with skew-t errors (maximum likelihood) on the daily log returns -> next-day
   variance h_t.
2. A slow long-run component q_t (EWMA of h_t, component-GARCH style). Expected variance on day
   t+k: the short part (h - q) decays at rate P_SHORT towards q, and q decays at rate P_LONG
   towards the GARCH unconditional variance vbar. Averaging over each maturity's trading days
   gives the model's ATM term structure, which the market shrinks towards vbar with weight
   LONG_RUN_WEIGHT (calm months priced dearer, short spikes milder than GARCH's, as the VIX is).
3. What returns do not explain (issue 15): a real surface also moves on its own. Three AR(1)
   factors from a fixed seed (FACTOR_SEED), each with its own shocks:
   - a variance-risk-premium factor x_t in log variance: stationary sd VRP_SD, daily persistence
     VRP_PHI, shocks correlated VRP_RET_CORR with the GARCH-standardised return (sell-offs raise it),
     loading (T / 1 month)^-VRP_TERM_POWER on maturity T (1 below a month), so it moves the short end
     most and inverts the term structure in stress. exp(loading * x - loading^2 VRP_SD^2 / 2) has
     mean one: it multiplies the scalar variance risk premium, still set so that the mean 1-month ATM
     variance equals the mean VIX^2 over 2014-2018;
   - a term-structure slope factor s_t: log ATM variance moves by s_t * log(T / 1m) / log(12), zero
     at 1 month, s_t at 1 year; mean SLOPE_MEAN (a term premium: upward sloping in calm markets), sd
     SLOPE_SD, persistence SLOPE_PHI;
   - a skew factor k_t added to rho below, sd SKEW_SD, persistence SKEW_PHI.
   VRP_* and LONG_RUN_WEIGHT are chosen so that the 1-month ATM vol moves against the returns as the
   real VIX does (market_stats: level on EWMA realised vols, daily changes on r and |r|, 2014-2018;
   every statistic inside MARKET_STATS's band around the VIX's); the slope and skew factors, which
   the VIX cannot identify, are set by hand.
4. Smile: SSVI in log-moneyness k = log(K/S) with power-law phi = ETA / theta^GAMMA inside the
   Gatheral-Jacquier no-arbitrage bounds; rho_t = clip(RHO0 + RHO_BETA * 20-day log return + k_t),
   steeper after sell-offs.
5. Small persistent per-point AR(1) observation noise (fixed seed) on the reference 5x5 grid; on
   any other grid, that noise field interpolated (linear in maturity, a natural cubic spline in
   log-moneyness).

Any grid sees the same market: the GARCH fit, the factors, the VRP (calibrated on an internal
1-month ATM point) and rho do not depend on the grid, and the term structure and SSVI are evaluated
per (T, K). Points shared with the reference grid get bit-identical vols. Deterministic: fixed seeds,
and no multithreaded linear algebra on the data (elementwise numpy, lfilter, Nelder-Mead), so the
arrays do not depend on the BLAS thread count.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.optimize import minimize
from scipy.signal import lfilter

MATURITIES = np.array([1 / 12, 1 / 4, 1 / 2, 1.0, 2.0])   # years
MONEYNESS = np.array([0.7, 0.85, 1.0, 1.15, 1.3])          # K/S
VIX_MATURITY = 1 / 12                                      # years: the point calibrated to the VIX
DAYS_PER_YEAR = 252

# Calibration constants (chosen so the surface is as persistent as real SPX surfaces).
PHI_SLOW = 0.005        # EWMA weight of the slow component (half-life ~ 140 trading days)
P_SHORT = 0.97          # daily persistence of the short part, towards q
P_LONG = 0.998          # daily persistence of q, towards the unconditional variance
ETA, GAMMA = 1.0, 0.4   # SSVI power law; ETA * (1 + |rho|) <= 2 for |rho| <= 0.95
RHO0, RHO_BETA, RHO_BOUNDS = -0.7, 2.0, (-0.95, -0.2)
RHO_WINDOW = 20         # trading days of returns that move rho
NOISE_STD, NOISE_PHI, SEED = 0.0025, 0.97, 20240601   # vols in decimals

# Market dynamics that the returns do not explain (issue 15; the search is in notebook 01's text).
LONG_RUN_WEIGHT = 0.3   # weight of vbar in the priced variance, (1 - w) * model + w * vbar
VRP_PHI = 0.8           # daily persistence of the log VRP factor (half-life ~3 days, as the VIX residual)
VRP_SD = 0.15           # stationary sd of the log VRP factor (log variance at 1 month)
VRP_RET_CORR = 0.8      # correlation of its shocks with the standardised return (sell-offs raise it)
VRP_TERM_POWER = 0.5    # its loading on maturity T: (T / 1 month)^-0.5 (the square-root-of-time rule)
SLOPE_MEAN = 0.2        # mean log ATM variance of 1y over 1m beyond the GARCH term structure (term premium)
SLOPE_SD = 0.1          # stationary sd of the slope factor (log variance at 1 year)
SLOPE_PHI = 0.99        # daily persistence of the slope factor (half-life ~70 days)
SKEW_SD = 0.05          # stationary sd of the skew factor added to rho
SKEW_PHI = 0.99         # daily persistence of the skew factor (half-life ~70 days)
FACTOR_SEED = 20240615  # seed of the factors' own shocks (the observation noise keeps SEED)


def _log(progress: bool, t0: float, msg: str) -> None:
    if progress:
        print(f"[embedded_data {time.perf_counter() - t0:5.1f}s] {msg}", flush=True)


def fit_garch(ret: np.ndarray):
    """Fit GJR-GARCH(1,1) with skew-t errors to 100*ret by maximum likelihood: the one GARCH fit of the package
    (the generator's, and report.garch_half_life's). Returns (h, vbar, params): h (N,) is the variance for day t+1
    known at the close of day t, vbar the unconditional variance (both in %^2), params the fitted parameters with
    the persistence alpha + beta + gamma P(z < 0) of a variance shock (z the skew-t innovation). arch's own
    likelihood pieces, minimised by Nelder-Mead (elementwise numpy only) because arch's SLSQP fit differs in the last
    digits with the BLAS thread count."""
    import arch

    y = 100 * ret
    model = arch.arch_model(y, p=1, o=1, q=1, dist="skewt")
    vol, dist = model.volatility, model.distribution
    e0 = y - y.mean()
    backcast, bounds = vol.backcast(e0), vol.variance_bounds(e0)

    def variance(x):                                               # x: mu, omega, a, g, b, ...
        sigma2 = np.empty_like(y)
        vol.compute_variance(x[1:5], y - x[0], sigma2, backcast, bounds)
        return sigma2

    def nll(x):
        mu, om, al, ga, be, nu, lam = x
        if min(om, al, ga, be) < 0 or al + ga / 2 + be >= 1 or nu <= 2.05 or abs(lam) >= 0.99:
            return 1e10
        return -dist.loglikelihood(x[5:], y - mu, variance(x))

    x = np.r_[y.mean(), vol.starting_values(e0), dist.starting_values(e0)]
    for tol in (1e-7, 1e-9):                                       # restart once to polish
        x = minimize(nll, x, method="Nelder-Mead",
                     options=dict(maxfev=20000, xatol=tol, fatol=tol, adaptive=True)).x
    mu, om, al, ga, be, nu, lam = (float(v) for v in x)
    eps = y - mu                                                   # (N,)
    h = om + (al + ga * (eps < 0)) * eps**2 + be * variance(x)     # variance of day t+1 given t
    p_neg = float(dist.cdf(np.array([0.0]), np.array([nu, lam]))[0])
    persistence = al + be + ga * p_neg
    params = {"mu": mu, "omega": om, "alpha": al, "gamma": ga, "beta": be, "skewt_eta": nu,
              "skewt_lambda": lam, "loglik": -float(nll(x)), "persistence": persistence,
              "p_negative": p_neg}
    return h, om / (1 - persistence), params


def _atm_variance(h: np.ndarray, vbar: float, maturities: np.ndarray) -> np.ndarray:
    """Model-expected average daily variance (%^2) from t to each maturity: (N, n_mat)."""
    q0 = h[:DAYS_PER_YEAR].mean()
    q, _ = lfilter([PHI_SLOW], [1, PHI_SLOW - 1], h, zi=[(1 - PHI_SLOW) * q0])   # (N,)
    n = np.round(DAYS_PER_YEAR * maturities)                                      # (n_mat,)
    avg = lambda p: (1 - p**n) / (n * (1 - p))                                    # noqa: E731
    return vbar + (q - vbar)[:, None] * avg(P_LONG) + (h - q)[:, None] * avg(P_SHORT)


def _ar1(phi: float, sd: float, shocks: np.ndarray) -> np.ndarray:
    """Stationary AR(1) (N,) with persistence phi and sd `sd` driven by unit-variance shocks (N,)."""
    e = shocks * (sd * np.sqrt(1 - phi**2))
    e[0] = shocks[0] * sd                                          # started from its stationary law
    return lfilter([1.0], [1.0, -phi], e)


def _factors(ret: np.ndarray, h: np.ndarray, vbar: float, mu: float):
    """The VRP, slope and skew factors (each (N,)): AR(1)s with their own shocks (FACTOR_SEED); the VRP
    factor's shocks are correlated VRP_RET_CORR with the day's GARCH-standardised return, sign flipped
    so that a sell-off raises it (h[t - 1] is day t's variance; vbar stands in on the first day)."""
    u = np.random.default_rng(FACTOR_SEED).standard_normal((3, len(ret)))   # (3, N)
    z = -(100 * ret - mu) / np.sqrt(np.r_[vbar, h[:-1]])                    # (N,)
    vrp = _ar1(VRP_PHI, VRP_SD, VRP_RET_CORR * z + np.sqrt(1 - VRP_RET_CORR**2) * u[0])
    slope = SLOPE_MEAN + _ar1(SLOPE_PHI, SLOPE_SD, u[1])
    skew = _ar1(SKEW_PHI, SKEW_SD, u[2])
    return vrp, slope, skew


def _market_variance(h, vbar, maturities, vrp_factor, slope_factor) -> np.ndarray:
    """Annualised ATM variance before the scalar VRP (N, n_mat): the model's expected variance shrunk
    towards vbar (LONG_RUN_WEIGHT), times the mean-one VRP factor and the slope factor. At 1 month
    both factors' loadings are exactly 1 and 0."""
    T = np.asarray(maturities, dtype=float)
    model = _atm_variance(h, vbar, T) * DAYS_PER_YEAR / 1e4                       # (N, n_mat)
    vb = vbar * DAYS_PER_YEAR / 1e4
    load = np.minimum(1.0, (T / VIX_MATURITY) ** -VRP_TERM_POWER)               # (n_mat,)
    tilt = np.log(T / VIX_MATURITY) / np.log(1.0 / VIX_MATURITY)                # 0 at 1m, 1 at 1y
    log_f = (load * vrp_factor[:, None] - (load * VRP_SD) ** 2 / 2 + tilt * slope_factor[:, None])
    return ((1 - LONG_RUN_WEIGHT) * model + LONG_RUN_WEIGHT * vb) * np.exp(log_f)


def ssvi_vols(atm_var: np.ndarray, rho: np.ndarray, maturities, moneyness) -> np.ndarray:
    """SSVI implied vols (N, n_mat, n_mon) from ATM annualised variance (N, n_mat), rho (N,)."""
    T = np.asarray(maturities, dtype=float)
    theta = (atm_var * T)[:, :, None]                               # (N, n_mat, 1)
    phi = ETA / theta**GAMMA
    k = np.log(np.asarray(moneyness, dtype=float))[None, None, :]  # (1, 1, n_mon)
    r = rho[:, None, None]
    w = theta / 2 * (1 + r * phi * k + np.sqrt((phi * k + r) ** 2 + 1 - r**2))
    return np.sqrt(w / T[None, :, None])


def _noise(n_days: int) -> np.ndarray:
    """Observation noise on the reference grid (N, 5, 5): stationary AR(1) per point, fixed seed."""
    z = np.random.default_rng(SEED).standard_normal((n_days, MATURITIES.size, MONEYNESS.size))
    z[0] /= np.sqrt(1 - NOISE_PHI**2)
    return lfilter([1.0], [1.0, -NOISE_PHI], z, axis=0) * NOISE_STD * np.sqrt(1 - NOISE_PHI**2)


def _on_grid(field: np.ndarray, maturities, moneyness) -> np.ndarray:
    """A reference-grid field (N, 5, 5) on another grid (N, n_mat, n_mon), exact at shared points:
    linear in maturity (flat outside the reference maturities) and a natural cubic spline in
    log-moneyness (linear beyond the reference strikes, which joins it with two continuous
    derivatives). Smooth in strike, not drawn afresh per point, because the smile must stay convex:
    on a 6x7 grid with strikes 0.9..1.1 the butterfly check fails on 97% of days with iid noise per
    point, 1.7% with piecewise-linear interpolation, none with the spline. Maturities past 2y keep
    the 2y noise, which a long, fine grid (1m..5y, 12 strikes 0.6..1.4) finds non-convex on ~4% of days."""
    from scipy.interpolate import CubicSpline

    mat, lk = np.asarray(maturities, dtype=float), np.log(np.asarray(moneyness, dtype=float))
    if np.array_equal(mat, MATURITIES) and np.array_equal(lk, np.log(MONEYNESS)):
        return field
    x = np.clip(mat, MATURITIES[0], MATURITIES[-1])
    i = np.clip(np.searchsorted(MATURITIES, x, side="right") - 1, 0, MATURITIES.size - 2)
    f = (x - MATURITIES[i]) / (MATURITIES[i + 1] - MATURITIES[i])
    wt = np.zeros((mat.size, MATURITIES.size))                    # (n_mat, 5) weights in T
    wt[np.arange(mat.size), i] = 1 - f
    wt[np.arange(mat.size), i + 1] += f

    nodes = np.log(MONEYNESS)
    spline = CubicSpline(nodes, np.eye(nodes.size), bc_type="natural")   # the spline is linear in
    end = np.clip(lk, nodes[0], nodes[-1])                                # the data: weights (n_mon, 5)
    wk = spline(end) + (lk - end)[:, None] * spline(end, 1)
    for j, v in enumerate(lk):                                    # bit-exact at shared strikes
        if v in nodes:
            wk[j] = nodes == v
    return np.einsum("ta,nab,kb->ntk", wt, field, wk)


def make_default_arrays(progress: bool = False, maturities=None, moneyness=None) -> dict:
    """Build the default dataset. Returns {'surface': (N, n_mat, n_mon) implied vols (day, maturity,
    moneyness), 'ret': (N,) daily log returns, 'dates': (N,) ISO strings, 'maturities',
    'moneyness', 'vix_corr': 1-month ATM vs VIX correlation on the overlap, 'components': dict
    of fitted and fixed parameters}. Deterministic. Another grid (maturities in years, moneyness K/S,
    both increasing) gives the same market on that grid (same calibration, same vix_corr and
    components); the default is the reference 5x5 grid."""
    mat = MATURITIES if maturities is None else np.asarray(maturities, dtype=float)
    mon = MONEYNESS if moneyness is None else np.asarray(moneyness, dtype=float)
    from arch.data import sp500, vix

    t0 = time.perf_counter()
    close = sp500.load()["Adj Close"]
    ret = np.diff(np.log(close.to_numpy(dtype=float)))                       # (N,)
    dates = np.array(close.index[1:].strftime("%Y-%m-%d"))                   # (N,)
    _log(progress, t0, f"{len(ret)} S&P 500 returns {dates[0]}..{dates[-1]}; fitting GJR-GARCH")
    h, vbar, garch = fit_garch(ret)

    # The factors that returns do not explain, then the ATM term structure (annualised variance) and
    # the VRP scalar from the VIX overlap, always on the internal 1-month ATM point so that it does not
    # depend on the grid.
    x_vrp, s_slope, k_skew = _factors(ret, h, vbar, garch["mu"])                 # (N,) each
    market_var = _market_variance(h, vbar, mat, x_vrp, s_slope)                 # (N, n_mat)
    var_1m = _market_variance(h, vbar, np.array([VIX_MATURITY]), x_vrp, s_slope)   # (N, 1)
    v = vix.load()["vix"].dropna()
    v_dates = np.array(v.index.strftime("%Y-%m-%d"))
    common, i_model, i_vix = np.intersect1d(dates, v_dates, return_indices=True)
    vix_var = (v.to_numpy(dtype=float)[i_vix] / 100) ** 2                   # (n_overlap,)
    vrp = float(vix_var.mean() / var_1m[i_model, 0].mean())
    atm_var = vrp * market_var                                               # (N, n_mat)
    _log(progress, t0, f"VIX overlap {common[0]}..{common[-1]} ({len(common)} days), VRP {vrp:.3f}")

    # Skew correlation moving with the recent return (steeper after sell-offs) and the skew factor.
    csum = np.concatenate([[0.0], np.cumsum(ret)])
    recent = csum[1:] - csum[np.maximum(np.arange(1, len(ret) + 1) - RHO_WINDOW, 0)]   # (N,)
    rho = np.clip(RHO0 + RHO_BETA * recent + k_skew, *RHO_BOUNDS)
    surface = ssvi_vols(atm_var, rho, mat, mon)                 # (N, n_mat, n_mon)

    # Persistent observation noise: stationary AR(1) on the reference grid, fixed seed.
    noise = _noise(len(ret))                                      # (N, 5, 5)
    surface = surface + _on_grid(noise, mat, mon)

    # The internal 1-month ATM vol (reference point [0, 2]) against the VIX, whatever the grid.
    atm_1m = ssvi_vols(vrp * var_1m, rho, [VIX_MATURITY], [1.0])[:, 0, 0] + noise[:, 0, 2]
    vix_corr = float(np.corrcoef(atm_1m[i_model], np.sqrt(vix_var))[0, 1])
    _log(progress, t0, f"done: surface {surface.shape}, 1m ATM vs VIX corr {vix_corr:.3f}")
    components = {**{f"garch_{k}": v for k, v in garch.items()},
                  "garch_unconditional_var_pct2": float(vbar), "vrp_variance_factor": vrp,
                  "phi_slow": PHI_SLOW, "p_short": P_SHORT, "p_long": P_LONG,
                  "ssvi_eta": ETA, "ssvi_gamma": GAMMA, "rho0": RHO0, "rho_beta": RHO_BETA,
                  "rho_min": RHO_BOUNDS[0], "rho_max": RHO_BOUNDS[1],
                  "rho_window_days": float(RHO_WINDOW), "noise_std": NOISE_STD,
                  "noise_phi": NOISE_PHI, "noise_seed": float(SEED),
                  "long_run_weight": LONG_RUN_WEIGHT, "vrp_phi": VRP_PHI, "vrp_sd": VRP_SD,
                  "vrp_ret_corr": VRP_RET_CORR, "vrp_term_power": VRP_TERM_POWER,
                  "slope_mean": SLOPE_MEAN, "slope_sd": SLOPE_SD, "slope_phi": SLOPE_PHI,
                  "skew_sd": SKEW_SD, "skew_phi": SKEW_PHI, "factor_seed": float(FACTOR_SEED)}
    return {"surface": surface, "ret": ret, "dates": dates, "maturities": mat.copy(),
            "moneyness": mon.copy(), "vix_corr": vix_corr, "components": components}


# --- the market statistics the data is checked against (notebook 01, tests) ---------------------

MARKET_SPAN = ("2014-01-01", "2018-12-31")   # where arch.data.vix has the real VIX
RV_HALFLIVES = (5, 21, 63, 126, 252)          # trading days: the EWMA realised vols the level is regressed on
MARKET_STATS = {                               # key: (label, band kind, band half-width)
    "level_r2": ("level R^2 on realised vol", "abs", 0.05),
    "level_resid_sd": ("level residual sd (log)", "rel", 0.15),
    "level_resid_ar1": ("level residual AR(1)", "abs", 0.05),
    "change_r2": ("daily change R^2 on r, |r|", "abs", 0.05),
    "change_corr": ("corr(daily change, r)", "abs", 0.05),
}


def vix_on(dates) -> np.ndarray:
    """The real VIX (arch.data.vix) / 100 on `dates` (ISO strings or datetime64), NaN where it has none."""
    from arch.data import vix

    v = vix.load()["vix"].dropna()
    labels = np.asarray(dates).astype("datetime64[D]").astype(str)
    out = np.full(labels.shape, np.nan)
    _, i, j = np.intersect1d(labels, np.array(v.index.strftime("%Y-%m-%d")), return_indices=True)
    out[i] = v.to_numpy(dtype=float)[j] / 100
    return out


def _ols(y: np.ndarray, x: np.ndarray):
    """Least squares of y (n,) on an intercept and x (n, k): (residuals (n,), R^2)."""
    X = np.column_stack([np.ones(len(y)), x])
    e = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    return e, float(1 - e.var() / y.var())


def market_stats(iv_1m, ret, dates, span=MARKET_SPAN) -> dict:
    """How a 1-month ATM vol series (N,) moves against the returns (N,), on the days of `span` where it is
    finite (pass NaN elsewhere, e.g. to keep the real VIX's days): level_r2, level_resid_sd,
    level_resid_ar1 from log iv regressed on the log EWMA realised vols (RV_HALFLIVES, computed over the
    whole return history, then restricted), change_r2 from the daily log change between consecutive
    kept days regressed on that day's return and its absolute value, change_corr = corr(change, return);
    n_days the days kept. Plain least squares with an intercept."""
    from .data import ewma_vol

    iv, r = np.asarray(iv_1m, dtype=float), np.asarray(ret, dtype=float)
    labels = np.asarray(dates).astype("datetime64[D]").astype(str)
    idx = np.flatnonzero((labels >= span[0]) & (labels <= span[1]) & np.isfinite(iv))   # (n,)
    rv = np.column_stack([np.log(ewma_vol(r, h)) for h in RV_HALFLIVES])[idx]              # (n, 5)
    y = np.log(iv[idx])
    e, level_r2 = _ols(y, rv)
    dy, r1 = np.diff(y), r[idx[1:]]                                                        # (n - 1,)
    _, change_r2 = _ols(dy, np.column_stack([r1, np.abs(r1)]))
    return {"level_r2": level_r2, "level_resid_sd": float(e.std()),
            "level_resid_ar1": float(np.corrcoef(e[:-1], e[1:])[0, 1]), "change_r2": change_r2,
            "change_corr": float(np.corrcoef(dy, r1)[0, 1]), "n_days": len(idx)}


def market_band(key: str, target: float) -> tuple[float, float]:
    """The band around the real VIX's value of a MARKET_STATS statistic that the data must fall in."""
    _, kind, width = MARKET_STATS[key]
    half = width * abs(target) if kind == "rel" else width
    return target - half, target + half


def market_comparison(iv_1m, ret, dates, span=MARKET_SPAN) -> dict:
    """market_stats of the real VIX and of `iv_1m` on the same days (those of `span` where both exist):
    {key: {"vix", "data", "lo", "hi", "inside"}} plus "n_days"."""
    v = vix_on(dates)
    iv = np.where(np.isfinite(v), np.asarray(iv_1m, dtype=float), np.nan)
    real, mine = market_stats(v, ret, dates, span), market_stats(iv, ret, dates, span)
    out = {"n_days": mine["n_days"]}
    for key in MARKET_STATS:
        lo, hi = market_band(key, real[key])
        out[key] = {"vix": real[key], "data": mine[key], "lo": lo, "hi": hi,
                    "inside": bool(lo <= mine[key] <= hi)}
    return out
