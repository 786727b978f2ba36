"""Evaluation (docs/design.md §8): the VAE's backfills against the baselines (the plan's econometric model and the
random walk, and the strong baselines with the VAE's own information: `har` and the VAE's linear `backbone`), all
scored by the same `metrics.score_backfill` on the same days, with conformally calibrated rows, significance tests
that count each calendar day once, and the plan's tables 6.2, 6.3 and 13.2."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import arbitrage, baselines, conformal, data, gates, metrics

SCALARS = ("rmse", "ci_violation", "ci_violation_sampling_spread", "cointegration_share", "arbitrage_share",
           "arbitrage_share_raw", "pass_ratio", "coverage_p05", "coverage_p50", "coverage_p95",
           "pinball_p05", "pinball_p50", "pinball_p95", "pinball_mean", "interval_score", "crps",
           "rv_outside_calibration")
CAL = "_cal"          # suffix of a method's conformally calibrated row


def fit_baselines(run, model, days: int) -> dict:
    """Every baseline fitted on the run's training split (`har`'s ridge penalty chosen on validation; `har` and
    `backbone` with their error banks of training-split origins): {method: (fitted, error bank or None)}.
    `backbone` only when the model has one (the working model)."""
    p, ds, sp = run.params, run.data, run.splits
    out = {"econometric": (baselines.fit_econometric(ds.surface, ds.ret, sp["train"]), None),
           "random_walk": (baselines.fit_random_walk(ds.surface, sp["train"], days), None)}
    har = baselines.fit_har(ds, sp["train"], sp["val"])
    out["har"] = (har, baselines.fit_error_bank(har, ds, sp["train"], days))
    if model is not None and baselines.has_backbone(model):
        bb = baselines.Backbone(model)
        out["backbone"] = (bb, baselines.fit_error_bank(bb, ds, sp["train"], days))
    return out


def baseline_backfills(run, fitted: dict, start: int, days: int, name: str) -> dict:
    """{method: Backfill} of every fitted baseline for one window."""
    p, ds = run.params, run.data
    H, n_boot = p["generation"]["horizon"], p["generation"]["bootstrap_paths"]
    out = {}
    for m, (f, bank) in fitted.items():
        if m == "econometric":
            out[m] = baselines.econometric_backfill(f, ds, start, days, n_boot, p["seed"] + start, segment_len=H,
                                                    name=name)
        elif m == "random_walk":
            out[m] = baselines.random_walk_backfill(f, ds, start, days, segment_len=H, name=name)
        else:
            out[m] = baselines.linear_backfill(f, bank, ds, start, days, n_boot, p["seed"] + start, segment_len=H,
                                               name=name, label=m)
    return out


def method_backfills(run, vae: dict, fitted: dict) -> dict:
    """{window: {method: Backfill}} for vae_o<O> (given as {(window, offset): Backfill}) and every fitted
    baseline (`fit_baselines`), each over the VAE backfill's own days."""
    out = {}
    for (name, offset), bf in vae.items():
        w = out.setdefault(name, {})
        w[f"vae_o{offset}"] = bf
        if not any(m in w for m in fitted):
            w.update(baseline_backfills(run, fitted, bf.start, bf.days, name))
    return out


def window_split(splits: dict, start: int) -> str:
    """The split a backfill's first day lies in: 'train (in-sample)', 'val', 'test' or 'outside the splits'."""
    for name, (a, b) in splits.items():
        if a <= start < b:
            return "train (in-sample)" if name == "train" else name
    return "outside the splits"


