"""A sweep's files: each trial's trial.json, what a trial reports after each phase, the results table
(results.parquet, results.md) and sweep.json; `load_results` reads them back for the chapters.

Sweep directory (runs/sweeps/<name>/):
    <trial>/          a run directory (params.yaml, notebooks/, checkpoints/, metrics.json) plus trial.json
    ray/              Ray Tune's experiment directory (scratch: rebuilt on every launch)
    sweep.json        the expanded sweep: trials, their overrides and axis values, wall time
    results.parquet, results.md, 10_sweep.ipynb (11_plan_claims.ipynb for a sweep with claims)

`table` reads the trial run directories (compare.py's readers) into one row per trial. Imports `spec`, and `analysis`
for the mean +- sd of results.md; never Ray.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .. import compare as _compare
from .. import params as _params
from ..compare import number
from ..gates import GATE_OF_PHASE
from ..rundir import ROOT, atomic_write_bytes, atomic_write_text, is_locked, read_metrics
from .analysis import seed_summary
from .spec import HEADLINE, Sweep, is_number, override, sweep_dir, yaml_line

FINAL = ("ok", "failed", "stopped")                           # trial.json states after which a trial is done


# --- a trial's trial.json and what it reports --------------------------------------------------------

def read_trial(run_dir) -> dict:
    """run_dir/trial.json: {state: running|ok|failed|stopped, ...}; {} before the trial first started."""
    path = Path(run_dir) / "trial.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def write_trial(run_dir, **record) -> dict:
    rec = {**read_trial(run_dir), **record}
    atomic_write_text(Path(run_dir) / "trial.json", json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


def phase_result(metrics: dict, n: int) -> dict:
    """What a trial reports to Tune after phase n: its validation RMSE (phases 1-2: at the phase's longest
    horizon; 3-4: of the autoregressive passes), validation KL and the phase's criteria decision (NaN, NaN and
    SKIPPED for a phase that trained no epoch)."""
    ph = (metrics.get("phases") or {}).get(f"phase{n}") or {}
    by_h = ph.get("val_rmse_by_horizon")
    rmse = by_h[max(by_h, key=int)] if by_h else ph.get("val_rmse")
    if ph.get("skipped"):             # no epoch: its numbers are the model it started from, not a result of it
        return {"phase": n, "val_rmse": float("nan"), "val_kl": float("nan"), "gate": "SKIPPED"}
    return {"phase": n, "val_rmse": number(rmse), "val_kl": number(ph.get("val_kl")),
            "gate": (ph.get("criteria") or {}).get("decision") or "-"}


def trial_scores(run_dir) -> dict:
    """A trial's headline scores as compare.table reads them (HEADLINE; NaN where missing)."""
    row = _compare.table([run_dir]).iloc[0]
    return {k: number(row[k]) for k in HEADLINE if k in row}


def write_info(sw: Sweep, out: Path, launch: dict | None = None) -> dict:
    """out/sweep.json: the expanded sweep (what the chapter and `load_results` read besides the table), with one
    entry per launch (its start and wall seconds) and their total. A `launch` with the start of the last entry
    replaces it: the runner rewrites its launch after every trial, so a launch killed outright (SIGKILL, a machine
    restart) still counts up to its last finished trial; its `ended` stays false (true once the runner reached
    its final write, as after a Ctrl-C)."""
    path = out / "sweep.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    launches = old.get("launches", [])
    if launch:
        same = bool(launches) and launches[-1].get("started") == launch.get("started")
        launches = launches[:-1] + [launch] if same else launches + [launch]
    info = {"name": sw.name, "description": sw.description, "sweep_file": str(sw.path), "base": str(sw.base),
            "metric": sw.metric, "mode": sw.mode, "axes": sw.axes, "chapter": sw.chapter.name,
            "claims": {c: {**v, "levels": {lv: [override(k, x) for k, x in ov.items()]     # KEY=VALUE, as --set
                                           for lv, ov in v["levels"].items()}} for c, v in sw.claims.items()},
            "resources": sw.resources,
            "scheduler": sw.scheduler, "trials": [asdict(t) for t in sw.trials], "launches": launches,
            "wall_seconds": round(sum(x["wall_seconds"] for x in launches), 1)}
    atomic_write_text(path, json.dumps(info, indent=2, default=str) + "\n")
    return info


# --- the results table ---------------------------------------------------------------------------

def state_text(rec: dict, run_dir=None) -> str:
    """A trial's state in words: ok, stopped early at phase N (by), failed: error, running, interrupted, pending."""
    st = rec.get("state")
    if st == "ok":
        return "ok"
    if st == "stopped":
        return f"stopped early at phase {rec.get('phase')} ({rec.get('stopped_by', 'scheduler')})"
    if st == "failed":
        return f"failed: {rec.get('error')}"
    if st == "running":
        return "running" if run_dir is not None and is_locked(run_dir) else "interrupted"
    return "pending"


def _cell(v):
    """A config value for the table: scalars as they are, anything else as one line of YAML."""
    return v if isinstance(v, (str, int, float, bool)) or v is None else yaml_line(v)


