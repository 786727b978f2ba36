"""Compare runs: one row per run directory with its profile, params delta, gate decisions and headline scores.

`table(run_dirs)` reads each run's metrics.json and params.yaml into a DataFrame: the params that differ from
the first run's (dotted keys, provenance left out), each gate's decision, and the rolling-origin scores of the
run's VAE at offset `generation.offset_fast` (raw and conformally calibrated) beside the baselines' RMSE and the
pooled Diebold-Mariano test against the econometric baseline. Numbers stay numbers (NaN where a run has no such
section: a run that stopped early still compares); `write` prints them, missing ones as "-", into compare.md
and compare.html.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .gates import GATE_OF_PHASE
from .report import fmt_p

GATE_ORDER = [*GATE_OF_PHASE.values(), "gate3"]        # in the order the notebooks decide them
SCORES = ["rmse", "ci_violation", "coverage_p05", "coverage_p50", "coverage_p95", "pinball_mean",
          "interval_score", "crps"]
BASELINES = ["econometric", "random_walk", "har", "backbone"]
DM_AGAINST = ["har", "backbone"]                       # beside the econometric one (`dm vs econometric`, `dm p`)
NOT_PARAMS = ("provenance", "profile", "description")   # not experiment settings (profile has its own column)
MISSING = "-"


class CompareError(ValueError):
    """A run directory that cannot be compared; the message names it in one line."""


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested params -> {dotted key: leaf}; lists are leaves."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _text(v) -> str:
    """A params value as YAML would show it: 1e-05, true, null, [1, 7]."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v)


def params_delta(ref: dict, p: dict) -> str:
    """'key: a -> b' for every dotted key whose value differs (absent on one side shows as '-'), '; '-joined."""
    a = flatten({k: v for k, v in ref.items() if k not in NOT_PARAMS})
    b = flatten({k: v for k, v in p.items() if k not in NOT_PARAMS})
    keys = list(a) + [k for k in b if k not in a]
    return "; ".join(f"{k}: {_text(a[k]) if k in a else MISSING} -> {_text(b[k]) if k in b else MISSING}"
                     for k in keys if k not in a or k not in b or a[k] != b[k])


def read_run(run_dir) -> tuple[dict, dict | None]:
    """(metrics, params) of a run directory; params is None without params.yaml. No metrics.json: CompareError."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise CompareError(f"{run_dir} has no metrics.json: not a run directory, or the run never started")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CompareError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    p = None
    if (run_dir / "params.yaml").is_file():
        try:
            p = yaml.safe_load((run_dir / "params.yaml").read_text())
        except (OSError, yaml.YAMLError) as e:
            raise CompareError(f"cannot read {run_dir / 'params.yaml'}: {type(e).__name__}") from None
    return metrics, p if isinstance(p, dict) else None


def _get(d, *keys):
    """d[k1][k2]... or None where any level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _state(run_dir: Path, m: dict) -> str:
    """The run's state as `book` judges it: its recorded run_state, except that a finished run with a notebook or a
    section that does not carry the current key (a notebook run by hand since, which also drops the --set overrides
    from params.yaml; other code) is 'stale', and a running one whose process is gone is 'interrupted'."""
    from .pipeline import stale_parts
    from .rundir import run_state
    state = m.get("run_state")
    if state == "running":
        return run_state(run_dir)
    if state in ("ok", "partial") and stale_parts(run_dir, m):
        return "stale"
    return state or MISSING


