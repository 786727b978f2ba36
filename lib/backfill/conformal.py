"""Split-conformal calibration of quantile forecasts (conformalised quantile regression, one level
at a time): fitted on backfills from validation-split origins, applied to test backfills, separately
per horizon bucket (e.g. the pass index day // horizon) and per grid point.

For each level tau the residual r = truth - q_tau is collected over all calibration days of a bucket
and the calibrated quantile is q_tau + shift_tau, shift_tau an order statistic of r with the
finite-sample correction: the ceil((n+1) tau)-th smallest of n residuals for tau > 0.5 (then
P(y <= q + shift) >= tau for an exchangeable new day), the floor((n+1) tau)-th for tau < 0.5 (so the
lower tail holds at most tau), the plain median for tau = 0.5. The p05-p95 interval then covers at
least ~90%. Arrays in vols: quantiles (Q, days, n_mat, n_mon), truth (days_known, n_mat, n_mon).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Calibration:
    """Per-bucket, per-level, per-grid-point additive shifts and the calibration days behind them."""
    levels: tuple                 # (Q,) quantile levels, increasing
    buckets: np.ndarray           # (n_buckets,) sorted bucket labels seen in calibration
    shift: np.ndarray             # (n_buckets, Q, n_mat, n_mon) added to the raw quantiles
    n: np.ndarray                 # (n_buckets,) calibration days per bucket

    def to_dict(self) -> dict:
        """Plain lists, JSON-able."""
        return {"levels": [float(x) for x in self.levels], "buckets": [int(b) for b in self.buckets],
                "shift": np.asarray(self.shift, float).tolist(), "n": [int(k) for k in self.n]}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(levels=tuple(float(x) for x in d["levels"]), buckets=np.asarray(d["buckets"], int),
                   shift=np.asarray(d["shift"], float), n=np.asarray(d["n"], int))


def _order_stat_index(n: int, tau: float) -> int:
    """0-based index of the conformal order statistic of n residuals for level tau (see module doc)."""
    k = math.ceil((n + 1) * tau - 1e-9) if tau > 0.5 else math.floor((n + 1) * tau + 1e-9)
    return min(max(k, 1), n) - 1


def fit(windows, levels=(0.05, 0.5, 0.95)) -> Calibration:
    """Calibration from windows = [(quantiles (Q, days, n_mat, n_mon), truth (days_known, n_mat, n_mon),
    bucket (days,) int labels), ...]; only days where truth is known count."""
    levels = tuple(float(x) for x in levels)
    if not windows:
        raise ValueError("conformal.fit: no calibration windows")
    if not levels or np.any(np.diff(levels) <= 0) or not all(0 < x < 1 for x in levels):
        raise ValueError(f"conformal.fit: levels must be increasing in (0, 1), got {levels}")
    res, lab, grid = [], [], None
    for i, (q, truth, bucket) in enumerate(windows):
        q, y, b = np.asarray(q, float), np.asarray(truth, float), np.asarray(bucket).astype(int)
        if (q.ndim != 4 or q.shape[0] != len(levels) or y.ndim != 3 or y.shape[1:] != q.shape[2:]
                or len(y) > q.shape[1] or b.shape != (q.shape[1],) or (grid is not None and q.shape[2:] != grid)):
            raise ValueError(f"conformal.fit: window {i} shapes disagree: quantiles {q.shape} (Q={len(levels)}), "
                             f"truth {y.shape}, bucket {b.shape}" + (f", grid {grid}" if grid else ""))
        grid = q.shape[2:]
        n = len(y)
        res.append(y[None] - q[:, :n])                               # (Q, n, n_mat, n_mon)
        lab.append(b[:n])
    r = np.concatenate(res, axis=1)                                  # (Q, all days, n_mat, n_mon)
    lab = np.concatenate(lab)
    buckets = np.unique(lab)
    if buckets.size == 0:
        raise ValueError("conformal.fit: no calibration day has known truth")
    shift = np.empty((len(buckets), len(levels), *grid))
    counts = np.empty(len(buckets), int)
    for j, bk in enumerate(buckets):
        rb = r[:, lab == bk]                                         # (Q, n_b, n_mat, n_mon)
        counts[j] = rb.shape[1]
        for k, tau in enumerate(levels):
            if tau == 0.5:
                shift[j, k] = np.median(rb[k], axis=0)
            else:
                shift[j, k] = np.sort(rb[k], axis=0)[_order_stat_index(counts[j], tau)]
    return Calibration(levels=levels, buckets=buckets, shift=shift, n=counts)


def apply(cal: Calibration, quantiles, bucket) -> np.ndarray:
    """Calibrated quantiles (Q, days, n_mat, n_mon): raw + the shift of each day's bucket; a bucket not
    seen in calibration takes the nearest seen one (the last one beyond the calibrated horizons).
    Sorted along Q so the levels stay monotone."""
    q = np.asarray(quantiles, float)
    b = np.asarray(bucket).astype(int)
    if q.ndim != 4 or q.shape[0] != len(cal.levels) or q.shape[2:] != cal.shift.shape[2:] or b.shape != (q.shape[1],):
        raise ValueError(f"conformal.apply: quantiles {q.shape} / bucket {b.shape} do not match calibration "
                         f"(Q={len(cal.levels)}, grid {cal.shift.shape[2:]})")
    idx = np.abs(b[:, None] - np.asarray(cal.buckets)[None, :]).argmin(1)   # (days,) nearest, ties -> lower
    out = q + np.moveaxis(cal.shift[idx], 0, 1)                      # (Q, days, n_mat, n_mon)
    return np.sort(out, axis=0)
