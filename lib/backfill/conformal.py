"""Conformal calibration of backfill intervals: normalised, signed, per tail, Mondrian by lead time (docs/design.md
§5.7).

A backfill's truth is never observed in the backfilled period, so the calibration learns, on backfills from
validation-split origins (whose truth is known), how far the truth falls beyond each tail in units of a scale known
at backfill time, and applies that to test backfills. Two scales (`scale`, SCALES):

- 'halfwidth', the method's own half-widths, scores against its own tails (conformalised quantiles):
      lower tail  r = (y - q05) / s_lo,  s_lo = q50 - q05;   upper tail  r = (y - q95) / s_hi,  s_hi = q95 - q50
  calibrated q05' = q05 + s_lo r_lo, q95' = q95 + s_hi r_hi. The band can only grow as far as the method's own
  band does, which a model fitted on a calm span caps (its inputs are clipped to the training range).
- 'realised_vol', the market's scale s = RV_t sqrt(lead): the day's realised vol (from the returns, observed
  through the backfilled period) times the square root of the days since the anchor, scores against the median:
      r = (y - q50) / s for both tails;  calibrated q05' = q50 + s r_lo, q95' = q50 + s r_hi
  The calibrated band is then the method's median plus what the calibration backfills showed of its errors, in
  units of the market's volatility: it widens in a crisis whatever the method's own band does, and it is the same
  rule for every method (a method's raw band no longer enters; its raw row still shows it).

Scores are pooled over the whole grid and the days of one lead-time bin (days since the anchor, the last context
day: 1-10, 11-30, 31-90, 91+ by default), the Mondrian categories; a bin per maturity row (also tried) fits each
row's quirks of the validation span and carries them into the test. Pooled over the grid, the guarantee is on
average over its points: the realised-vol scale is one number per day for the whole grid, so points that move more
than the grid's average (short maturities, wings) miss more and calm points less. The method's own half-widths
differ per point but, out of regime, not in the right proportion either; per-point weights from the training
split's daily changes, the median's level or the method's own band shape were tried and spread the misses no
less. Chapter 09 shows the calibrated misses per grid point (`evaluate.coverage_by_point`).

With n scores in a bin, the lower tail takes the score r_(k), k = floor((n + 1) 0.05), and the upper tail r_(k'),
k' = ceil((n + 1) 0.95) (order statistics, 1-based): the split-conformal guarantee per tail (a new
exchangeable point falls below the calibrated q05 with probability <= 5%, above q95 with <= 5%), in scale-free
units, so that a shift learned in a volatile period moves a calm period's tail by the same *share* of its scale,
not by the same number of vol points. The median is never moved: calibrated RMSE is raw RMSE.

A bin with fewer than 19 scores (where (n + 1) 0.05 < 1) has no order statistic: it is empty, and its days take
the nearest non-empty lead bin; `Calibration.empty` names such bins. Where the
validation span is shorter than a backfill, origins score only the leads they reach, so the short-lead bins
fill first.

The unit of exchangeability (`unit`). With `unit="day"` the scores of every calibration day and grid point are pooled
and treated as exchangeable with the test's, which the days of one backfill are not: they share one regime and one
path error. With `unit="backfill"` (the default of the params) the unit is a whole calibration backfill: each one's
own order statistics per tail and lead bin (the shift that backfill alone needed), and the calibration keeps the
most extreme of the K backfills. If a test backfill is exchangeable with the calibration backfills, the chance
that it needs more than that shift is at most 1 / (K + 1) per tail (split conformal over K units, the largest of
K + 1): `confidence` = K / (K + 1) that the backfill's own miss rate per tail is at most 5% in the bin. A test
period in the regime of any one calibration backfill is then covered, which pooling, dominated by the most common
regime, does not give.

crepes' ConformalPredictiveSystem (fit with `sigmas` and `bins`, `predict(lower_percentiles=5)` /
`higher_percentiles=95`) computes the same two order statistics (the tests check it), but it builds each test
point's whole predictive distribution in a Python loop (n_test x n_calibration), minutes to hours at the sizes of
a backfill evaluation (~10^5 test points); here the two order statistics are taken once per bin.

Arrays: quantiles (3, days, n_mat, n_mon) for levels (0.05, 0.5, 0.95), truth (days_known, n_mat, n_mon),
lead (days,) days since the anchor (1 = the first backfilled day), rv (days,) realised vol of each backfilled day.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = (0.05, 0.5, 0.95)
UNITS = ("day", "backfill")     # what the calibration treats as exchangeable
SCALES = ("halfwidth", "realised_vol")   # what a score is measured in: the method's own half-width, or RV sqrt(lead)
LEAD_BINS = (1, 11, 31, 91)      # lower edges (days since the anchor) of the Mondrian lead-time bins
MIN_SCALE = 1e-4                 # floor on any scale (a half-width in vol, or RV x sqrt(days))


@dataclass(eq=False)
class Calibration:
    """Per lead bin, the normalised score quantile of each tail, and what they rest on."""
    lead_bins: tuple                 # (n_bins,) lower edges of the lead-time bins, increasing, first 1
    lower: np.ndarray                # (n_bins,) r_(k) of the lower tail, NaN where the bin is empty
    upper: np.ndarray                # (n_bins,) r_(k') of the upper tail, NaN where empty
    n: np.ndarray                    # (n_bins,) scores per bin (days x grid points)
    rv_range: tuple                  # (min, max) realised vol over the calibration days (None if not given)
    windows: int = 0                 # calibration backfills
    unit: str = "day"                # UNITS: pooled days, or whole backfills (the most extreme of them)
    units: np.ndarray | None = None  # (n_bins,) backfills with an order statistic of their own in the bin (unit backfill)
    scale: str = "halfwidth"         # SCALES: the method's own half-widths, or realised vol x sqrt(lead)

    def confidence(self) -> np.ndarray:
        """(n_bins,) K / (K + 1) per bin for unit 'backfill' (K backfills), NaN for unit 'day' or an empty bin."""
        if self.unit != "backfill" or self.units is None:
            return np.full(len(self.lead_bins), np.nan)
        k = np.asarray(self.units, float)
        return np.where(k > 0, k / (k + 1), np.nan)

    def empty(self) -> list[str]:
        """The lead bins (as 'a-b days') with no usable order statistic."""
        return [bin_label(self.lead_bins, j) for j in range(len(self.lead_bins))
                if not (np.isfinite(self.lower[j]) and np.isfinite(self.upper[j]))]

    def to_dict(self) -> dict:
        """Plain lists, JSON-able (NaN as None)."""
        f = lambda a: [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float)]  # noqa: E731
        return {"lead_bins": [int(x) for x in self.lead_bins], "lower": f(self.lower), "upper": f(self.upper),
                "n": np.asarray(self.n, int).tolist(), "windows": int(self.windows),
                "rv_range": None if self.rv_range is None else [float(x) for x in self.rv_range],
                "unit": self.unit, "units": None if self.units is None else np.asarray(self.units, int).tolist(),
                "scale": self.scale, "empty_bins": self.empty()}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        a = lambda x: np.array([np.nan if v is None else v for v in x], float)  # noqa: E731
        return cls(lead_bins=tuple(int(x) for x in d["lead_bins"]), lower=a(d["lower"]), upper=a(d["upper"]),
                   n=np.asarray(d["n"], int), rv_range=None if d.get("rv_range") is None else tuple(d["rv_range"]),
                   windows=int(d.get("windows", 0)), unit=d.get("unit", "day"),
                   units=None if d.get("units") is None else np.asarray(d["units"], int),
                   scale=_scale(d.get("scale", "halfwidth")))


def _scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"conformal: scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return scale


def bin_label(lead_bins, j: int) -> str:
    """'1-10 days', ..., '91+ days'."""
    lo = lead_bins[j]
    return f"{lo}+ days" if j == len(lead_bins) - 1 else f"{lo}-{lead_bins[j + 1] - 1} days"


def lead_bin(lead, lead_bins=LEAD_BINS) -> np.ndarray:
    """(days,) index of each lead's bin."""
    lead = np.asarray(lead)
    if np.any(lead < 1):
        raise ValueError(f"leads must be >= 1 day, got {lead.min()}")
    return np.searchsorted(np.asarray(lead_bins), lead, side="right") - 1


