"""The analysis of a sweep's results table that the chapters call (notebooks/10_sweep.ipynb, and
notebooks/11_plan_claims.ipynb through `claims`): mean +- sd across seeds per configuration, paired comparisons
across seeds, Diebold-Mariano and the Model Confidence Set on seed-averaged daily losses, the figures.

A notebook that imports this module imports neither Ray nor the runner: it imports `spec` alone of the package.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .. import params as _params
from .spec import PHASE_METRICS

SUMMARY_METRICS = ["rmse", "cal rmse", "coverage_p05", "coverage_p95", "ci_violation", "cal ci_violation",
                   "pinball_mean", "interval_score", "crps", "dm vs econometric", "phase4.val_rmse"]


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran to the end."""
    return df[df["state"] == "ok"]


def seed_summary(df: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Per group (a configuration: every axis but the seed), over its finished trials: the number of seeds and,
    per metric, mean, sd (ddof 1; NaN with one seed) and 'mean +- sd' as text, and (where the table has it) the
    kernel paths its seeds trained on: a group trained on two paths mixes that difference into its sd (docs/design.md
    §10). Sorted by the first metric."""
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in df.columns]
    ok = finished(df)
    if ok.empty or not metrics:
        return pd.DataFrame(columns=["group", "seeds"])
    rows = []
    for g, d in ok.groupby("group", sort=False):
        row = {"group": g, "seeds": len(d)}
        if "trained on" in d:
            row["trained on"] = "; ".join(sorted({str(x) for x in d["trained on"]}))
        for m in metrics:
            x = pd.to_numeric(d[m], errors="coerce").dropna()
            mean, sd = (x.mean(), x.std(ddof=1)) if len(x) else (np.nan, np.nan)
            row[f"{m} mean"], row[f"{m} sd"] = mean, sd
            row[f"{m} mean +- sd"] = "-" if not len(x) else f"{mean:.4g} +- {sd:.2g}" if len(x) > 1 else f"{mean:.4g}"
        rows.append(row)
    return pd.DataFrame(rows).sort_values(f"{metrics[0]} mean", kind="stable").reset_index(drop=True)


def _pairs(df: pd.DataFrame, axis: str, a, b, axes) -> list[tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """[(other axes' values, trials at axis=a, trials at axis=b)] for each configuration of the other non-seed
    axes, the two frames indexed by seed and holding the same seeds in the same order (finished trials only)."""
    others = [x for x in axes if x not in (axis, "seed")]
    ok = finished(df)
    key = "seed" if "seed" in ok.columns else None
    out = []
    groups = ok.groupby(others, sort=False) if others else [((), ok)]
    for vals, d in groups:
        vals = vals if isinstance(vals, tuple) else (vals,)
        da, db = d[d[axis] == a], d[d[axis] == b]
        idx_a = da.set_index(key) if key else da.reset_index(drop=True)
        idx_b = db.set_index(key) if key else db.reset_index(drop=True)
        common = [s for s in idx_a.index if s in idx_b.index]
        if common:
            out.append((dict(zip(others, vals)), idx_a.loc[common], idx_b.loc[common]))
    return out


def axis_levels(df: pd.DataFrame, axis: str) -> list:
    return list(dict.fromkeys(df[axis])) if axis in df.columns else []


def _compared(df: pd.DataFrame, axis: str, a, b, axes) -> tuple[list, object, object]:
    """The sweep's axes (from sweep.json unless given) and the two levels of `axis` compared (its first two unless
    given)."""
    lv = axis_levels(df, axis)
    return (axes or df.attrs.get("sweep", {}).get("axes") or [axis], lv[0] if a is None and lv else a,
            lv[1] if b is None and len(lv) > 1 else b)


def paired_by_seed(df: pd.DataFrame, axis: str, metric: str = "rmse", a=None, b=None, axes=None) -> pd.DataFrame:
    """Level b against level a of `axis` on `metric`, trials paired by seed (and every other axis equal): per
    configuration of the other axes, the mean of each, the mean and sd of the per-seed differences b - a, the
    paired t statistic and its two-sided p-value (n - 1 df). The noise is the seed-to-seed spread of the
    difference: a gap smaller than what reseeding moves it by is not significant."""
    from scipy import stats
    axes, a, b = _compared(df, axis, a, b, axes)
    rows = []
    for others, da, db in _pairs(df, axis, a, b, axes):
        xa, xb = pd.to_numeric(da[metric], errors="coerce"), pd.to_numeric(db[metric], errors="coerce")
        d = (xb - xa).dropna()
        n = len(d)
        sd = d.std(ddof=1) if n > 1 else np.nan
        t = d.mean() / (sd / np.sqrt(n)) if n > 1 and sd > 0 else np.nan
        p = 2 * stats.t.sf(abs(t), n - 1) if np.isfinite(t) else np.nan
        rows.append({**others, "a": a, "b": b, "seeds": n, f"{metric} a": xa.mean(), f"{metric} b": xb.mean(),
                     "diff b - a": d.mean(), "sd of diff": sd, "t": t, "p": p, "b better in": int((d < 0).sum())})
    return pd.DataFrame(rows)


def daily_losses(run_dir, loss: str = "squared", offset: str = "offset_fast") -> dict:
    """{rolling window: (days,) daily loss} of a run's VAE (at the offset of generation.`offset`: offset_fast or
    offset_ensemble) on the rolling test origins, from its backfill/rolling_*.npz (what notebook 08 wrote):
    'squared', 'pinball' or 'interval'."""
    from .. import generate, metrics
    run_dir = Path(run_dir)
    p = yaml.safe_load((run_dir / "params.yaml").read_text())
    o = p["generation"][offset]
    out = {}
    for f in sorted((run_dir / "backfill").glob(f"rolling_*_o{o}.npz"), key=lambda f: int(f.stem.split("_")[1])):
        b = generate.load_backfill(f)
        if b.truth is not None:        # keyed by origin (rolling_<day>): runs with other offsets share the windows
            out[f.stem.rsplit("_o", 1)[0]] = metrics.daily_loss(loss, b.p05, b.p50, b.p95, b.truth)
    return out


def seed_averaged_dm(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int) -> dict:
    """Diebold-Mariano (HLN-corrected, metrics.dm_test) on the seed-averaged loss differential: loss_a, loss_b
    (seeds, T) daily losses of two configurations on the same calendar days, row i of each trained with seed i;
    d_t = mean over seeds of (b - a). Negative: b is better. `horizon` is the path length whose errors are
    correlated, capped at T/2. Also the DM of each seed alone."""
    from .. import metrics
    la, lb = np.atleast_2d(np.asarray(loss_a, float)), np.atleast_2d(np.asarray(loss_b, float))
    T = la.shape[1]
    h = max(min(int(horizon), T // 2), 1)
    res = metrics.dm_test((lb - la).mean(0), horizon=h, lags=h - 1)
    per_seed = [metrics.dm_test(lb[i] - la[i], horizon=h, lags=h - 1)["dm"] for i in range(len(la))]
    return {**res, "seeds": len(la), "dm_per_seed": per_seed}


def _stacked_losses(frames: list[pd.DataFrame], loss: str,
                    offset: str = "offset_fast") -> tuple[list[np.ndarray], int]:
    """Daily losses of the trials of each frame (run_dir column) on the rolling windows all of them share, averaged
    per calendar day over the windows covering it (`metrics.by_calendar_day`: each day counted once):
    [(trials, U)] in the frames' row order, and the pass length (generation.horizon, the longest of the frames':
    the span over which a path forecast's errors stay correlated, the DM test's horizon)."""
    from .. import metrics
    per = [[daily_losses(r, loss, offset) for r in f["run_dir"]] for f in frames]
    common = set.intersection(*(set(d) for ds in per for d in ds)) if per and per[0] else set()
    names = sorted(common, key=lambda w: int(w.split("_")[1]))
    if not names:
        return [], 0
    horizon = max(int(yaml.safe_load((Path(f["run_dir"].iloc[0]) / "params.yaml").read_text())["generation"]["horizon"])
                  for f in frames)
    starts = [int(w.split("_")[1]) for w in names]
    return [np.stack([metrics.by_calendar_day(starts, [d[w] for w in names])[1] for d in ds]) for ds in per], horizon


def dm_by_seed(df: pd.DataFrame, axis: str, a=None, b=None, loss: str = "squared", axes=None,
               offset: str = "offset_fast") -> pd.DataFrame:
    """Level b against level a of `axis`, per configuration of the other axes: DM on the seed-averaged per-calendar-
    day loss differential over the rolling test origins (seeds paired), and the DM of each seed alone, so the
    reading shows both the day-to-day evidence and how much it moves with the seed. `offset`: the backfills of
    generation.offset_fast (the default) or generation.offset_ensemble."""
    axes, a, b = _compared(df, axis, a, b, axes)
    rows = []
    for others, da, db in _pairs(df, axis, a, b, axes):
        stacks, horizon = _stacked_losses([da, db], loss, offset)
        if not horizon:
            continue
        la, lb = stacks
        r = seed_averaged_dm(la, lb, horizon)
        rows.append({**others, "a": a, "b": b, "seeds": r["seeds"], "loss": loss, "days": r["days"],
                     "mean loss diff b - a": r["mean_loss_diff"], "dm": r["dm"], "p": r["p_value"],
                     "dm per seed": ", ".join(f"{x:.2f}" for x in r["dm_per_seed"])})
    return pd.DataFrame(rows)


def config_mcs(df: pd.DataFrame, loss: str = "squared", size: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Model Confidence Set (metrics.model_confidence_set) over the groups, each group's loss the mean over its
    seeds of the per-calendar-day loss on the rolling origins all trials share; block length one pass (capped at
    half the days). {group, mean loss, in_set, p_value}."""
    from .. import metrics
    ok = finished(df)
    groups = list(dict.fromkeys(ok["group"]))
    if len(groups) < 2:
        return pd.DataFrame(columns=["group", "mean loss", "in set", "p"])
    stacks, horizon = _stacked_losses([ok[ok["group"] == g] for g in groups], loss)
    if not horizon:
        return pd.DataFrame(columns=["group", "mean loss", "in set", "p"])
    losses = {g: s.mean(0) for g, s in zip(groups, stacks)}
    block = max(min(horizon, stacks[0].shape[1] // 2), 1)
    res = metrics.model_confidence_set(losses, size=size, block_size=block, seed=seed)
    return pd.DataFrame([{"group": g, "mean loss": float(losses[g].mean()), "in set": res[g]["in_set"],
                          "p": res[g]["p_value"]} for g in groups]).sort_values("mean loss", kind="stable")


def numeric_axes(df: pd.DataFrame) -> list[str]:
    """Axes and varying params with several numeric levels (context length, KL weight, ...), the seed excluded."""
    info = df.attrs.get("sweep", {})
    cand = [c for c in df.columns if c in info.get("axes", []) or "." in c and c.split(".")[0] in _params.SCHEMA]
    return [c for c in dict.fromkeys(cand) if c != "seed" and c not in PHASE_METRICS
            and pd.api.types.is_numeric_dtype(df[c]) and df[c].nunique() > 1]


def by_group_figure(df: pd.DataFrame, metric: str = "rmse"):
    """Each finished trial's metric as a dot per seed, by group, with the group's mean +- sd."""
    import plotly.graph_objects as go
    ok = finished(df)
    s = seed_summary(df, [metric])
    fig = go.Figure()
    if metric in ok.columns:
        fig.add_trace(go.Scatter(x=ok["group"], y=ok[metric], mode="markers", name="one seed",
                                 text=[f"seed {v}" for v in ok.get("seed", ok["trial"])], marker={"size": 8}))
    if not s.empty:
        fig.add_trace(go.Scatter(x=s["group"], y=s[f"{metric} mean"], error_y={"array": s[f"{metric} sd"]},
                                 mode="markers", name="mean +- sd", marker={"symbol": "line-ew-open", "size": 24}))
    fig.update_layout(title=f"{metric} by configuration: each seed, and mean +- sd across seeds",
                      yaxis_title=metric, height=400)
    return fig


def versus_figure(df: pd.DataFrame, x: str, metric: str = "rmse"):
    """metric (mean +- sd across seeds) against a numeric axis x, one line per configuration of the rest."""
    import plotly.graph_objects as go
    ok = finished(df).copy()
    fig = go.Figure()
    if ok.empty or x not in ok.columns or metric not in ok.columns:
        return fig
    rest = [c for c in df.attrs.get("sweep", {}).get("axes", []) if c not in (x, "seed") and c in ok.columns]
    ok["_line"] = ok[rest].astype(str).agg(",".join, axis=1) if rest else "all"
    for line, d in ok.groupby("_line", sort=False):
        g = d.groupby(x)[metric].agg(["mean", "std"]).reset_index()
        fig.add_trace(go.Scatter(x=g[x], y=g["mean"], error_y={"array": g["std"]}, mode="lines+markers", name=line))
    positive = (ok[x] > 0).all()
    fig.update_layout(title=f"{metric} against {x} (mean +- sd across seeds)", xaxis_title=x, yaxis_title=metric,
                      height=380, xaxis_type="log" if positive and ok[x].max() / ok[x].min() > 100 else None)
    return fig