def number(v) -> float:
    """A value read from metrics.json as a float: a number as it is, anything else (None, a string, a bool) NaN.
    The one such helper (the sweep's results table and what a trial reports to Tune use it too)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


def kernel_label(k: dict | None) -> str | None:
    """'cpu AVX512 2 threads' / 'cuda NVIDIA H100 80GB HBM3': the part of a phase's `kernels` (`train.kernels`) that
    decides the bits (on CPU the instruction set and the thread count), with any pinning environment variable (None:
    not recorded)."""
    if not isinstance(k, dict):
        return None
    cpu = k.get("device") != "cuda"
    what = k.get("cpu_capability") if cpu else k.get("gpu")
    n = k.get("threads") if cpu else None
    threads = f"{n} thread{'s' if n != 1 else ''}" if isinstance(n, int) else None
    env = " ".join(f"{a}={b}" for a, b in sorted((k.get("env") or {}).items()))
    return " ".join(x for x in (k.get("device"), what, threads, env) if x)


def trained_on(m: dict) -> str:
    """The kernel path of the run's last trained phase (`kernel_label`), '-' when none recorded one. Runs
    trained on different paths differ as reseeding does (docs/design.md §10)."""
    phases = m.get("phases") or {}
    for name in sorted(phases, reverse=True):
        label = kernel_label(_get(phases, name, "kernels"))
        if label:
            return label
    return MISSING


def table(run_dirs) -> pd.DataFrame:
    """One row per run: run, profile, state, params delta against the first run, one column per gate (its
    decision), `trained on` (the kernel path of its training), the VAE method key and its rolling scores (`cal ...`:
    its conformal row), the baselines' RMSE, and `dm vs econometric` / `dm p` (and `dm vs har`, `dm p vs har`, ...
    for the strong baselines) of the DM test on the per-calendar-day loss (negative: the VAE's squared loss is
    lower)."""
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise CompareError("no run directories to compare")
    runs = [read_run(r) for r in run_dirs]
    ref = runs[0][1]
    gates = {g for m, _ in runs for g in (m.get("gates") or {})}
    gate_cols = [g for g in GATE_ORDER if g in gates] + sorted(gates - set(GATE_ORDER))
    rows = []
    for i, (r, (m, p)) in enumerate(zip(run_dirs, runs)):
        offset = _get(p, "generation", "offset_fast")
        method = f"vae_o{offset}" if offset is not None else None
        row = {"run": str(r), "profile": m.get("profile") or _get(p, "profile") or MISSING,
               "state": _state(r, m),
               "params delta": (MISSING if ref is None or p is None else
                                "reference" if i == 0 else params_delta(ref, p) or "same")}
        row.update({g: _get(m, "gates", g, "decision") or MISSING for g in gate_cols})
        row["trained on"] = trained_on(m)
        row["method"] = method or MISSING
        roll = m.get("rolling") or {}
        for prefix, key in (("", method), ("cal ", f"{method}_cal" if method else None)):
            row.update({f"{prefix}{s}": number(_get(roll, key, s)) for s in SCORES})
        row.update({f"{b} rmse": number(_get(roll, b, "rmse")) for b in BASELINES})
        dm = _get(m, "dm_tests", "rolling_by_day", f"{method} vs econometric") if method else None
        row["dm vs econometric"], row["dm p"] = number(_get(dm, "dm")), number(_get(dm, "p_value"))
        for b in DM_AGAINST:
            dm = _get(m, "dm_tests", "rolling_by_day", f"{method} vs {b}") if method else None
            row[f"dm vs {b}"], row[f"dm p vs {b}"] = number(_get(dm, "dm")), number(_get(dm, "p_value"))
        rows.append(row)
    return pd.DataFrame(rows)


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """The table as text: numbers to 4 significant digits, p-values by `report.fmt_p`, missing as '-'."""
    def cell(col, v):
        if isinstance(v, str):
            return v
        if v is None or not np.isfinite(v):
            return MISSING
        return fmt_p(v) if col.startswith("dm p") else f"{v:.4g}"
    return pd.DataFrame({c: [cell(c, v) for v in df[c]] for c in df.columns})


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-style markdown table of `formatted(df)`."""
    t = formatted(df)
    esc = lambda s: str(s).replace("|", "\\|")                       # noqa: E731
    lines = ["| " + " | ".join(map(esc, t.columns)) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in t.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame) -> str:
    """A standalone HTML page with the table of `formatted(df)`."""
    body = formatted(df).to_html(index=False, border=0, classes="compare")
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}td{max-width:28em}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Run comparison</title>"
            f"<style>{style}</style></head>\n<body>\n<h1>Run comparison</h1>\n{body}\n</body></html>\n")


def write(df: pd.DataFrame, out_dir="runs/compare") -> tuple[Path, Path]:
    """Atomically write out_dir/compare.md and out_dir/compare.html; returns their paths."""
    from .rundir import atomic_write_text
    out = Path(out_dir)
    md, html = out / "compare.md", out / "compare.html"
    atomic_write_text(md, to_markdown(df))
    atomic_write_text(html, to_html(df))
    return md, html