def lower_rank(n: int, tau: float = 0.05) -> int:
    """1-based rank of the lower tail's order statistic among n scores; 0 when n is too small."""
    return math.floor((n + 1) * tau + 1e-9)


def upper_rank(n: int, tau: float = 0.95) -> int:
    """1-based rank of the upper tail's order statistic; n + 1 (none) when n is too small."""
    return math.ceil((n + 1) * tau - 1e-9)


def realised_vol_scale(rv, lead) -> np.ndarray:
    """(days,) the 'realised_vol' scale: the day's realised vol times sqrt(days since the anchor), floored."""
    rv, lead = np.asarray(rv, float), np.asarray(lead, float)
    if rv.shape != lead.shape:
        raise ValueError(f"conformal: realised vol {rv.shape} and lead {lead.shape} must have one value per day")
    if not np.isfinite(rv).all():
        raise ValueError("conformal: realised vol is not finite on some backfilled day")
    return np.maximum(rv * np.sqrt(lead), MIN_SCALE)


def scores(q, truth, s=None):
    """Signed normalised scores of the days with known truth: (lower, upper), each (days_known, n_mat, n_mon).
    Without `s`: against the method's own tails and half-widths ('halfwidth'); with s (days,) the market scale:
    both tails' (y - q50) / s ('realised_vol')."""
    q, y = np.asarray(q, float), np.asarray(truth, float)
    n = len(y)
    lo, mid, hi = q[0, :n], q[1, :n], q[2, :n]
    if s is not None:
        z = (y - mid) / np.asarray(s, float)[:n, None, None]
        return z, z
    return (y - lo) / np.maximum(mid - lo, MIN_SCALE), (y - hi) / np.maximum(hi - mid, MIN_SCALE)


