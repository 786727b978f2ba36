"""Baselines in the VAE's array layout (a `generate.Backfill`), so one metric path serves all methods.

Econometric (the seed's): per grid point IV_t = a + b RV_t + c r_t + u_t with u_t AR(1), RV the EWMA
realised vol (lambda 0.94, annualised) of the returns; fitted on the training split. Over a backfill it
uses the realised returns and the last context residual; intervals from bootstrap paths whose AR(1)
innovations are resampled by whole days (keeping the cross-grid correlation).
Random walk: the last context surface, intervals from the training split's k-day changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .generate import Backfill
from .metrics import crps_ensemble, ewma_realized_vol


@dataclass
class Econometric:
    coef: np.ndarray        # (3, G): a, b, c per grid point
    phi: np.ndarray         # (G,) AR(1) coefficient of the residual
    innov: np.ndarray       # (T-1, G) AR(1) innovations of the training residuals (whole days)
    lam: float = 0.94

    @staticmethod
    def design(rv, ret):
        return np.column_stack([np.ones_like(rv), rv, ret])              # (T, 3)


def fit_econometric(surface, ret, span, lam: float = 0.94) -> Econometric:
    """OLS of IV on [1, RV, r] per grid point, then OLS AR(1) of the residuals, on days span[0]..span[1]."""
    rv = ewma_realized_vol(ret, lam)
    a, b = span
    Y = np.asarray(surface[a:b], float).reshape(b - a, -1)                   # (T, G)
    X = Econometric.design(rv[a:b], np.asarray(ret[a:b], float))
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)                             # (3, G)
    u = Y - X @ coef
    phi = (u[1:] * u[:-1]).sum(0) / (u[:-1] ** 2).sum(0)                     # (G,)
    return Econometric(coef, phi, u[1:] - phi * u[:-1], lam)


def econometric_backfill(model: Econometric, ds, start: int, days: int, n_paths: int, seed: int,
                         segment_len: int = 90, name: str = "") -> Backfill:
    """Backfill days [start, start+days) given the realised returns and the residual of day start-1."""
    if start < 1:
        raise ValueError(f"backfill start {start} has no context day before it")
    rv = ewma_realized_vol(ds.ret, model.lam)
    known = min(days, ds.n_days - start)
    X = Econometric.design(rv[start - 1:start + known], ds.ret[start - 1:start + known])   # (1+known, 3)
    mean = X @ model.coef                                                                   # (1+known, G)
    u0 = ds.surface[start - 1].reshape(-1) - mean[0]                                       # last context residual
    steps = np.arange(1, known + 1)[:, None]
    point = mean[1:] + model.phi ** steps * u0                                             # (known, G)
    rng = np.random.default_rng(seed)
    draws = model.innov[rng.integers(0, len(model.innov), size=(n_paths, known))]          # (N, known, G)
    u = np.empty_like(draws)
    prev = np.broadcast_to(u0, draws[:, 0].shape)
    for t in range(known):
        prev = model.phi * prev + draws[:, t]
        u[:, t] = prev
    paths = mean[None, 1:] + u                                                              # (N, known, G)
    return _as_backfill(ds, start, days, known, point, paths, segment_len, name, "econometric")


def fit_random_walk(surface, span, max_k: int) -> np.ndarray:
    """(max_k, 2, G): 5th and 95th percentiles of k-day changes x_{t+k} - x_t on the training split."""
    a, b = span
    x = np.asarray(surface[a:b], float).reshape(b - a, -1)
    out = np.empty((max_k, 2, x.shape[1]))
    for k in range(1, max_k + 1):
        d = x[k:] - x[:-k]
        out[k - 1] = np.percentile(d, [5, 95], axis=0)
    return out


def random_walk_backfill(changes: np.ndarray, ds, start: int, days: int, segment_len: int = 90,
                         name: str = "") -> Backfill:
    """The last context surface for every day; intervals from the k-day change quantiles."""
    if start < 1:
        raise ValueError(f"backfill start {start} has no context day before it")
    known = min(days, ds.n_days - start)
    if len(changes) < days:
        raise ValueError(f"random-walk intervals fitted to {len(changes)} days, backfill needs {days}")
    last = ds.surface[start - 1].reshape(-1)
    point = np.broadcast_to(last, (known, last.size)).copy()
    lo, hi = point + changes[:known, 0], point + changes[:known, 1]
    return _as_backfill(ds, start, days, known, point, None, segment_len, name, "random_walk", lo, hi)


def _as_backfill(ds, start, days, known, point, paths, segment_len, name, method, lo=None, hi=None) -> Backfill:
    shape = (known, *ds.grid)
    crps = None
    if paths is not None:
        lo, med, hi = np.percentile(paths, [5, 50, 95], axis=0)
        point = med
        crps = crps_ensemble(paths, ds.surface[start:start + known].reshape(known, -1)).reshape(shape)
    labels = ds.day_labels()
    r = lambda a: np.asarray(a).reshape(shape)                                             # noqa: E731
    return Backfill(name=name or method, start=start, days=known, horizon=segment_len, offset=segment_len,
                    passes=int(np.ceil(known / segment_len)), n_samples=0 if paths is None else len(paths),
                    dates=np.asarray(labels[start:start + known]).astype(str), p05=r(lo), p50=r(point), p95=r(hi),
                    spread05=r(lo), spread95=r(hi), sample_p50=np.zeros((0, *ds.grid), np.float32),
                    truth=ds.surface[start:start + known], segment=np.arange(known) // segment_len, crps=crps)
