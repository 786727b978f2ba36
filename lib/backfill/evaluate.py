"""Evaluation (SPEC sections 8-9): the VAE's backfills against the econometric and random-walk
baselines, all scored by the same `metrics.score_backfill`, plus the seed's tables 6.2, 6.3 and 13.2."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import baselines, gates, metrics

SCALARS = ("rmse", "ci_violation", "ci_violation_sampling_spread", "cointegration_share", "arbitrage_share",
           "pass_ratio_last_first")


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
                                               ds.moneyness, spread=(b.spread05, b.spread95) if b.n_samples else None)
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


def dm_tests(bfs: dict, reference: str) -> dict:
    """Diebold-Mariano (squared error, Newey-West) of `reference` against every other method, per named
    window and pooled over the rolling origins. Path forecasts have errors correlated over many days, so
    the Newey-West bandwidth is H-1 within a window (the standard choice for H-step forecasts) and the
    window length when pooling overlapping rolling windows."""
    out = {}
    pooled = {}
    for name, methods in bfs.items():
        ref = methods[reference]
        e_ref = ref.p50[:len(ref.truth)] - ref.truth
        for m, b in methods.items():
            if m == reference:
                continue
            e = b.p50[:len(b.truth)] - b.truth
            key = f"{reference} vs {m}"
            if name.startswith("rolling_"):
                pooled.setdefault(key, ([], []))
                pooled[key][0].append(e_ref)
                pooled[key][1].append(e)
            else:
                out.setdefault(name, {})[key] = metrics.diebold_mariano(e_ref, e, lags=max(ref.horizon - 1, 0))
    if pooled:
        days = max(len(x) for x in next(iter(pooled.values()))[0])
        out["rolling_pooled"] = {k: metrics.diebold_mariano(np.concatenate(a), np.concatenate(b), lags=days)
                                 for k, (a, b) in pooled.items()}
    return out


def _grade(value, row) -> str:
    op, target, stretch, red = row
    better = (lambda a, b: a < b) if op == "<" else (lambda a, b: a > b)
    if value is None or not np.isfinite(value):
        return "❌"
    if better(value, stretch):
        return "⭐ stretch"
    if better(value, target):
        return "✅ target"
    return "❌ red flag" if not better(value, red) and value != red else "⚠️ between"


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
    with its grade (⭐ stretch, ✅ target, ⚠️ between target and red flag, ❌ red flag)."""
    heads = {m: headline(scores, m) for m in methods}
    rows = []
    for name, row in p["evaluation"]["table_6_2"].items():
        r = {"metric": name, "target": f"{row[0]} {row[1]:g}", "stretch": f"{row[0]} {row[2]:g}",
             "red flag": f"{'>' if row[0] == '<' else '<'} {row[3]:g}"}
        for m in methods:
            v = heads[m].get(name)
            r[m] = "n/a" if v is None or not np.isfinite(v) else f"{v:.4f} {_grade(v, row).split()[0]}"
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
    """The seed's section 13.2 criteria, judged like the gates (✅ / ⚠️ / ❌ and a decision)."""
    h = headline(scores, method)
    checks = [gates._check(name, h.get(name), thr, op) for name, (op, thr) in p["evaluation"]["deployment"].items()]
    return gates.evaluate_checks(checks, p)
