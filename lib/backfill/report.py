"""Figures, tables and glue for the notebooks and the book.

Plotly figures are displayed through `show`, which emits a mime bundle that JupyterLab renders
natively and whose HTML part works in the built book (plotly.js is served from the book's _static).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import data as _data
from . import metrics as _metrics

CRISIS_FILL = "rgba(214, 39, 40, 0.12)"


def show(fig, caption: str) -> None:
    """Display a plotly figure interactively in JupyterLab and in the built book, with its caption below: what it
    shows and how to read it (every figure of the book has one)."""
    import json
    from IPython.display import display
    html = fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
    display({"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/html": html}, raw=True)
    show_caption(caption)


def show_caption(caption: str) -> None:
    """A figure's caption as a markdown paragraph (rendered as text by the book, readable in print)."""
    from IPython.display import Markdown, display
    if not caption or not caption.strip():
        raise ValueError("a figure needs a caption: say what it shows and how to read it")
    display(Markdown(f"**Figure.** {caption.strip()}"))


def glue(key: str, value, fmt: str | None = None):
    """Publish a headline number or table to the book (myst_nb.glue), hidden in the notebook."""
    from myst_nb import glue as _glue
    if value is None or isinstance(value, (float, np.floating)) and not np.isfinite(value):
        value = "n/a"
    elif fmt is not None and isinstance(value, (int, float, np.floating, np.integer)):
        value = format(float(value), fmt)
    _glue(key, str(value), display=False)      # pasted with {glue:text}`doc::key:s` in the book
    return value


def open_chapter(params_path, run_dir=None):
    """The setup every chapter shares: open the run (`rundir.open_run`: params validated, data loaded, the run
    directory made) and say which profile, data and run directory it reads. Returns (run, data, params)."""
    from . import rundir
    run = rundir.open_run(params_path, run_dir)
    ds, p = run.data, run.params
    print(f"profile {p['profile']!r}: {ds.n_days} days on a {ds.grid[0]}x{ds.grid[1]} grid from {ds.source}; "
          f"run in {run.run_dir}")
    return run, ds, p


