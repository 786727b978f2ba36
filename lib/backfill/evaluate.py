"""Evaluation (SPEC sections 8-9): the VAE's backfills against the econometric and random-walk
baselines, all scored by the same `metrics.score_backfill`, plus the seed's tables 6.2, 6.3 and 13.2."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import arbitrage, baselines, conformal, gates, metrics

SCALARS = ("rmse", "ci_violation", "ci_violation_sampling_spread", "cointegration_share", "arbitrage_share",
           "arbitrage_share_raw", "pass_ratio", "coverage_p05", "coverage_p50", "coverage_p95",
           "pinball_p05", "pinball_p50", "pinball_p95", "pinball_mean", "interval_score", "crps")
CAL = "_cal"          # suffix of a method's conformally calibrated row


def method_backfills(run, vae: dict, days: int) -> dict:
    """{window: {method: Backfill}} for vae_o<O> (given as {(window, offset): Backfill}) and both baselines."""
    p, ds = run.params, run.data
    econ = baselines.fit_econometric(ds.surface, ds.ret, run.splits["train"])
    rw = baselines.fit_random_walk(ds.surface, run.splits["train"], days)
    H, n_boot = p["generation"]["horizon"], p["generation"]["bootstrap_paths"]
    out = {}
    for (name, offset), bf in vae.items():
        w = out.setdefault(name, {})
        w[f"vae_o{offset}"] = bf
        if "econometric" not in w:
            w["econometric"] = baselines.econometric_backfill(econ, ds, bf.start, days, n_boot, p["seed"] + bf.start,
                                                              segment_len=H, name=name)
            w["random_walk"] = baselines.random_walk_backfill(rw, ds, bf.start, days, segment_len=H, name=name)
    return out


def score(run, bfs: dict) -> dict:
    """The `backfill` section of metrics.json: per window and method the scores, plus the truth's."""
    ds = run.data
    rv = metrics.ewma_realized_vol(ds.ret)
    out = {}
    for name, methods in bfs.items():
        any_bf = next(iter(methods.values()))
        n = len(any_bf.truth)
        rv_w = rv[any_bf.start:any_bf.start + n]
        out[name] = {m: metrics.score_backfill(b.p05, b.p50, b.p95, b.truth, b.segment, rv_w, ds.maturities,
                                               ds.moneyness, spread=(b.spread05, b.spread95) if b.n_samples else None,
                                               crps=b.crps, arbitrage_raw=b.arbitrage_raw)
                     for m, b in methods.items()}
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


def calibrate(calib: dict, test: dict, grid=None) -> tuple[dict, dict]:
    """Split-conformal calibration per method: fitted on the backfills of validation-split origins `calib`
    ({window: {method: Backfill}}), per pass (H-day segment) and grid point, applied to every test window.
    A method whose raw surfaces were projected onto the arbitrage-free set (`arbitrage_raw` set) has its shifted
    quantiles projected again, given `grid` = (maturities, moneyness): a shift per grid point can reintroduce
    arbitrage. Returns (test with a `<method>_cal` row beside each method, {method: conformal.Calibration})."""
    cals = {}
    for m in next(iter(calib.values())):
        cals[m] = conformal.fit([(np.stack([w[m].p05, w[m].p50, w[m].p95]), w[m].truth, w[m].segment)
                                 for w in calib.values()])
    out = {}
    for name, methods in test.items():
        out[name] = dict(methods)
        for m, b in methods.items():
            if m in cals:
                q = conformal.apply(cals[m], np.stack([b.p05, b.p50, b.p95]), b.segment)
                if b.arbitrage_raw is not None and grid is not None:
                    q = np.stack(arbitrage.repair_quantiles(*q, *grid))
                out[name][m + CAL] = dataclasses.replace(b, p05=q[0], p50=q[1], p95=q[2], n_samples=0, crps=None)
    return out, cals


def _pooled(bfs: dict, fn) -> dict:
    """{method: concatenation over the rolling origins of fn(Backfill)}."""
    roll = [w for w in bfs if w.startswith("rolling_")]
    return {m: np.concatenate([fn(bfs[w][m]) for w in roll]) for m in bfs[roll[0]]} if roll else {}