def table(sw: Sweep, out=None) -> pd.DataFrame:
    """One row per trial: its name and group, one column per axis, the params that differ between trials (dotted
    keys), its state, every gate's decision (from notebook 06, else from the phase's criteria), the kernel path it
    trained on (seeds trained on different paths differ as reseeding does, docs/design.md §10), each phase's
    validation RMSE, compare.table's headline scores, the notebooks' total seconds and the run directory."""
    out = sweep_dir(sw, out)
    flat = [_compare.flatten({k: v for k, v in _params.load(sw.base, t.overrides).items()
                              if k not in _compare.NOT_PARAMS}) for t in sw.trials]
    varying = [k for k in flat[0] if k not in sw.axes and len({yaml_line(f.get(k)) for f in flat}) > 1]
    dirs = {t.name: out / t.name for t in sw.trials}
    have = [t.name for t in sw.trials if (dirs[t.name] / "metrics.json").is_file()]
    scores = _compare.table([dirs[n] for n in have]).set_index("run") if have else pd.DataFrame()
    later_gates = [g for g in _compare.GATE_ORDER if g not in GATE_OF_PHASE.values()]     # gate3 (notebook 07)
    rows = []
    for t, f in zip(sw.trials, flat):
        rd = dirs[t.name]
        m = read_metrics(rd)
        row = {"trial": t.name, "group": t.group, **{a: _cell(t.config[a]) for a in sw.axes},
               **{k: _cell(f.get(k)) for k in varying}, "state": state_text(read_trial(rd), rd)}
        s = scores.loc[str(rd)] if str(rd) in scores.index else None
        for n, g in GATE_OF_PHASE.items():
            crit = ((m.get("phases") or {}).get(f"phase{n}") or {}).get("criteria") or {}
            v = s[g] if s is not None and g in s and s[g] != _compare.MISSING else None
            row[g] = v or crit.get("decision") or _compare.MISSING
        for g in later_gates:
            row[g] = s[g] if s is not None and g in s else _compare.MISSING
        row["trained on"] = s["trained on"] if s is not None and "trained on" in s else _compare.MISSING
        for n in range(1, 5):
            r = phase_result(m, n)
            row[f"phase{n}.val_rmse"], row[f"phase{n}.val_kl"] = r["val_rmse"], r["val_kl"]
        row["method"] = s["method"] if s is not None else _compare.MISSING
        row.update({k: number(s[k]) if s is not None and k in s else np.nan for k in HEADLINE})
        row["seconds"] = sum(number(x.get("seconds")) for x in (m.get("status") or {}).values()
                             if is_number(x.get("seconds"))) if m else np.nan
        row["overrides"] = "; ".join(t.overrides)
        row["run_dir"] = str(rd)
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in df.columns:                              # parquet needs one type per column
        kinds = {type(v) for v in df[c] if v is not None and not (isinstance(v, float) and np.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[c] = df[c].map(lambda v: v if isinstance(v, str) else yaml_line(v))
    return df


MD_SCORES = ["phase4.val_rmse", "rmse", "cal rmse", "ci_violation", "cal ci_violation", "coverage_p05",
             "coverage_p95", "crps", "dm vs econometric", "dm p", "seconds"]      # results.md; the parquet has all
MD_SUMMARY = ["rmse", "cal rmse", "ci_violation", "cal ci_violation", "crps", "phase4.val_rmse"]


def summary_markdown(df: pd.DataFrame, metrics=None) -> str:
    """Mean +- sd across seeds per group, as a markdown table."""
    s = seed_summary(df, metrics or MD_SUMMARY)
    if s.empty:
        return "(no finished trials)\n"
    cols = ["group", "seeds"] + [c for c in s.columns if c.endswith(" mean +- sd")] + (
        ["trained on"] if "trained on" in s else [])
    return _compare.to_markdown(s[cols].rename(columns=lambda c: c.removesuffix(" mean +- sd")))


def write_results(df: pd.DataFrame, out: Path, sw: Sweep, info: dict | None = None) -> tuple[Path, Path]:
    """out/results.parquet (the table, every column) and out/results.md (a header, mean +- sd per group and the
    trials with their gates and main scores)."""
    import io
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "results.parquet", buf.getvalue())
    lead = ["trial"] + [c for c in df.columns[2:df.columns.get_loc("state")]]        # axes and varying params
    cols = [*lead, "state", *GATE_OF_PHASE.values(), "gate3", "trained on", *MD_SCORES]
    shown = df[[c for c in cols if c in df.columns]]
    launches = (info or {}).get("launches", [])
    wall = (f"; wall time {launches[-1]['wall_seconds'] / 60:.1f} min"
            + (f" ({info['wall_seconds'] / 60:.1f} min over {len(launches)} launches)" if len(launches) > 1 else "")
            if launches else "")
    base = sw.base.relative_to(ROOT) if sw.base.is_relative_to(ROOT) else sw.base
    head = [f"# Sweep {sw.name}", "", *([sw.description.strip(), ""] if sw.description.strip() else []),
            f"Base params `{base}`; metric `{sw.metric}` ({sw.mode}); scheduler {sw.scheduler['type']}; "
            f"{len(df)} trials{wall}.", "",
            "## Mean +- sd across seeds per configuration", "", summary_markdown(df).rstrip(), "",
            "## Trials", "", _compare.to_markdown(shown).rstrip(), ""]
    atomic_write_text(out / "results.md", "\n".join(head) + "\n")
    return out / "results.parquet", out / "results.md"


def load_results(sweep_dir) -> pd.DataFrame:
    """The results table of a sweep directory (empty without one); df.attrs['sweep'] holds sweep.json."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "results.parquet"
    df = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["trial", "group", "state", "run_dir"])
    info = sweep_dir / "sweep.json"
    df.attrs["sweep"] = json.loads(info.read_text()) if info.is_file() else {}
    return df