def phase_chapter(run, number: int) -> tuple[dict, dict]:
    """The body of the phase chapters (notebooks 02-05), each of which keeps its own introduction: train curriculum
    phase `number` (or find its checkpoint), show its loss curves, its validation forecasts (by horizon for phases
    1-2, by pass at each offset for the autoregressive phases 3-4, beside persistence), the context sanity check and
    the KL (read them with the method page's "Does a forecast keep its context?"), judge the plan's criteria for the
    phase and record everything in metrics.json and the book's numbers (`publish_phase`). Returns (summary,
    criteria)."""
    from IPython.display import Markdown, display
    from . import gates, phases, train
    p = run.params
    spec = phases.phase_specs(p)[number - 1]
    display(Markdown(f"**Phase {number}** ({spec.name}): {spec.epochs} epochs, windows of {spec.window} days"
                     + (f", offsets {', '.join(map(str, spec.offsets))}." if number > 2 else ".")))
    if train.is_skipped(p, number):
        print(train.skip_note(p, number))
    display(Markdown(f"Training resumes from `checkpoints/last.pt` when an earlier run was interrupted and returns at once "
                     f"when `checkpoints/phase{number}.pt` exists for these params; per-epoch numbers go to "
                     f"`logs/phase{number}.csv` and TensorBoard. A phase whose cumulative epoch mark equals the one before "
                     f"trains no epoch and is skipped: its checkpoint is the model it starts from."))
    summary = train.train_phase(run, number)
    history = train.read_history(run.run_dir, number)
    display(history[["global_epoch", "train_loss", "val_loss", "val_kl", "val_rmse", "val_ci_violation", "seconds"]])
    if len(history):
        show(loss_curves(history, f"phase {number}: {spec.name}"),
             f"Training and validation loss by epoch of phase {number} ({spec.name}); the loss is the weighted quantile "
             f"loss plus the KL term, so it is comparable within a phase, not across phases.")
    else:
        print(f"phase {number} trained no epoch (skipped): no loss curves")
    va, tr = summary["val_eval"], summary["train_eval"]
    if number <= 2:
        display(Markdown("Validation forecasts (median at the prior mean of the latent, p05-p95 interval) by horizon; "
                         "the RMSE at horizon h is over the first h forecast days:"))
        show(by_horizon_figure(va["rmse_by_horizon"], "validation RMSE by horizon", "RMSE (implied vol)"),
             "Validation RMSE of the median forecast (in implied-vol units) over the first h days after the context, for "
             "each horizon h the phase scores; the table below sets it beside persistence (the last context day).")
        display(pd.DataFrame({"RMSE in-sample": tr["rmse_by_horizon"], "RMSE validation": va["rmse_by_horizon"],
                              "persistence RMSE validation": va["persistence_rmse_by_horizon"],
                              "CI violations validation": va["ci_by_horizon"]}).rename_axis("horizon (days)"))
    else:
        display(Markdown("Validation rollouts in generation mode (median at the prior mean of the latent) for each "
                         "offset, RMSE by pass:"))
        cols = {}
        for o in spec.offsets:
            cols[f"offset {o}"] = va[f"offset_{o}"]["rmse_by_pass"]
            cols[f"persistence, offset {o}"] = va[f"offset_{o}"]["persistence_rmse_by_pass"]
        by_pass = pd.DataFrame(cols, index=pd.Index(range(1, spec.steps + 1), name="pass"))
        for o in spec.offsets:
            show(by_horizon_figure(dict(zip(by_pass.index, by_pass[f"offset {o}"])), f"offset {o}: validation RMSE by pass",
                                   "RMSE (implied vol)"),
                 f"Validation RMSE of each autoregressive pass at offset {o}: pass 1 forecasts from real context, later "
                 f"passes from context that is partly generated; a flat line means errors do not accumulate (the pass "
                 f"ratio of the criteria below).")
        display(by_pass)
    display(Markdown("**A sanity check before the criteria** (the method page's *Does a forecast keep its context?* "
                     "says how to read it): the slope, across validation windows, of the forecast's mean vol level on the "
                     "last context day's, beside the truth's, and the KL of the posterior to the model's prior."))
    print(f"context kept over the horizon (slope): forecast {va['context_beta']:.3f}, truth {va['context_beta_truth']:.3f}")
    print(f"KL to the prior per day (validation): {va['kl']:.4g} (the plan's table 6.1: < {p['gates']['kl_max']:g}); "
          f"prior: {p['model']['prior']}, target: {p['model']['target']}")
    result = gates.phase_criteria(number, summary, p)                   # SKIPPED for a phase with no epoch
    display(Markdown("The plan's criteria for this phase, measured (*near* = within the marginal band of the "
                     "threshold, either side):"))
    print("decision:", result["decision"])
    display(style_verdicts(pd.DataFrame(result["checks"])[["criterion", "value", "op", "threshold", "mark"]],
                           {"value": "{:.4g}"}))
    publish_phase(run, number, summary, result)
    return summary, result


def publish_phase(run, number: int, summary: dict, criteria: dict) -> None:
    """What notebooks 02-05 share: record phase `number`'s summary and criteria in metrics.json (`phases.phaseN`)
    and glue its headline numbers for the book (epochs, seconds, decision, validation loss, KL, context slopes)."""
    from . import train
    phases = run.metrics().get("phases", {})
    phases[f"phase{number}"] = {**train.phase_record(summary), "criteria": criteria}
    run.update_metrics(phases=phases)
    va = summary["val_eval"]
    for key, value, fmt in (("epochs", summary["epochs"], None), ("seconds", summary["seconds"], ".0f"),
                            ("decision", criteria["decision"], None), ("val_loss", summary["final_val_loss"], ".4f"),
                            ("kl", va["kl"], ".3g"), ("context_beta", va["context_beta"], ".2f"),
                            ("context_beta_truth", va["context_beta_truth"], ".2f")):
        glue(f"phase{number}_{key}", value, fmt)


def fmt_p(p) -> str:
    """A p-value as text: '< 1e-12' below that (a p-value is never exactly 0), 3 significant digits above."""
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 1e-12" if p < 1e-12 else f"{p:.3g}"