def score(run, bfs: dict, calibrations: dict | None = None) -> dict:
    """The `backfill` section of metrics.json: per window and method the scores, plus the truth's. A calibrated
    row also gets `rv_outside_calibration`: the share of its days whose realised vol lies outside the range the
    calibration days covered (where the conformal guarantee is least credible)."""
    ds = run.data
    rv = data.ewma_vol(ds.ret, data.RISKMETRICS_HALFLIFE)
    out = {}
    for name, methods in bfs.items():
        any_bf = next(iter(methods.values()))
        n = len(any_bf.truth)
        rv_w = rv[any_bf.start:any_bf.start + n]
        out[name] = {m: metrics.score_backfill(b.p05, b.p50, b.p95, b.truth, b.segment, rv_w, ds.maturities,
                                               ds.moneyness, spread=(b.spread05, b.spread95) if b.n_samples else None,
                                               crps=b.crps, arbitrage_raw=b.arbitrage_raw)
                     for m, b in methods.items()}
        for m in methods:
            if m.endswith(CAL) and calibrations and m.removesuffix(CAL) in calibrations:
                out[name][m]["rv_outside_calibration"] = conformal.outside_share(calibrations[m.removesuffix(CAL)], rv_w)
        out[name]["truth"] = {"cointegration_share": metrics.cointegration_share(any_bf.truth, rv_w),
                              "arbitrage_share": metrics.arbitrage_share(any_bf.truth, ds.maturities,
                                                                         ds.moneyness)["any"]}
    return out


def rolling_summary(scores: dict) -> dict:
    """Mean of each scalar metric over the rolling origins, per method (and the truth)."""
    roll = [v for k, v in scores.items() if k.startswith("rolling_")]
    if not roll:
        return {}
    out = {}
    for method in roll[0]:
        keys = [k for k in SCALARS if k in roll[0][method]]
        out[method] = {k: float(np.mean(v)) if (v := [r[method][k] for r in roll if r[method][k] is not None]) else None
                       for k in keys}
        if "rmse_by_pass" in roll[0][method]:
            n = min(len(r[method]["rmse_by_pass"]) for r in roll)
            out[method]["rmse_by_pass"] = [float(np.mean([r[method]["rmse_by_pass"][i] for r in roll]))
                                           for i in range(n)]
        out[method]["windows"] = len(roll)
    return out


def lead(b) -> np.ndarray:
    """(days,) days since the anchor (the last context day) of each backfilled day: 1, 2, ..."""
    return np.arange(1, len(b.p50) + 1)


def calibrate(calib: dict, test: dict, grid=None, rv=None, lead_bins=conformal.LEAD_BINS,
              unit: str = "day", scale: str = "halfwidth") -> tuple[dict, dict]:
    """Conformal calibration per method (`conformal`: signed per-tail scores in units of `scale`, the method's own
    half-width or the day's realised vol x sqrt(lead), pooled over the grid, Mondrian by lead time, whole backfills
    or days as the exchangeable `unit`), fitted on the backfills of validation-split origins `calib` ({window:
    {method: Backfill}}, each scored on the days whose truth it has) and applied to every test window. The median is
    never moved. A method whose raw surfaces were projected onto the arbitrage-free set (`arbitrage_raw` set) has its
    calibrated tails projected again, given `grid` = (maturities, moneyness). `rv` (N,) realised vol of every day
    records the calibration days' range, and is the market scale (required for scale 'realised_vol'). Returns (test
    with a `<method>_cal` row beside each method, {method: conformal.Calibration})."""
    if scale == "realised_vol" and rv is None:
        raise ValueError("calibrate: scale 'realised_vol' needs the realised vol series")
    cals = {}
    for m in next(iter(calib.values())):
        wins = [w[m] for w in calib.values()]
        cals[m] = conformal.fit([(np.stack([b.p05, b.p50, b.p95]), b.truth, lead(b)) for b in wins], lead_bins,
                                rv=None if rv is None else [rv[b.start:b.start + len(b.truth)] for b in wins],
                                unit=unit, scale=scale)
    out = {}
    for name, methods in test.items():
        out[name] = dict(methods)
        for m, b in methods.items():
            if m in cals:
                day_rv = None if rv is None else rv[b.start:b.start + len(b.p50)]
                lo, mid, hi = conformal.apply(cals[m], np.stack([b.p05, b.p50, b.p95]), lead(b), day_rv)
                if b.arbitrage_raw is not None and grid is not None:
                    lo, _, hi = arbitrage.repair_quantiles(lo, mid, hi, *grid)
                    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)
                out[name][m + CAL] = dataclasses.replace(b, p05=lo, p50=b.p50, p95=hi, n_samples=0, crps=None)
    return out, cals


