"""Baselines in the VAE's array layout (a `generate.Backfill`), so one metric path serves all methods.

Econometric (the plan's; docs/design.md §7): per grid point IV_t = a + b RV_t + c r_t + u_t with u_t AR(1), RV the EWMA
realised vol (lambda 0.94, annualised) of the returns; fitted on the training split. Over a backfill it
uses the realised returns and the last context residual; intervals from bootstrap paths whose AR(1)
innovations are resampled by whole days (keeping the cross-grid correlation).
Random walk: the last context surface, intervals from the training split's k-day log changes (a vol stays
positive, and a move is proportional to the level, as vol moves are).

The strong baselines see what the VAE sees (the returns of every backfilled day and the context surface):
  har       per grid point, ridge regression of log vol on log EWMA realised vol at several half-lives, the
            return and the 20-day return, with an AR(1) residual anchored on the last context day;
  backbone  the trained VAE's own linear error-correction path (`model.Backbone.linear_path`) without the network, so
            what the network adds is the difference between the two.
Their intervals come from bootstrapped residual paths (`ErrorBank`): whole error paths of the method's own
forecasts from origins in the training split, scaled by realised vol to the power the training errors show.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import RISKMETRICS_HALFLIFE, RISKMETRICS_LAMBDA, ewma_vol, halflife_of
from .generate import Backfill
from .metrics import crps_ensemble

HAR_HALFLIVES = (5, 21, 63, 126, 252)           # days: a week, a month, a quarter, half a year, a year
HAR_RIDGE = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # penalties tried (on standardised inputs), chosen on validation


@dataclass
class Econometric:
    coef: np.ndarray        # (3, G): a, b, c per grid point
    phi: np.ndarray         # (G,) AR(1) coefficient of the residual
    innov: np.ndarray       # (T-1, G) AR(1) innovations of the training residuals (whole days)
    lam: float = RISKMETRICS_LAMBDA

    @staticmethod
    def design(rv, ret):
        return np.column_stack([np.ones_like(rv), rv, ret])              # (T, 3)


def fit_econometric(surface, ret, span, lam: float = RISKMETRICS_LAMBDA) -> Econometric:
    """OLS of IV on [1, RV, r] per grid point, then OLS AR(1) of the residuals, on days span[0]..span[1]; RV the
    EWMA realised vol with daily decay `lam`."""
    rv = ewma_vol(ret, halflife_of(lam))
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
    rv = ewma_vol(ds.ret, halflife_of(model.lam))
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


def fit_random_walk(surface, span, max_k: int, min_pairs: int = 20) -> np.ndarray:
    """(max_k, 2, G): 5th and 95th percentiles of k-day log changes log x_{t+k} - log x_t on the training split. A split too
    short for long k (fewer than `min_pairs` pairs) carries the last estimable k forward, widened by sqrt(k / k0)
    (a random walk's changes grow with the square root of the lead)."""
    a, b = span
    x = np.log(np.asarray(surface[a:b], float).reshape(b - a, -1))
    if len(x) < 2:
        raise ValueError(f"random walk: the training split ({len(x)} days) has no day-to-day change")
    k0 = max(1, min(max_k, len(x) - min_pairs))
    out = np.empty((max_k, 2, x.shape[1]))
    for k in range(1, k0 + 1):
        d = x[k:] - x[:-k]
        out[k - 1] = np.percentile(d, [5, 95], axis=0)
    for k in range(k0 + 1, max_k + 1):
        out[k - 1] = out[k0 - 1] * np.sqrt(k / k0)
    return out


def random_walk_backfill(changes: np.ndarray, ds, start: int, days: int, segment_len: int = 90,
                         name: str = "") -> Backfill:
    """The last context surface for every day; intervals from the k-day log-change quantiles."""
    if start < 1:
        raise ValueError(f"backfill start {start} has no context day before it")
    known = min(days, ds.n_days - start)
    if len(changes) < days:
        raise ValueError(f"random-walk intervals fitted to {len(changes)} days, backfill needs {days}")
    last = ds.surface[start - 1].reshape(-1)
    point = np.broadcast_to(last, (known, last.size)).copy()
    lo, hi = point * np.exp(changes[:known, 0]), point * np.exp(changes[:known, 1])
    return _as_backfill(ds, start, days, known, point, None, segment_len, name, "random_walk", lo, hi)


def _as_backfill(ds, start, days, known, point, paths, segment_len, name, method, lo=None, hi=None,
                 median_from_paths: bool = True) -> Backfill:
    shape = (known, *ds.grid)
    crps = None
    if paths is not None:
        lo, med, hi = np.percentile(paths, [5, 50, 95], axis=0)
        if median_from_paths:
            point = med
        lo, hi = np.minimum(lo, point), np.maximum(hi, point)
        crps = crps_ensemble(paths, ds.surface[start:start + known].reshape(known, -1)).reshape(shape)
    labels = ds.day_labels()
    r = lambda a: np.asarray(a).reshape(shape)                                             # noqa: E731
    return Backfill(name=name or method, start=start, days=known, horizon=segment_len, offset=segment_len,
                    passes=int(np.ceil(known / segment_len)), n_samples=0 if paths is None else len(paths),
                    dates=np.asarray(labels[start:start + known]).astype(str), p05=r(lo), p50=r(point), p95=r(hi),
                    spread05=r(lo), spread95=r(hi), sample_p50=np.zeros((0, *ds.grid), np.float32),
                    truth=ds.surface[start:start + known], segment=np.arange(known) // segment_len, crps=crps)


# --- strong baselines with the VAE's information -----------------------------------------------

def har_features(ret, halflives=HAR_HALFLIVES) -> np.ndarray:
    """(N, len(halflives) + 2) inputs known at each day's close: log EWMA realised vol per half-life
    (data.ewma_vol), the return and the 20-day return."""
    r = np.asarray(ret, float)
    r20 = np.convolve(r, np.ones(20))[:len(r)]                                  # sum of the last 20 returns
    return np.column_stack([*(np.log(ewma_vol(r, h)) for h in halflives), r, r20])


@dataclass
class Har:
    """Ridge regression of log vol on `har_features` per grid point (inputs standardised on the training split,
    intercept unpenalised) with an AR(1) residual; the forecast anchors the residual on the last context day."""
    coef: np.ndarray        # (1 + P, G) intercept and slopes on standardised inputs
    x_mean: np.ndarray      # (P,)
    x_std: np.ndarray       # (P,)
    phi: np.ndarray         # (G,) AR(1) coefficient of the residual, in [0, 1)
    ridge: float            # the penalty chosen on the validation split
    halflives: tuple = HAR_HALFLIVES

    def level(self, X) -> np.ndarray:
        """(T, G) fitted log vol of inputs X (T, P)."""
        return self.coef[0] + ((X - self.x_mean) / self.x_std) @ self.coef[1:]

    def log_forecast(self, ds, starts, L: int) -> np.ndarray:
        """(n, L, G) log-vol forecasts of days start..start+L-1 from each start's last context day start-1."""
        X = har_features(ds.ret, self.halflives)
        logy = np.log(ds.surface.reshape(ds.n_days, -1))
        k = np.arange(1, L + 1)[:, None]
        out = []
        for t in np.atleast_1d(starts):
            u0 = logy[t - 1] - self.level(X[t - 1:t])[0]
            out.append(self.level(X[t:t + L]) + self.phi ** k[:len(X[t:t + L])] * u0)
        return np.stack(out)


def _ridge(X, Y, lam: float) -> np.ndarray:
    """(1 + P, G) ridge solution of Y on [1, X] (X standardised), penalty lam * T on the slopes only."""
    T, P = X.shape
    A = np.column_stack([np.ones(T), X])
    pen = np.diag([0.0] + [lam * T] * P)
    return np.linalg.solve(A.T @ A + pen, A.T @ Y)


def fit_har(ds, train_span, val_span, halflives=HAR_HALFLIVES, penalties=HAR_RIDGE) -> Har:
    """Fit `Har` on the training split; the ridge penalty is the one whose level fit has the lowest RMSE (in vol)
    on the validation split, so that a short calm training span does not extrapolate wildly."""
    X = har_features(ds.ret, halflives)
    logy = np.log(ds.surface.reshape(ds.n_days, -1))
    (a, b), (va, vb) = train_span, val_span
    mu, sd = X[a:b].mean(0), X[a:b].std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = (X - mu) / sd
    best = None
    for lam in penalties:
        coef = _ridge(Z[a:b], logy[a:b], lam)
        pred = coef[0] + Z[va:vb] @ coef[1:]
        err = float(np.sqrt(np.mean((np.exp(pred) - np.exp(logy[va:vb])) ** 2)))
        if best is None or err < best[0]:
            best = (err, lam, coef)
    _, lam, coef = best
    u = logy[a:b] - (coef[0] + Z[a:b] @ coef[1:])
    phi = np.clip((u[1:] * u[:-1]).sum(0) / np.maximum((u[:-1] ** 2).sum(0), 1e-300), 0.0, 0.9999)
    return Har(coef, mu, sd, phi, float(lam), tuple(halflives))


@dataclass
class Backbone:
    """The trained VAE's linear error-correction path alone (`model.Backbone.linear_path`, no network): the median of
    the working model with its neural part switched off."""
    model: object

    def log_forecast(self, ds, starts, L: int) -> np.ndarray:
        """(n, L, G) log-vol forecasts of days start..start+L-1 from each start's last context day start-1."""
        import torch
        m = self.model
        feats = ds.features(m.cfg.rv_halflives)
        dev = m.scaler.s_mean.device
        out = []
        with torch.no_grad():
            for t in np.atleast_1d(starts):
                n = min(L, ds.n_days - t)
                f = torch.as_tensor(feats[t - 1:t + n][None], dtype=torch.float32, device=dev)   # (1, 1 + n, F)
                anchor = torch.as_tensor(ds.surface[t - 1][None], dtype=torch.float32, device=dev)
                lin = m.backbone.linear_path(m.scaler.norm_f(f), 1, anchor, m.scaler)[:, 1:] \
                    * m.scaler.c_std.flatten()                                              # (1, n, G) log change
                out.append(np.log(ds.surface[t - 1].reshape(-1)) + lin[0].double().cpu().numpy())
        return np.stack(out)


def has_backbone(model) -> bool:
    """Whether the model has a linear backbone (the working model: change target with known RV inputs)."""
    return getattr(model, "backbone", None) is not None


@dataclass
class ErrorBank:
    """Whole log-error paths of a method's own forecasts from training-split origins, divided by rv^gamma (rv the
    EWMA realised vol of each target day): bootstrap draws of whole paths keep the error's growth with lead and
    its correlation across the grid; multiplied by the backfilled days' rv^gamma they follow the market."""
    errors: np.ndarray      # (n_origins, L, G) normalised log errors
    gamma: float            # the errors' elasticity to realised vol on the training split, clipped to [0, 1]

    @property
    def length(self) -> int:
        return self.errors.shape[1]


def fit_error_bank(method, ds, span, days: int, every: int = 5, min_origins: int = 10) -> ErrorBank:
    """Error paths of `method.log_forecast` from origins every `every` days of `span` whose paths (up to `days`
    days) lie inside it. gamma: slope of log|error| on log rv after removing each lead's mean (pooled over the
    grid), clipped to [0, 1]."""
    a, b = span
    L = min(days, b - a - 1 - (min_origins - 1) * every)
    if L < 1:
        raise ValueError(f"error bank: the span {a}..{b} is too short for {min_origins} origins")
    starts = np.arange(a + 1, b - L + 1, every)
    rv = ewma_vol(ds.ret, RISKMETRICS_HALFLIFE)
    logy = np.log(ds.surface.reshape(ds.n_days, -1))
    f = method.log_forecast(ds, starts, L)                                     # (n, L, G)
    e = np.stack([logy[t:t + L] for t in starts]) - f
    lrv = np.log(np.stack([rv[t:t + L] for t in starts]))                       # (n, L)
    la = np.log(np.abs(e) + 1e-8).mean(2)                                      # (n, L) mean over the grid
    x, y = lrv - lrv.mean(0), la - la.mean(0)
    gamma = float(np.clip((x * y).sum() / max((x * x).sum(), 1e-300), 0.0, 1.0))
    return ErrorBank(e / np.exp(gamma * lrv)[..., None], gamma)


def linear_backfill(method, bank: ErrorBank, ds, start: int, days: int, n_paths: int, seed: int,
                    segment_len: int = 90, name: str = "", label: str = "") -> Backfill:
    """Backfill days [start, start + days) with a method's point forecast as the median and a bootstrap of whole
    error paths (scaled by the backfilled days' rv^gamma) as its predictive ensemble. Leads beyond the bank's
    length reuse its last lead's errors."""
    if start < 1:
        raise ValueError(f"backfill start {start} has no context day before it")
    known = min(days, ds.n_days - start)
    logf = method.log_forecast(ds, [start], known)[0]                          # (known, G)
    rv = ewma_vol(ds.ret, RISKMETRICS_HALFLIFE)[start:start + known]
    lead = np.minimum(np.arange(known), bank.length - 1)
    rng = np.random.default_rng(seed)
    draw = bank.errors[rng.integers(0, len(bank.errors), n_paths)][:, lead]    # (N, known, G)
    paths = np.exp(logf[None] + draw * (rv ** bank.gamma)[None, :, None])
    return _as_backfill(ds, start, days, known, np.exp(logf), paths, segment_len, name, label or "linear",
                        median_from_paths=False)