def _x(ds):
    return pd.to_datetime(ds.day_labels()) if ds.dates is not None else np.arange(ds.n_days)


def atm_term_structure(ds, crisis_mask=None, title="ATM implied volatility by maturity"):
    """Line chart of the ATM vol of every maturity through time, crisis regime shaded."""
    import plotly.graph_objects as go
    ix = _data.feature_indices(ds.maturities, ds.moneyness)
    x = _x(ds)
    fig = go.Figure()
    for i, T in enumerate(ds.maturities):
        fig.add_trace(go.Scattergl(x=x, y=ds.surface[:, i, ix["atm"]], mode="lines", name=f"T={T:.3g}y",
                                   line={"width": 1}))
    for a, b in _data.regime_spells(crisis_mask) if crisis_mask is not None else []:
        fig.add_vrect(x0=x[a], x1=x[b - 1], fillcolor=CRISIS_FILL, line_width=0, annotation_text="crisis",
                      annotation_position="top left")
    fig.update_layout(title=title, yaxis_title="implied vol", height=420, legend_title="maturity")
    return fig


def surface_3d(surface, maturities, moneyness, title="", name="surface", opacity=1.0, fig=None):
    """A 3-D surface plot (moneyness x maturity x vol); pass `fig` to overlay a second surface."""
    import plotly.graph_objects as go
    fig = fig or go.Figure()
    fig.add_trace(go.Surface(x=np.asarray(moneyness), y=np.asarray(maturities), z=np.asarray(surface),
                             name=name, opacity=opacity, showscale=fig.data == (), colorscale="Viridis"))
    fig.update_layout(title=title, height=450, scene={"xaxis_title": "moneyness K/S",
                                                      "yaxis_title": "maturity (y)",
                                                      "zaxis_title": "implied vol"})
    return fig


def grid_heatmap(values, maturities, moneyness, title, fmt=".3f", colorscale="Viridis"):
    """Heatmap of one number per grid point (maturity rows x moneyness columns)."""
    import plotly.graph_objects as go
    v = np.asarray(values)
    fig = go.Figure(go.Heatmap(z=v, x=[f"{m:.2f}" for m in moneyness], y=[f"{t:.3g}y" for t in maturities],
                               colorscale=colorscale, text=np.vectorize(lambda a: format(a, fmt))(v),
                               texttemplate="%{text}"))
    fig.update_layout(title=title, xaxis_title="moneyness K/S", yaxis_title="maturity", height=380)
    return fig


def acf_figure(acf: dict, reference: dict | None = None, title="Mean autocorrelation over grid points"):
    import plotly.graph_objects as go
    lags = sorted(acf)
    fig = go.Figure(go.Scatter(x=lags, y=[acf[k] for k in lags], mode="lines", name="this data"))
    if reference:
        fig.add_trace(go.Scatter(x=list(reference), y=list(reference.values()), mode="markers+text",
                                 name="seed table 1.1 (real SPX)", marker={"size": 10},
                                 text=[f"{v:.2f}" for v in reference.values()], textposition="top center"))
    fig.update_layout(title=title, xaxis_title="lag (trading days)", yaxis_title="ACF", height=380)
    return fig