def dm_tests(bfs: dict, reference: str) -> dict:
    """Diebold-Mariano with the Harvey-Leybourne-Newbold correction (squared error, Bartlett long-run variance)
    of `reference` against every other method, per named window and pooled over the rolling origins. Path
    forecasts have errors correlated over many days: within a window the bandwidth is H-1 and the HLN horizon H
    (the standard choice for H-step forecasts); pooled over overlapping rolling windows, both are the window
    length. Negative statistic: the reference is more accurate."""
    out = {}
    for name, methods in bfs.items():
        if name.startswith("rolling_"):
            continue
        ref = methods[reference]
        T = len(ref.truth)
        h = max(min(ref.horizon, T // 2), 1)
        out[name] = {f"{reference} vs {m}": metrics.diebold_mariano(ref.p50[:T] - ref.truth, b.p50[:T] - b.truth,
                                                                    lags=h - 1, horizon=h)
                     for m, b in methods.items() if m != reference}
    err = _pooled(bfs, lambda b: b.p50[:len(b.truth)] - b.truth)
    if err:
        days = max(len(b.truth) for w, ms in bfs.items() if w.startswith("rolling_") for b in ms.values())
        T = len(err[reference])
        h = max(min(days, T // 2), 1)          # as within a window: HLN needs h well below T (few origins)
        out["rolling_pooled"] = {f"{reference} vs {m}": metrics.diebold_mariano(err[reference], e, lags=h,
                                                                                 horizon=h)
                                 for m, e in err.items() if m != reference}
    return out


def confidence_set(bfs: dict, methods: list[str], loss: str = "pinball", size: float = 0.1, seed: int = 0) -> dict:
    """Model Confidence Set (Hansen, Lunde and Nason; arch.bootstrap.MCS) at level 1 - size over `methods`, on
    their daily losses pooled over the rolling origins; stationary bootstrap with blocks of a window's length,
    since a path forecast's losses stay correlated across it. {method: {in_set, p_value}}, plus 'loss'."""
    losses = _pooled(bfs, lambda b: metrics.daily_loss(loss, b.p05, b.p50, b.p95, b.truth))
    if not losses:
        return {}
    days = max(len(b.truth) for w, ms in bfs.items() if w.startswith("rolling_") for b in ms.values())
    res = metrics.model_confidence_set({m: losses[m] for m in methods}, size=size, block_size=days, seed=seed)
    return {"loss": loss, "size": size, "block_size": days, "methods": res}


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


def table_6_2(scores: dict, methods: list[str], p: dict) -> pd.DataFrame:
    """The seed's deployment table: each metric's target / stretch / red flag, and every method's value
    with its grade in words (stretch, target, between target and red flag, red flag)."""
    heads = {m: headline(scores, m) for m in methods}
    rows = []
    for name, row in p["evaluation"]["table_6_2"].items():
        r = {"metric": name, "target": f"{row[0]} {row[1]:g}", "stretch": f"{row[0]} {row[2]:g}",
             "red flag": f"{'>' if row[0] == '<' else '<'} {row[3]:g}"}
        for m in methods:
            v = heads[m].get(name)
            r[m] = "n/a" if v is None or not np.isfinite(v) else f"{v:.4f} {_grade(v, row)}"
        rows.append(r)
    return pd.DataFrame(rows)


def table_6_3(scores: dict, methods: list[str], passes: dict) -> pd.DataFrame:
    """The seed's comparison table: RMSE, CI violations, co-integration (crisis / normal), passes."""
    rows = []
    for m in methods:
        h = headline(scores, m)
        src = rolling_summary(scores).get(m, {})
        rows.append({"model": m, "RMSE": h["overall_rmse"], "CI violations": h["ci_violation"],
                     "CI violations (sampling spread)": src.get("ci_violation_sampling_spread"),
                     "co-integration (crisis)": h["cointegration_crisis"],
                     "co-integration (normal)": h["cointegration_normal"], "passes": passes.get(m, "-")})
    truth = {"model": "truth", "RMSE": None, "CI violations": None, "CI violations (sampling spread)": None,
             "co-integration (crisis)": scores.get("crisis", {}).get("truth", {}).get("cointegration_share"),
             "co-integration (normal)": scores.get("normal", {}).get("truth", {}).get("cointegration_share"),
             "passes": "-"}
    return pd.DataFrame(rows + [truth])


def deployment_checks(scores: dict, method: str, p: dict) -> dict:
    """The seed's section 13.2 criteria, judged like the gates (pass / near / fail and a decision)."""
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