def _check(q, y, lead, i):
    q, y, lead = np.asarray(q, float), np.asarray(y, float), np.asarray(lead)
    if q.ndim != 4 or q.shape[0] != 3 or y.ndim != 3 or y.shape[1:] != q.shape[2:] or len(y) > q.shape[1] \
            or lead.shape != (q.shape[1],):
        raise ValueError(f"conformal: window {i} shapes disagree: quantiles {q.shape} (need 3 levels), truth {y.shape}, "
                         f"lead {lead.shape}")
    return q, y, lead


def _order_stats(lo_s, hi_s) -> tuple[float, float]:
    """The lower tail's and the upper tail's order statistic of one set of scores; NaN where too few."""
    a, b = np.sort(np.ravel(lo_s)), np.sort(np.ravel(hi_s))
    k = len(a)
    return (a[lower_rank(k) - 1] if lower_rank(k) >= 1 else np.nan,
            b[upper_rank(k) - 1] if upper_rank(k) <= k else np.nan)


def fit(windows, lead_bins=LEAD_BINS, rv=None, unit: str = "day", scale: str = "halfwidth") -> Calibration:
    """Calibration from windows = [(quantiles (3, days, n_mat, n_mon), truth (days_known, n_mat, n_mon),
    lead (days,)), ...]; only days with known truth count. `rv` [(days_known,) realised vol per window] records the
    range of realised vol the calibration saw (optional), and is the market scale's (required for 'realised_vol').
    `unit` (UNITS): pool the scores of all days ('day'), or take each backfill's own order statistics and keep the
    most extreme ('backfill'). `scale` (SCALES): what a score is measured in (module docstring)."""
    if unit not in UNITS:
        raise ValueError(f"conformal: unit must be one of {', '.join(UNITS)}, got {unit!r}")
    _scale(scale)
    if scale == "realised_vol" and (rv is None or len(rv) != len(windows)):
        raise ValueError("conformal: scale 'realised_vol' needs the realised vol of every calibration window's days")
    lead_bins = tuple(int(x) for x in lead_bins)
    if not lead_bins or lead_bins[0] != 1 or any(b <= a for a, b in zip(lead_bins, lead_bins[1:])):
        raise ValueError(f"conformal: lead bins must be increasing lower edges starting at 1, got {lead_bins}")
    if not windows:
        raise ValueError("conformal: no calibration windows")
    lo_s, hi_s, bins, grid = [], [], [], None
    for i, (q, y, lead) in enumerate(windows):
        q, y, lead = _check(q, y, lead, i)
        if grid is not None and q.shape[2:] != grid:
            raise ValueError(f"conformal: window {i} shapes disagree: grid {q.shape[2:]}, earlier windows {grid}")
        grid = q.shape[2:]
        s = None
        if scale == "realised_vol":
            r = np.asarray(rv[i], float)[:len(y)]
            if len(r) < len(y):
                raise ValueError(f"conformal: window {i} has realised vol for {len(r)} of its {len(y)} known days")
            s = realised_vol_scale(r, lead[:len(y)])
        a, b = scores(q, y, s)
        lo_s.append(a), hi_s.append(b), bins.append(lead_bin(lead[:len(y)], lead_bins))
    if sum(len(x) for x in bins) == 0:
        raise ValueError("conformal: no calibration day has known truth")
    nb = len(lead_bins)
    n = np.array([sum(int((x == j).sum()) * int(np.prod(grid)) for x in bins) for j in range(nb)])
    units = None
    if unit == "day":                                             # (days, n_mat, n_mon) pooled over the windows
        lo_all, hi_all, b_all = np.concatenate(lo_s), np.concatenate(hi_s), np.concatenate(bins)
        lower, upper = np.array([_order_stats(lo_all[b_all == j], hi_all[b_all == j]) for j in range(nb)]).T
    else:                                                         # (K, n_bins) each backfill's own, then the extreme
        per = np.array([[_order_stats(a[b == j], c[b == j]) for j in range(nb)] for a, c, b in zip(lo_s, hi_s, bins)])
        ok = np.isfinite(per).all(2)                                                    # (K, n_bins)
        units = ok.sum(0)
        lower = np.where(units > 0, np.where(ok, per[..., 0], np.inf).min(0), np.nan)
        upper = np.where(units > 0, np.where(ok, per[..., 1], -np.inf).max(0), np.nan)
    if np.isnan(lower).all():
        need = "backfill" if unit == "backfill" else "lead bin"
        raise ValueError(f"conformal: no {need} has the 19 scores a 5% order statistic needs in a lead bin "
                         f"({n.sum()} in all)")
    rv_range = None
    if rv is not None:
        r = np.concatenate([np.asarray(x, float) for x in rv])
        rv_range = (float(r.min()), float(r.max())) if r.size else None
    return Calibration(lead_bins=lead_bins, lower=lower, upper=upper, n=n, rv_range=rv_range, windows=len(windows),
                       unit=unit, units=units, scale=scale)