def loss_curves(history: pd.DataFrame, title: str):
    """Train/validation loss and validation RMSE per epoch of one phase."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation RMSE (implied vol)"))
    x = history["global_epoch"]
    fig.add_trace(go.Scatter(x=x, y=history["train_loss"], name="train loss", mode="lines+markers"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=history["val_loss"], name="validation loss", mode="lines+markers"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=history["val_rmse"], name="validation RMSE", mode="lines+markers"), 1, 2)
    fig.update_xaxes(title_text="epoch (curriculum)")
    fig.update_layout(title=title, height=380)
    return fig


def by_horizon_figure(values: dict, title: str, yaxis: str):
    """Bar chart of a metric by horizon (or by pass)."""
    import plotly.graph_objects as go
    keys = list(values)
    fig = go.Figure(go.Bar(x=[str(k) for k in keys], y=[values[k] for k in keys],
                           text=[f"{values[k]:.4f}" for k in keys], textposition="outside"))
    fig.update_layout(title=title, yaxis_title=yaxis, height=360)
    return fig


def availability_table(p: dict, span: tuple[int, int], plan_counts: dict | None = None) -> pd.DataFrame:
    """The plan's section-3 data-availability table, recomputed on a day span (beside the plan's own counts)."""
    n = span[1] - span[0]
    rows = []
    for phase, L in _data.phase_window_lengths(p).items():
        k = len(_data.window_starts(span, L))
        row = {"phase": phase, "window length (days)": L, "windows available": k,
               "% retained": round(100 * k / n, 1)}
        if plan_counts:
            row["plan's count"] = plan_counts.get(phase)
        rows.append(row)
    return pd.DataFrame(rows)


def high_vol_spells(series: np.ndarray, threshold: float) -> np.ndarray:
    """Lengths (days) of the runs where a series stays above `threshold`."""
    return np.array([b - a for a, b in _data.regime_spells(np.asarray(series) > threshold)], dtype=int)


def garch_half_life(ret: np.ndarray) -> dict:
    """GJR-GARCH(1,1) (skew-t) on the returns, fitted as the embedded data's generator fits it
    (embedded_data.fit_garch): {"persistence", "half_life_days" of a variance shock, "params"}."""
    from .embedded_data import fit_garch
    _, _, params = fit_garch(np.asarray(ret, dtype=float))
    persistence = params["persistence"]
    return {"persistence": persistence, "half_life_days": float(np.log(0.5) / np.log(persistence)),
            "params": params}


def vix_correlation(ds) -> float | None:
    """Correlation of the ~1-month ATM vol with the VIX shipped in arch, on the dates they share."""
    if ds.dates is None:
        return None
    from arch.data import vix
    v = vix.load()["vix"].dropna()
    ix = _data.feature_indices(ds.maturities, ds.moneyness)
    m1 = int(np.argmin(np.abs(ds.maturities - 1 / 12)))
    common, i_ds, i_v = np.intersect1d(ds.day_labels(), np.array(v.index.strftime("%Y-%m-%d")),
                                       return_indices=True)
    if len(common) < 30:
        return None
    return float(np.corrcoef(ds.surface[i_ds, m1, ix["atm"]], v.to_numpy(float)[i_v])[0, 1])


def _atm_1m(ds) -> np.ndarray:
    """(N,) the ATM vol of the maturity nearest one month (the VIX's)."""
    ix = _data.feature_indices(ds.maturities, ds.moneyness)
    return ds.surface[:, int(np.argmin(np.abs(ds.maturities - 1 / 12))), ix["atm"]]


def market_table(ds):
    """Issue 15's table: how the ~1-month ATM vol moves against the returns beside the real VIX, 2014-2018
    (embedded_data.market_comparison, on the days both exist), each statistic with its band around the VIX's
    value and whether the data is inside ('pass' / 'fail'). (DataFrame, comparison dict), or (None, None)
    for data without dates or with fewer than 250 days beside the VIX."""
    from . import embedded_data
    if ds.dates is None:
        return None, None
    cmp = embedded_data.market_comparison(_atm_1m(ds), ds.ret, ds.day_labels())
    if cmp["n_days"] < 250:
        return None, None
    rows = []
    for key, (label, kind, width) in embedded_data.MARKET_STATS.items():
        c = cmp[key]
        rows.append({"statistic": label, "real VIX": c["vix"], "this data": c["data"],
                     "band": f"{c['lo']:.3f} .. {c['hi']:.3f} (" + (f"+-{width:.0%}" if kind == "rel" else f"+-{width}") + ")",
                     "inside the band": "pass" if c["inside"] else "fail"})
    return pd.DataFrame(rows), cmp


def term_spread(ds) -> np.ndarray:
    """(N,) ATM vol of the maturity nearest 1 month minus that of the maturity nearest 1 year: > 0 inverted."""
    ix = _data.feature_indices(ds.maturities, ds.moneyness)
    m1 = int(np.argmin(np.abs(ds.maturities - 1 / 12)))
    return ds.surface[:, m1, ix["atm"]] - ds.surface[:, ix["m1y"], ix["atm"]]


def term_spread_figure(ds, stressed=None, crisis_mask=None, title="Term structure: 1-month minus 1-year ATM vol"):
    """The term spread through time (above zero: inverted), the `stressed` days (bool (N,), e.g. the top 1% of
    realised vol) marked, the crisis regime shaded."""
    import plotly.graph_objects as go
    x, spread = _x(ds), term_spread(ds)
    fig = go.Figure(go.Scattergl(x=x, y=spread, mode="lines", line={"width": 1}, name="1m minus 1y ATM vol"))
    if stressed is not None and np.any(stressed):
        fig.add_trace(go.Scattergl(x=x[stressed], y=spread[stressed], mode="markers", name="top 1% realised-vol days",
                                   marker={"size": 5, "color": "firebrick"}))
    fig.add_hline(y=0, line_color="black", line_width=1)
    for a, b in _data.regime_spells(crisis_mask) if crisis_mask is not None else []:
        fig.add_vrect(x0=x[a], x1=x[b - 1], fillcolor=CRISIS_FILL, line_width=0)
    fig.update_layout(title=title, yaxis_title="vol (decimal)", height=380)
    return fig


def data_summary(ds, acf_lags=(20, 60, 90)) -> dict:
    """The `data` section of metrics.json."""
    arb = _metrics.arbitrage_share(ds.surface, ds.maturities, ds.moneyness)
    labels = ds.day_labels()
    return {"days": ds.n_days, "grid": list(ds.grid), "maturities": ds.maturities.tolist(),
            "moneyness": ds.moneyness.tolist(), "date_range": [str(labels[0]), str(labels[-1])],
            "source": ds.source, "fingerprint": _data.fingerprint(ds), "vix_corr": vix_correlation(ds),
            "arbitrage_free_share": 1.0 - arb["any"], "calendar_violation_share": arb["calendar"],
            "butterfly_violation_share": arb["butterfly"]}


def fan_chart(xb, title: str | None = None):
    """p05-p95 band, sampling spread, forecast (mean p50) and truth across a backfill at one grid point, pass
    boundaries marked. xb: a labelled backfill (`export.to_dataset`) selected at one point, e.g.
    `xb.sel(**key_points(...)["ATM 1-year"])`: iv (date, quantile), spread05/95 and truth (date,)."""
    import plotly.graph_objects as go
    x = xb["date"].values                               # (days,) datetime64, or day indices for data without dates
    if x.dtype.kind == "M" and np.isnat(x).any():      # days past the end of the data: number the days instead
        x = xb["day"].values
    q = lambda level: xb["iv"].sel(quantile=level).values                           # noqa: E731
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=q(0.95), line={"width": 0}, showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=q(0.05), fill="tonexty", fillcolor="rgba(31,119,180,0.2)",
                             line={"width": 0}, name="p05-p95 (quantile average)"))
    fig.add_trace(go.Scatter(x=x, y=xb["spread05"].values, line={"dash": "dot", "color": "gray", "width": 1},
                             name="5-95% of sample p50 paths"))
    fig.add_trace(go.Scatter(x=x, y=xb["spread95"].values, line={"dash": "dot", "color": "gray", "width": 1},
                             showlegend=False))
    fig.add_trace(go.Scatter(x=x, y=q(0.5), line={"color": "rgb(31,119,180)"}, name="forecast (mean p50)"))
    if np.isfinite(xb["truth"].values).any():
        fig.add_trace(go.Scatter(x=x, y=xb["truth"].values, line={"color": "black"}, name="truth"))
    a = xb.attrs
    for d in (k * a["offset"] for k in range(1, a["passes"]) if k * a["offset"] < a["days"]):
        fig.add_vline(x=x[d], line_dash="dash", line_color="firebrick", opacity=0.5)
    t = title or (f"{a['window']}: T={float(xb['maturity']):.3g}y, K/S={float(xb['moneyness']):.2f} "
                  f"({a['passes']} passes, offset {a['offset']})")
    fig.update_layout(title=t, yaxis_title="implied vol", height=400)
    return fig