def calendar_losses(bfs: dict, loss: str = "squared") -> tuple[np.ndarray, dict]:
    """(calendar day indices (U,), {method: (U,) daily loss averaged over the rolling origins covering the day}):
    the series a significance test may treat as one observation per day."""
    roll = [w for w in bfs if w.startswith("rolling_")]
    if not roll:
        return np.zeros(0, int), {}
    out, days = {}, None
    for m in bfs[roll[0]]:
        bs = [bfs[w][m] for w in roll]
        days, out[m] = metrics.by_calendar_day([b.start for b in bs],
                                               [metrics.daily_loss(loss, b.p05, b.p50, b.p95, b.truth) for b in bs])
    return days, out


def _h(horizon: int, T: int) -> int:
    return max(min(int(horizon), T // 2), 1)


def _pass_len(bfs: dict, T: int) -> int:
    """The rolling origins' pass length capped at half of T days: the HLN horizon and the bootstrap block."""
    return _h(next(b for w, ms in bfs.items() if w.startswith("rolling_") for b in ms.values()).horizon, T)


def dm_tests(bfs: dict, reference: str, loss: str = "squared") -> dict:
    """Diebold-Mariano (`metrics.dm_test`: statsmodels, HLN correction) of `reference` against every other method on
    the daily loss averaged over the grid, per named window and on the rolling origins' per-calendar-day loss
    (`calendar_losses`: each day counted once, however many overlapping origins cover it). Path forecasts have
    errors correlated over a pass: the bandwidth is H - 1 and the HLN horizon H (the segment length, capped at
    half the days). Negative statistic: the reference is more accurate. With the squared loss the calibrated rows
    are left out: they share their raw medians."""
    out = {}
    for name, methods in bfs.items():
        if name.startswith("rolling_"):
            continue
        ref = methods[reference]
        T = len(ref.truth)
        h = _h(ref.horizon, T)
        la = metrics.daily_loss(loss, ref.p05, ref.p50, ref.p95, ref.truth)
        out[name] = {f"{reference} vs {m}": metrics.dm_test(la - metrics.daily_loss(loss, b.p05, b.p50, b.p95, b.truth),
                                                            horizon=h, lags=h - 1)
                     for m, b in methods.items() if m != reference and (loss != "squared" or not m.endswith(CAL))}
    days, losses = calendar_losses(bfs, loss)
    if losses:
        h = _pass_len(bfs, len(days))
        out["rolling_by_day"] = {f"{reference} vs {m}": metrics.dm_test(losses[reference] - l, horizon=h, lags=h - 1)
                                 for m, l in losses.items() if m != reference and (loss != "squared" or not m.endswith(CAL))}
    return out


def confidence_set(bfs: dict, methods: list[str], loss: str = "pinball", size: float = 0.1, seed: int = 0) -> dict:
    """Model Confidence Set (Hansen, Lunde and Nason; arch.bootstrap.MCS) at level 1 - size over `methods`, on
    their per-calendar-day losses over the rolling origins (`calendar_losses`); stationary bootstrap with blocks of
    a pass's length (capped at half the days), since a path forecast's losses stay correlated across it.
    {method: {in_set, p_value}}, plus 'loss'."""
    days, losses = calendar_losses(bfs, loss)
    if not losses:
        return {}
    block = _pass_len(bfs, len(days))
    res = metrics.model_confidence_set({m: losses[m] for m in methods}, size=size, block_size=block, seed=seed)
    return {"loss": loss, "size": size, "block_size": block, "days": int(len(days)), "methods": res}


def coverage_interval(bfs: dict, methods: list[str], size: float = 0.9, nominal: float = 0.1, reps: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """Whether a band misses its nominal coverage by more than the evaluation's own noise. Per method: the share of
    truths outside its 5-95% band on each calendar day of the rolling origins (averaged over the origins covering the
    day, `calendar_losses`, so each day counts once), the mean over the days, and a `size` percentile interval of that
    mean by the stationary bootstrap (arch.bootstrap, mean block a pass's length, as in the MCS: the days of a pass
    share their errors). The verdict: 'under-covers' when the whole interval lies above `nominal`, 'over-covers' when
    below it, otherwise 'within the noise'. A few overlapping origins of one regime make the interval wide; it says
    how much a violation rate from this many days can be trusted, not that the days are exchangeable."""
    from arch.bootstrap import StationaryBootstrap
    cols = ["method", "days", "violation per day", "lower", "upper", "verdict"]
    days, viol = calendar_losses(bfs, "violation")
    if not viol:
        return pd.DataFrame(columns=cols)
    block = _pass_len(bfs, len(days))
    rows = []
    for m in methods:
        x = viol[m]
        lo, hi = StationaryBootstrap(block, x, seed=seed).conf_int(np.mean, reps=reps, method="percentile",
                                                                   size=size).ravel()
        verdict = "under-covers" if lo > nominal else "over-covers" if hi < nominal else "within the noise"
        rows.append({"method": m, "days": int(len(days)), "violation per day": float(x.mean()), "lower": float(lo),
                     "upper": float(hi), "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def coverage_by_point(bfs: dict, methods: list[str]) -> dict:
    """{method: (n_mat, n_mon) share of truths outside its 5-95% band at each grid point}, over the days of the
    rolling origins (each origin's known days, then the mean over origins). The conformal guarantee holds on average
    over the grid it pooled; this shows how the misses spread over it."""
    roll = [w for w in bfs if w.startswith("rolling_")]
    out = {}
    for m in methods:
        per = []
        for w in roll:
            b = bfs[w][m]
            n = len(b.truth)
            per.append(metrics.ci_violation(b.p05[:n], b.p95[:n], b.truth, axis=0))       # (n_mat, n_mon)
        if per:
            out[m] = np.mean(per, 0)
    return out


def coverage_sentence(row, size: float = 0.9, nominal: float = 0.1) -> str:
    """One line of `coverage_interval`, for the summary."""
    return (f"{row['method']} {row['verdict']}: {100 * row['violation per day']:.1f}% of truths outside its 5-95% band "
            f"per calendar day ({size:.0%} interval {100 * row['lower']:.1f}-{100 * row['upper']:.1f}%, nominal "
            f"{nominal:.0%}, {row['days']} days)")


def width_vs_rv(bfs: dict, methods: list[str], rv, decile: float = 0.1) -> pd.DataFrame:
    """Whether interval widths follow the market: per method, on the calendar days of the rolling origins, the mean
    5-95% width (over the grid, averaged over the origins covering the day) on the top realised-vol decile of days
    over the bottom decile, beside the same ratio of the median's absolute error (what the width should track)."""
    roll = [w for w in bfs if w.startswith("rolling_")]
    rows = []
    for m in methods:
        bs = [bfs[w][m] for w in roll]
        starts = [b.start for b in bs]
        n = [len(b.truth) for b in bs]
        days, width = metrics.by_calendar_day(starts, [metrics.ci_width_by_day(b.p05[:k], b.p95[:k]) for b, k in zip(bs, n)])
        _, err = metrics.by_calendar_day(starts, [np.abs(b.p50[:k] - b.truth).reshape(k, -1).mean(1) for b, k in zip(bs, n)])
        r = np.asarray(rv)[days]
        lo, hi = r <= np.quantile(r, decile), r >= np.quantile(r, 1 - decile)
        rows.append({"method": m, "days": int(len(days)), "rv bottom decile": float(r[lo].mean()),
                     "rv top decile": float(r[hi].mean()), "width ratio (top / bottom)": float(width[hi].mean() / width[lo].mean()),
                     "abs error ratio (top / bottom)": float(err[hi].mean() / err[lo].mean())})
    return pd.DataFrame(rows)


def _grade(value, row) -> str:
    op, target, stretch, red = row
    better = (lambda a, b: a < b) if op == "<" else (lambda a, b: a > b)
    if value is None or not np.isfinite(value):
        return "n/a"
    if better(value, stretch):
        return "stretch"
    if better(value, target):
        return "target"
    return "red flag" if not better(value, red) and value != red else "between"


def headline(scores: dict, method: str, crisis: str = "crisis", normal: str = "normal") -> dict:
    """The numbers tables 6.2/13.2 are judged on: rolling-origin means for accuracy and calibration,
    the crisis and normal named windows for co-integration."""
    roll = rolling_summary(scores)
    src = roll.get(method) or scores.get("out_of_sample", {}).get(method) or {}
    by_pass = src.get("rmse_by_pass", [np.nan])
    out = {"overall_rmse": src.get("rmse"), "pass1_rmse": by_pass[0], "pass3_rmse": by_pass[-1],
           "pass3_over_pass1": by_pass[-1] / by_pass[0] if by_pass[0] else None,
           "ci_violation": src.get("ci_violation"),
           "cointegration_crisis": scores.get(crisis, {}).get(method, {}).get("cointegration_share"),
           "cointegration_normal": scores.get(normal, {}).get(method, {}).get("cointegration_share")}
    arb = [s[method]["arbitrage_share"] - s["truth"]["arbitrage_share"] for s in scores.values() if method in s]
    out["arbitrage_excess_over_truth"] = float(np.mean(arb)) if arb else None
    econ = roll.get("econometric") or scores.get("out_of_sample", {}).get("econometric")
    out["rmse_gain_over_econometric"] = (1 - src["rmse"] / econ["rmse"]) if econ and src.get("rmse") else None
    return out


def _in_sample(split_of: dict | None, window: str) -> bool:
    """Whether a named window starts in the training split."""
    return bool(split_of) and split_of.get(window, "").startswith("train")


def table_6_2(scores: dict, methods: list[str], p: dict, split_of: dict | None = None) -> pd.DataFrame:
    """The plan's deployment table: each metric's target / stretch / red flag, and every method's value
    with its grade in words (stretch, target, between target and red flag, red flag). With `split_of`
    ({window: split}), a co-integration metric read on a window in the training split says it is in-sample."""
    heads = {m: headline(scores, m) for m in methods}
    rows = []
    for name, row in p["evaluation"]["table_6_2"].items():
        label = name + (" (in-sample)" if name.startswith("cointegration_") and _in_sample(split_of, name[14:]) else "")
        r = {"metric": label, "target": f"{row[0]} {row[1]:g}", "stretch": f"{row[0]} {row[2]:g}",
             "red flag": f"{'>' if row[0] == '<' else '<'} {row[3]:g}"}
        for m in methods:
            v = heads[m].get(name)
            r[m] = "n/a" if v is None or not np.isfinite(v) else f"{v:.4f} {_grade(v, row)}"
        rows.append(r)
    return pd.DataFrame(rows)


def table_6_3(scores: dict, methods: list[str], passes: dict, split_of: dict | None = None) -> pd.DataFrame:
    """The plan's comparison table: RMSE, CI violations, co-integration (crisis / normal), passes; with `split_of`
    a co-integration column read on a window in the training split says it is in-sample."""
    cc, cn = (f"co-integration ({w}{', in-sample' if _in_sample(split_of, w) else ''})" for w in ("crisis", "normal"))
    rows = []
    for m in methods:
        h = headline(scores, m)
        src = rolling_summary(scores).get(m, {})
        rows.append({"model": m, "RMSE": h["overall_rmse"], "CI violations": h["ci_violation"],
                     "CI violations (sampling spread)": src.get("ci_violation_sampling_spread"),
                     cc: h["cointegration_crisis"], cn: h["cointegration_normal"], "passes": passes.get(m, "-")})
    truth = {"model": "truth", "RMSE": None, "CI violations": None, "CI violations (sampling spread)": None,
             cc: scores.get("crisis", {}).get("truth", {}).get("cointegration_share"),
             cn: scores.get("normal", {}).get("truth", {}).get("cointegration_share"), "passes": "-"}
    return pd.DataFrame(rows + [truth])


def deployment_checks(scores: dict, method: str, p: dict) -> dict:
    """The plan's section 13.2 criteria, judged like the gates (pass / near / fail and a decision)."""
    h = headline(scores, method)
    checks = [gates._check(name, h.get(name), thr, op) for name, (op, thr) in p["evaluation"]["deployment"].items()]
    return gates.judge_checks(checks, p)


def load_vae_backfills(run, names, offsets) -> dict:
    """{(window, offset): Backfill} read from the run's backfill/ folder, as notebook 08 wrote them."""
    from .generate import load_backfill
    return {(n, o): load_backfill(run.run_dir / "backfill" / f"{n}_o{o}.npz") for n in names for o in offsets}


SCORE_COLUMNS = {"rmse": "RMSE", "pinball_mean": "pinball (mean of p05/p50/p95)", "interval_score": "interval score (90%)",
                 "crps": "CRPS (raw samples)", "ci_violation": "CI violations", "coverage_p05": "coverage p05",
                 "coverage_p50": "coverage p50", "coverage_p95": "coverage p95",
                 "arbitrage_share_raw": "arbitrage (raw)", "arbitrage_share": "arbitrage"}


def scores_table(scores: dict, methods: list[str], mcs: dict | None = None) -> pd.DataFrame:
    """Rolling-origin means of every score per method (lower is better for RMSE, pinball, interval score and
    CRPS; coverage should equal its level), with membership of the Model Confidence Set where given."""
    roll = rolling_summary(scores)
    rows = []
    for m in methods:
        r = {"method": m, **{label: roll.get(m, {}).get(k) for k, label in SCORE_COLUMNS.items()}}
        if mcs:
            res = mcs["methods"].get(m)
            r[f"in the {100 * (1 - mcs['size']):.0f}% MCS ({mcs['loss']})"] = None if res is None else (
                "yes" if res["in_set"] else "no")
            r["MCS p-value"] = None if res is None else res["p_value"]
        rows.append(r)
    return pd.DataFrame(rows)


def coverage_frame(scores: dict, methods: list[str]) -> pd.DataFrame:
    """Long table (method, quantile, level, coverage, calibrated) of rolling-origin coverage per quantile."""
    roll = rolling_summary(scores)
    rows = []
    for m in methods:
        for q, level in (("p05", 0.05), ("p50", 0.5), ("p95", 0.95)):
            rows.append({"method": m.removesuffix(CAL), "quantile": q, "level": level,
                         "coverage": roll.get(m, {}).get(f"coverage_{q}"), "calibrated": m.endswith(CAL)})
    return pd.DataFrame(rows)


def median_bias(calib: dict, test: dict, methods: list[str]) -> pd.DataFrame:
    """What conformal calibration cannot carry: per method, the median's mean error (truth - p50, vol units, over
    days x grid points) and the share of truths below p50, on the calibration backfills (`calib`, validation split;
    may be empty) beside the test backfills (`test`: the rolling origins, else every window). Calibration moves the
    tails by what the validation years showed; a bias that appears only in the test years (a level the training and
    validation years did not have) leaves the calibrated band short on that side."""
    def pooled(wins: dict, m: str):
        d = np.concatenate([(w[m].truth - w[m].p50[:len(w[m].truth)]).reshape(-1) for w in wins.values() if m in w]
                           or [np.empty(0)])
        d = d[np.isfinite(d)]
        return (float(d.mean()), float((d < 0).mean())) if d.size else (None, None)
    roll = {k: v for k, v in test.items() if k.startswith("rolling_")} or test
    rows = []
    for m in methods:
        (cb, cs), (tb, ts) = pooled(calib, m), pooled(roll, m)
        rows.append({"method": m, "calibration: truth - p50": cb, "calibration: share below p50": cs,
                     "test: truth - p50": tb, "test: share below p50": ts})
    return pd.DataFrame(rows)


def coverage_by_origin(bfs: dict, scores: dict, methods: list[str], rv) -> pd.DataFrame:
    """Where the band fails: one row per rolling origin (else per window), its first day, the mean realised vol
    (`rv` (N,)) over its days with known truth, and each method's 5-95% violation share there. A rolling mean that
    hides a regime (calm origins covered, stressed or unusually calm ones missed) shows here."""
    wins = [w for w in scores if w.startswith("rolling_")] or [w for w in scores if w in bfs]
    rows = []
    for w in wins:
        b = next(iter(bfs[w].values()))
        n = len(b.truth)
        rows.append({"origin": str(b.dates[0]), "mean RV": float(np.mean(np.asarray(rv)[b.start:b.start + n])),
                     **{m: scores[w][m]["ci_violation"] for m in methods if m in scores[w]}})
    return pd.DataFrame(rows)


def coverage_inside_outside(bfs: dict, calibrations: dict, rv) -> pd.DataFrame:
    """Where the conformal guarantee holds: per calibrated method, the rolling origins' days (origin-days: a day
    covered by two origins counts twice, as in the rolling means) split by whether the day's realised vol (`rv`
    (N,)) lies inside the range the calibration days covered, with the calibrated 5-95% violation share of each
    part. Inside the range the days resemble the calibration days; outside it the guarantee says nothing."""
    rows = []
    wins = [w for w in bfs if w.startswith("rolling_")]
    for m, cal in calibrations.items():
        if cal.rv_range is None or not wins or m + CAL not in bfs[wins[0]]:
            continue
        lo, hi = cal.rv_range
        miss, out = [], []
        for w in wins:
            b = bfs[w][m + CAL]
            n = len(b.truth)
            miss.append(metrics.ci_violation(b.p05[:n], b.p95[:n], b.truth, axis=(1, 2)))     # (n,)
            r = np.asarray(rv, float)[b.start:b.start + n]
            out.append((r < lo) | (r > hi))
        miss, out = np.concatenate(miss), np.concatenate(out)
        share = lambda k: float(miss[k].mean()) if k.any() else None      # noqa: E731
        rows.append({"method": m + CAL, "calibration RV": f"{lo:.3f}-{hi:.3f}",
                     "days inside": int((~out).sum()), "violation inside": share(~out),
                     "days outside": int(out.sum()), "violation outside": share(out)})
    return pd.DataFrame(rows)


def calibration_rule(unit: str, scale: str) -> str:
    """The calibration's rule in words, from its params (generation.calibration_unit and calibration_scale), for the
    summary."""
    if unit not in conformal.UNITS or scale not in conformal.SCALES:
        raise ValueError(f"calibration_rule: unit {unit!r} / scale {scale!r} not among {conformal.UNITS} / "
                         f"{conformal.SCALES}")
    how = ("scores from the median in units of the day's realised vol x sqrt(lead), an order statistic per tail"
           if scale == "realised_vol" else "per-tail scores from each tail in units of the method's own half-width")
    who = "whole backfills as the exchangeable unit" if unit == "backfill" else "days pooled as the exchangeable unit"
    return f"{how}, Mondrian by lead time, {who}"


def calibration_table(cals: dict) -> pd.DataFrame:
    """What each method's calibration could fit: per method and lead bin, the scores behind it (validation days x
    grid points), the backfills with an order statistic of their own there and the confidence K / (K + 1) that a new
    backfill needs no more (unit 'backfill'), and the normalised score quantile of each tail in units of its `scale`
    (the method's own half-width, from its own tail: a lower score below 0 or an upper score above 0 widens its
    band; or realised vol x sqrt(lead), from the median: the band's two edges); an empty bin borrows the nearest
    filled one."""
    rows = []
    for m, c in cals.items():
        conf = c.confidence()
        for j in range(len(c.lead_bins)):
            empty = not (np.isfinite(c.lower[j]) and np.isfinite(c.upper[j]))
            rows.append({"method": m, "scale": c.scale, "lead": conformal.bin_label(c.lead_bins, j), "scores": int(c.n[j]),
                         "backfills": None if c.units is None else int(c.units[j]),
                         "confidence": None if not np.isfinite(conf[j]) else float(conf[j]),
                         "lower tail score": None if empty else float(c.lower[j]),
                         "upper tail score": None if empty else float(c.upper[j]),
                         "filled": "no: takes the nearest filled bin" if empty else "yes"})
    return pd.DataFrame(rows)


def versus(rolling: dict, dm: dict, ref: str, other: str, level: float = 0.05) -> str:
    """One sentence, from the numbers, on whether `ref` beats `other` over the rolling origins: their RMSE, the gap,
    and the per-calendar-day Diebold-Mariano test at `level`."""
    from .report import fmt_p
    r, o = rolling.get(ref, {}).get("rmse"), rolling.get(other, {}).get("rmse")
    d = dm.get("rolling_by_day", {}).get(f"{ref} vs {other}")
    if r is None or o is None or d is None:
        return f"{ref} vs {other}: not scored in this run"
    sig = np.isfinite(d["p_value"]) and d["p_value"] < level
    verdict = ("beats" if d["dm"] < 0 else "is beaten by") if sig else "does not beat"
    tie = "" if sig else f" (no significant difference at {level:.0%})"
    return (f"{ref} {verdict} {other}{tie}: RMSE {r:.4f} against {o:.4f} ({r / o - 1:+.1%}), Diebold-Mariano on the "
            f"per-day loss {d['dm']:.2f} (p {fmt_p(d['p_value'])}, {d['days']} days)")