def _filled(table: np.ndarray) -> np.ndarray:
    """Each empty (NaN) lead bin takes the nearest non-empty bin (ties: the shorter lead)."""
    ok = np.flatnonzero(np.isfinite(table))
    out = table.copy()
    for j in np.flatnonzero(~np.isfinite(table)):
        out[j] = table[ok[np.abs(ok - j).argmin()]]
    return out


def apply(cal: Calibration, quantiles, lead, rv=None) -> np.ndarray:
    """Calibrated quantiles (3, days, n_mat, n_mon): the median as given, each tail at its bin's score times the
    day's scale, from the method's own tail ('halfwidth') or from the median ('realised_vol', which needs `rv`
    (days,)); the tails never cross the median."""
    q = np.asarray(quantiles, float)
    lead = np.asarray(lead)
    if q.ndim != 4 or q.shape[0] != 3 or lead.shape != (q.shape[1],):
        raise ValueError(f"conformal: quantiles {q.shape} / lead {lead.shape} do not match (3 levels, one lead per day)")
    b = lead_bin(lead, cal.lead_bins)                                   # (days,)
    lo_r, hi_r = _filled(cal.lower)[b][:, None, None], _filled(cal.upper)[b][:, None, None]   # (days, 1, 1)
    lo, mid, hi = q
    if _scale(cal.scale) == "realised_vol":
        if rv is None:
            raise ValueError("conformal: a 'realised_vol' calibration needs the realised vol of the backfilled days")
        s = realised_vol_scale(rv, lead)[:, None, None]                                              # (days, 1, 1)
        lo, hi = mid + s * lo_r, mid + s * hi_r
    else:
        lo, hi = lo + np.maximum(mid - lo, MIN_SCALE) * lo_r, hi + np.maximum(hi - mid, MIN_SCALE) * hi_r
    return np.stack([np.minimum(lo, mid), mid, np.maximum(hi, mid)])


def outside_share(cal: Calibration, rv) -> float | None:
    """Share of days whose realised vol lies outside the range the calibration days covered (where the
    exchangeability behind the guarantee is least credible)."""
    if cal.rv_range is None:
        return None
    r = np.asarray(rv, float)
    return float(np.mean((r < cal.rv_range[0]) | (r > cal.rv_range[1]))) if r.size else None