def pass_end_surfaces(bf, maturities, moneyness):
    """Generated (forecast) vs true surface on the last day of each pass, side by side in 3-D."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    ends = [min((s + 1) * bf.offset, bf.days) - 1 for s in range(bf.passes)]
    ends = [d for d in ends if bf.truth is not None and d < len(bf.truth)]
    fig = make_subplots(rows=1, cols=max(len(ends), 1), specs=[[{"type": "surface"}] * max(len(ends), 1)],
                        subplot_titles=[f"end of pass {i + 1}: {bf.dates[d]}" for i, d in enumerate(ends)])
    for j, d in enumerate(ends, 1):
        fig.add_trace(go.Surface(x=moneyness, y=maturities, z=bf.p50[d], colorscale="Blues", showscale=False,
                                 opacity=0.85, name="generated"), 1, j)
        fig.add_trace(go.Surface(x=moneyness, y=maturities, z=bf.truth[d], colorscale="Reds", showscale=False,
                                 opacity=0.6, name="truth"), 1, j)
    fig.update_layout(title=f"{bf.name}: generated (blue) vs true (red) surface at the end of each pass",
                      height=420)
    return fig


def key_points(maturities, moneyness) -> dict:
    """The grid points the fan charts follow, as labels for `Dataset.sel`: {name: {"maturity": T, "moneyness": K}}:
    ATM 1-month, ATM 1-year and a deep OTM put (the lowest K/S at ~3 months), each the nearest point of the grid."""
    mat, mon = np.asarray(maturities, float), np.asarray(moneyness, float)
    near = lambda grid, x: float(grid[np.argmin(np.abs(grid - x))])                    # noqa: E731
    atm = near(mon, 1.0)
    return {"ATM 1-month": {"maturity": near(mat, 1 / 12), "moneyness": atm},
            "ATM 1-year": {"maturity": near(mat, 1.0), "moneyness": atm},
            "deep OTM put (3-month)": {"maturity": near(mat, 0.25), "moneyness": float(mon.min())}}


VERDICT_COLOURS = {"pass": "#cdebd0", "PASS": "#cdebd0", "stretch": "#b5e0ba", "target": "#cdebd0",
                   "near": "#fbeec1", "between": "#fbeec1", "MARGINAL": "#fbeec1",
                   "fail": "#f6c9c9", "red flag": "#f6c9c9", "FAIL": "#f6c9c9",
                   "skipped": "#e4e4e4", "SKIPPED": "#e4e4e4"}


def verdict_of(cell) -> str | None:
    """The verdict word of a table cell ('pass', 'fail', '0.1100 stretch', 'MARGINAL', ...), or None."""
    if not isinstance(cell, str):
        return None
    for word in sorted(VERDICT_COLOURS, key=len, reverse=True):
        if cell == word or cell.endswith(" " + word):
            return word
    return None


def style_verdicts(df: pd.DataFrame, fmt: dict | None = None):
    """A Styler that colours verdict cells (green pass/target/stretch, amber near/between, red fail/red flag, grey
    skipped) while keeping the word in the cell, so the table reads without colour and without an emoji font."""
    def colour(cell):
        word = verdict_of(cell)
        return f"background-color: {VERDICT_COLOURS[word]}; color: #111" if word else ""
    return df.style.map(colour).format(fmt or {}, na_rep="-").hide(axis="index")


# --- static figures (matplotlib / seaborn): for print, PDF and papers ----------------------------

def _tenor(t: float) -> str:
    """A maturity in years as a tick label: months below a year (1/12 -> '1m'), years above."""
    return f"{t * 12:.3g}m" if t < 1 else f"{t:.3g}y"


def rmse_heatmap_static(values, maturities, moneyness, title: str, fmt: str = ".4f", vmax: float | None = None,
                        label: str = "RMSE (implied vol)"):
    """A seaborn heatmap of one value per grid point (maturity rows x moneyness columns; RMSE unless `label` says
    otherwise), every cell annotated, for print; `vmax` fixes the top of the colour scale (0 is the bottom) so that
    several methods' maps read on one scale. Pure: returns a matplotlib Figure, shows and saves nothing (no pyplot
    state)."""
    import seaborn as sns
    from matplotlib.figure import Figure
    v = np.asarray(values, dtype=float)                                  # (n_mat, n_mon)
    if v.shape != (len(maturities), len(moneyness)):
        raise ValueError(f"rmse_heatmap_static: values have shape {v.shape}, the grid is "
                         f"{len(maturities)}x{len(moneyness)}")
    fig = Figure(figsize=(1.2 * v.shape[1] + 2.6, 0.6 * v.shape[0] + 1.6), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(v, ax=ax, annot=True, fmt=fmt, cmap="viridis", vmin=0 if vmax is not None else None, vmax=vmax,
                linewidths=0.5, linecolor="white",
                xticklabels=[f"{m:.2f}" for m in moneyness], yticklabels=[_tenor(t) for t in maturities],
                annot_kws={"fontsize": 9}, cbar_kws={"label": label})
    ax.tick_params(axis="y", labelrotation=0)
    ax.set(xlabel="moneyness K/S", ylabel="maturity", title=title)
    return fig


def fan_chart_static(series: dict, truth, dates, title: str, ylabel: str = "implied vol"):
    """A matplotlib fan chart of one grid point for several methods, for print: the truth as a black line,
    each method's median as a line (its own colour and dash) over its shaded 5-95% band.

    series: {method: (p05, p50, p95)}, each (days,); truth: (<= days,) or None; dates: (days,) ISO dates
    or day numbers. Pure: returns a Figure."""
    from matplotlib.figure import Figure
    d = np.asarray(dates)
    x = d if d.dtype.kind in "iuf" else pd.to_datetime(d).to_numpy()      # (days,)
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.subplots()
    colours, dashes = [f"C{i}" for i in range(10)], ["-", "--", "-.", ":"]
    for i, (name, (p05, p50, p95)) in enumerate(series.items()):
        lo, mid, hi = (np.asarray(a, dtype=float) for a in (p05, p50, p95))
        if not len(lo) == len(mid) == len(hi) == len(x):
            raise ValueError(f"fan_chart_static: '{name}' has {len(lo)}/{len(mid)}/{len(hi)} days for "
                             f"{len(x)} dates")
        c = colours[i % len(colours)]
        ax.fill_between(x, lo, hi, color=c, alpha=0.18, linewidth=0, label=f"{name} 5-95%")
        ax.plot(x, mid, color=c, linestyle=dashes[i % len(dashes)], linewidth=1.6, label=f"{name} median")
    if truth is not None and len(truth):
        t = np.asarray(truth, dtype=float)
        ax.plot(x[:len(t)], t, color="black", linewidth=1.8, label="truth", zorder=5)
    ax.set(xlabel="trading day" if d.dtype.kind in "iuf" else "date", ylabel=ylabel, title=title)
    if d.dtype.kind not in "iuf":                                        # short, non-overlapping date labels
        import matplotlib.dates as mdates
        loc = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(2 * len(series) + 1, 4), fontsize=8, frameon=False)
    return fig                                 # the legend sits below the axes: it never hides a band


def show_static(fig, caption: str, path=None, dpi: int = 150) -> None:
    """Display a matplotlib Figure as a PNG in the notebook (no pyplot state needed) with its caption below and,
    with `path`, also save that PNG atomically (the book's summary page reads the headline figure from the run
    directory)."""
    import io
    from IPython.display import Image, display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if path is not None:
        from .rundir import atomic_write_bytes
        atomic_write_bytes(path, buf.getvalue())
    display(Image(data=buf.getvalue()))
    show_caption(caption)


def headline_window(starts: dict, test_span, rv, days: int) -> str:
    """The window the summary's headline figure shows: of the named windows ({name: first day}; rolling origins are
    left out) that start in the test split, the one whose year has the highest mean realised vol `rv` (N,): the
    hardest out-of-sample year the run backfilled. data.load_for guarantees there is one."""
    a, b = test_span
    cand = {n: t for n, t in starts.items() if not n.startswith("rolling_") and a <= t < b}
    if not cand:
        raise ValueError("no named window starts in the test split")
    return max(cand, key=lambda n: float(np.mean(rv[cand[n]:cand[n] + days])))
