"""Static-arbitrage repair (docs/design.md §5.6): map implied-vol surfaces to nearby surfaces that pass
metrics.calendar_violations and metrics.butterfly_violations.

Conventions as in metrics: surfaces (..., n_mat, n_mon) of implied vols in decimals, maturities in
years, moneyness K/S, zero rates, forward = spot, undiscounted calls C(K)/S. Any grid.

Why this method. With the forward equal to the spot, a call price at fixed K/S depends only on the
total variance w = sigma^2 T and rises with it, so both no-arbitrage conditions are convex sets of
call prices: per maturity, C convex in K with slopes in [-1, 0] (butterfly); per strike, C (i.e.
w) non-decreasing in T (calendar). The repair alternates projections onto the two sets, only on
surfaces that violate either check (the others are returned bit for bit):

(a) butterfly, per violating maturity row: the weighted L2 projection of the call prices onto
    {convex, slopes in [-1, 0]} with weights 1/vega^2, so that to first order it is the smallest
    change in vol (a price change dC moves the vol by dC/vega); a small dense QP (n_mon
    variables, n_mon constraints) solved for all rows at once by a primal-dual active-set
    (semismooth Newton) iteration, with the slope-constrained lower convex envelope of the prices
    as a fallback for the rare row where that does not settle or leaves the invertible price range.
    A symmetric projection moves a spike down *and* its neighbours up, where the lower envelope
    would only ever lower prices (a downward bias in the vols). Prices go back to vols by a
    bracketed Newton inversion of Black-Scholes on [VOL_MIN, VOL_MAX].
(b) calendar, per strike: weighted isotonic regression (the max-min formula of PAVA) of w along
    T with weights 1/(sigma T)^2, again the smallest change in vol to first order.

A few rounds of (a)+(b) leave almost every surface arbitrage-free. Whatever is left gets a finish
that is guaranteed: (a), then the running maximum of w along T at each strike. The running maximum
of call prices over maturities keeps every slice convex with slopes in [-1, 0] (a maximum of such
functions is one), so the result passes both checks by construction. Repaired surfaces pass the
checks at TOL, ten times inside metrics' default 1e-6.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .metrics import _grids, butterfly_violations, calendar_violations

VOL_MIN, VOL_MAX = 1e-4, 5.0   # the range of repaired vols (the Black-Scholes inversion's bracket)
TOL = 1e-7                     # repaired surfaces pass both checks at this tolerance
ROUNDS = 4                     # rounds of (butterfly, calendar) projections before the finish
_PDAS_ITERS = 30
_CHUNK = 4096                  # rows per block in the envelope fallback (memory ~ n^4 per row)


def repair(surface, maturities, moneyness) -> np.ndarray:
    """Nearby arbitrage-free surfaces (..., n_mat, n_mon): surfaces that already pass both checks
    (at metrics' default tolerance) come back unchanged, bit for bit; the others are repaired, as
    the module docstring describes, until they pass at TOL."""
    s, T, K = _grids(surface, maturities, moneyness)
    out = s.reshape(-1, T.size, K.size).copy()                          # (B, n_mat, n_mon)
    if out.size == 0:
        return out.reshape(s.shape)
    todo = np.flatnonzero(calendar_violations(out, T, K) | butterfly_violations(out, T, K))
    x = np.clip(out[todo], VOL_MIN, VOL_MAX)                            # (b, n_mat, n_mon)
    left = np.arange(len(todo))                                         # surfaces still violating
    for _ in range(ROUNDS):
        if left.size == 0:
            break
        y = _butterfly(x[left], T, K)
        y = _calendar(y, T, isotonic=True)
        x[left] = y
        left = left[_bad(y, T, K)]
    if left.size:
        x[left] = _calendar(_butterfly(x[left], T, K), T, isotonic=False)
    out[todo] = x
    return out.reshape(s.shape)


def repair_quantiles(p05, p50, p95, maturities, moneyness) -> tuple:
    """Repair the p05, p50 and p95 surfaces (days, n_mat, n_mon) of a forecast one by one, then keep them
    ordered around the repaired median."""
    lo, mid, hi = (repair(a, maturities, moneyness) for a in (p05, p50, p95))
    return np.minimum(lo, mid), mid, np.maximum(hi, mid)


def _bad(s, T, K) -> np.ndarray:
    """(B,) either check fails at TOL."""
    return calendar_violations(s, T, K, tol=TOL) | butterfly_violations(s, T, K, tol=TOL)


# --- Black-Scholes with S = 1, total standard deviation sd = sigma sqrt(T) ---------------------

def _call(sd, K):
    """Undiscounted call C/S for total std sd and strike K (broadcast); as metrics.call_prices."""
    sd = np.maximum(sd, 1e-150)
    d1 = -np.log(K) / sd + 0.5 * sd
    return ndtr(d1) - K * ndtr(d1 - sd)


def _dcall(sd, K):
    """dC/d(sd) = phi(d1)."""
    sd = np.maximum(sd, 1e-150)
    d1 = -np.log(K) / sd + 0.5 * sd
    return np.exp(-0.5 * d1**2) / np.sqrt(2 * np.pi)


def _implied_sd(price, K, lo, hi, guess, iters: int = 60):
    """Total std with _call(sd, K) = price, in [lo, hi] (prices outside map to the ends): Newton
    from `guess`, falling back to bisection whenever a step leaves the bracket. Arrays broadcast."""
    lo, hi = np.broadcast_to(lo, price.shape).copy(), np.broadcast_to(hi, price.shape).copy()
    Kb = np.broadcast_to(K, price.shape)
    below, above = price <= _call(lo, Kb), price >= _call(hi, Kb)
    x = np.clip(guess, lo, hi)
    for _ in range(iters):
        f = _call(x, Kb) - price
        lo = np.where(f < 0, x, lo)
        hi = np.where(f > 0, x, hi)
        step = f / np.maximum(_dcall(x, Kb), 1e-300)
        nx = x - step
        nx = np.where((nx > lo) & (nx < hi), nx, 0.5 * (lo + hi))
        done = (np.abs(f) <= 1e-15) | (hi - lo <= 1e-15 * np.maximum(hi, 1e-300))
        if done.all():
            break
        x = np.where(done, x, nx)
    return np.where(below, lo, np.where(above, hi, x))


# --- (a) butterfly: per maturity row --------------------------------------------------------------

def _constraints(K):
    """G (m, n), g (m,) with G x >= g <=> x convex on the grid with slopes in [-1, 0] (m = n)."""
    n = K.size
    h = np.diff(K)                                                      # (n-1,)
    G = np.zeros((n, n))
    G[0, :2] = [-1 / h[0], 1 / h[0]]                                    # first slope >= -1
    for i in range(1, n - 1):                                           # slopes non-decreasing
        G[i, i - 1:i + 2] = [1 / h[i - 1], -1 / h[i - 1] - 1 / h[i], 1 / h[i]]
    G[n - 1, n - 2:] = [1 / h[-1], -1 / h[-1]]                          # last slope <= 0
    g = np.zeros(n)
    g[0] = -1.0
    return G, g


def _project_rows(c, v, K):
    """Weighted L2 projection of rows c (R, n) onto G x >= g with weights 1/v^2 (v (R, n) > 0).
    Returns (x (R, n), ok (R,)); ok False where the active-set iteration did not settle."""
    G, g = _constraints(K)
    m = len(g)
    Winv = v**2                                                         # (R, n)
    M = (G * Winv[:, None, :]) @ G.T                                    # (R, m, m) = G W^-1 G^T
    scale = np.trace(M, axis1=1, axis2=2)[:, None, None] / m
    b = g - c @ G.T                                                     # (R, m) need G dx >= b
    act = b > 0                                                         # start: violated constraints
    x, ok = c.copy(), np.zeros(len(c), bool)
    rows = np.arange(len(c))
    eye = np.eye(m, dtype=bool)
    for _ in range(_PDAS_ITERS):
        a = act[rows]
        both = a[:, :, None] & a[:, None, :]
        A = np.where(both, M[rows], 0.0) + np.where(eye & ~a[:, :, None], 1.0, 0.0)
        A += np.where(eye & a[:, :, None], 1e-13 * scale[rows], 0.0)     # dependent active sets
        lam = np.linalg.solve(A, np.where(a, b[rows], 0.0)[..., None])[..., 0]   # (r, m)
        dx = Winv[rows] * (lam @ G)                                     # (r, n) = W^-1 G^T lam
        res = dx @ G.T - b[rows]                                        # (r, m) slack, >= 0 wanted
        new = np.where(a, lam > 0, res < -1e-13 * np.abs(b[rows]).max(1, keepdims=True))
        x[rows] = c[rows] + dx
        settled = (new == a).all(1)
        ok[rows[settled]] = True
        act[rows] = new
        rows = rows[~settled]
        if rows.size == 0:
            break
    return x, ok


def _envelope(c, K):
    """The largest function on the grid below c (R, n) that is convex with slopes in [-1, 0]:
    at each K_i the max over slopes b in [-1, 0] of min_j c_j + b (K_i - K_j); the max is at a
    chord slope or an end, so those are the candidates. Never above c."""
    n = K.size
    j, k = np.triu_indices(n, 1)
    out = np.empty_like(c)
    dK = K[:, None] - K[None, :]                                        # (n_i, n_j)
    for s in range(0, len(c), _CHUNK):
        cc = c[s:s + _CHUNK]
        b = np.clip((cc[:, k] - cc[:, j]) / (K[k] - K[j]), -1.0, 0.0)   # (r, P) chord slopes
        b = np.concatenate([b, np.full((len(cc), 2), [-1.0, 0.0])], 1)  # (r, P + 2)
        val = cc[:, None, None, :] + b[:, :, None, None] * dK           # (r, P+2, n_i, n_j)
        out[s:s + _CHUNK] = val.min(-1).max(1)
    return out


def _butterfly(s, T, K):
    """Repair the maturity rows of s (b, n_mat, n_mon) that fail the butterfly check at TOL."""
    s = s.copy()
    if K.size < 2:
        return s
    sd = s * np.sqrt(T)[:, None]                                        # (b, n_mat, n_mon)
    C = _call(sd, K)
    slope = np.diff(C, axis=-1) / np.diff(K)
    bad = ((slope > TOL) | (slope < -1 - TOL)).any(-1)                  # (b, n_mat)
    if K.size >= 3:
        bad |= (np.diff(slope, axis=-1) < -TOL).any(-1)
    ib, it = np.nonzero(bad)
    if ib.size == 0:
        return s
    Tr = T[it][:, None]                                                 # (R, 1)
    lo, hi = VOL_MIN * np.sqrt(Tr), VOL_MAX * np.sqrt(Tr)
    c, sdr = C[ib, it], sd[ib, it]                                      # (R, n_mon)
    vega = _dcall(sdr, K) * np.sqrt(Tr)                                 # dC/dsigma
    vega = np.maximum(vega, 1e-4 * vega.max(1, keepdims=True) + 1e-12)
    x, ok = _project_rows(c, vega, K)
    G, g = _constraints(K)
    ok &= (x >= _call(lo, K)).all(1) & (x <= _call(hi, K)).all(1)
    ok &= (x @ G.T - g >= -1e-12).all(1)
    if not ok.all():
        x[~ok] = _envelope(c[~ok], K)
    s[ib, it] = np.where(x == c, s[ib, it], _implied_sd(x, K, lo, hi, sdr) / np.sqrt(Tr))
    return s


# --- (b) calendar: per strike ----------------------------------------------------------------------

def _calendar(s, T, isotonic: bool):
    """Total variance made non-decreasing in T at each strike, for s (b, n_mat, n_mon): weighted
    isotonic regression (weights 1/(sigma T)^2), or the running maximum (isotonic=False)."""
    w0 = s**2 * T[:, None]                                              # (b, n_mat, n_mon)
    if isotonic:
        w = w0.copy()
        ib, ik = np.nonzero((np.diff(w0, axis=-2) < -TOL).any(-2))     # violating columns only
        if ib.size:
            w[ib, :, ik] = _isotonic(w0[ib, :, ik], 1 / (s[ib, :, ik] * T) ** 2)
    else:
        w = np.maximum.accumulate(w0, axis=-2)
    moved = np.abs(w - w0) > 1e-12 * w0                                 # the rest keeps its vols
    return np.where(moved, np.clip(np.sqrt(w / T[:, None]), VOL_MIN, VOL_MAX), s)


def _isotonic(y, wt):
    """Weighted isotonic (non-decreasing) regression along the last axis, y, wt (..., n):
    yhat_i = max_{a <= i} min_{b >= i} (weighted mean of y_a..y_b)."""
    n = y.shape[-1]
    z = np.zeros(y.shape[:-1] + (1,))
    cy = np.concatenate([z, np.cumsum(wt * y, -1)], -1)                 # (..., n+1)
    cw = np.concatenate([z, np.cumsum(wt, -1)], -1)
    a, b = np.triu_indices(n)
    avg = np.full(y.shape[:-1] + (n, n), np.inf)                        # (..., a, b), a <= b
    avg[..., a, b] = (cy[..., b + 1] - cy[..., a]) / (cw[..., b + 1] - cw[..., a])
    rmin = np.minimum.accumulate(avg[..., ::-1], axis=-1)[..., ::-1]    # min over b' >= b
    best = np.maximum.accumulate(rmin, axis=-2)                         # max over a' <= a
    return np.diagonal(best, axis1=-2, axis2=-1).copy()
