"""Does the plan's reasoning hold? The analysis of a sweep with `claims:` (notebooks/11_plan_claims.ipynb).

A claims sweep (params/sweeps/plan_claims.yaml) runs one reference configuration, the base profile as it is, and
for each claim of the plan (its sections 11-12: the graduated curriculum, multi-offset training, H = 90 and
context 60, and the plan's prior) a few levels that each change one factor of it, every one over the same seeds.
Per claim this module gives, from the trials' run directories:

- `level_table`: mean +- sd over seeds per level of RMSE, calibrated CI violation (`cal ci_violation`), CRPS and the
  pass-3 / pass-1 RMSE ratio of the 1-year backfills from the rolling test origins, at each generation offset the
  claim is scored at (`offsets`: fast = generation.offset_fast, ensemble = generation.offset_ensemble);
- `paired`: each level minus the reference, paired by seed, with its t over seeds (`analysis.paired_by_seed`);
- `dm`: Diebold-Mariano of each level against the reference on the seed-averaged per-calendar-day loss
  (`analysis.dm_by_seed`: each calendar day's loss averaged over the rolling origins covering it);
- `comparisons` and `claim_verdict`: the verdict in words, by `verdict`'s rule (below), with its reason.

The verdict rule (one comparison: the plan's choice against one alternative, at one generation offset, on RMSE):

- **supported**: the plan's choice has the lower RMSE with BOTH the paired t over seeds (two-sided p < 0.05, n - 1
  df) and the Diebold-Mariano test on the seed-averaged daily squared loss (HLN-corrected, p < 0.05) significant in
  its favour;
- **not supported**: both significant in the alternative's favour (the plan's choice is significantly worse);
- **inconclusive at this scale**: anything else: one test or neither significant, the two disagreeing, or a test
  that cannot be computed (one seed: no t; no finished pair of trials).

A claim is supported when every one of its comparisons (each alternative level, at each offset it is scored at) is
supported, not supported when any is not supported, and inconclusive at this scale otherwise. The plan's choice is
the reference unless the claim names another level (`plan`: the prior claim, where the plan's choice is the N(0, I)
prior and the reference is the working model's conditional prior).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..compare import number
from ..report import fmt_p
from ..rundir import read_metrics
from . import analysis
from .spec import OFFSET_ROLES, REFERENCE, override

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this scale"
ALPHA = 0.05
METRICS = ["rmse", "cal ci_violation", "crps", "pass3/pass1"]      # the per-level table's scores
ROLE_NAMES = {"fast": "generation.offset_fast", "ensemble": "generation.offset_ensemble"}
VERDICT_COLOURS = {SUPPORTED: "#cdebd0", NOT_SUPPORTED: "#f6c9c9", INCONCLUSIVE: "#fbeec1"}


# --- the sweep's claims ------------------------------------------------------------------------------

def claims_of(df: pd.DataFrame) -> dict:
    """The claims of the sweep behind a results table (sweep.json, as `results.load_results` attaches it)."""
    return df.attrs.get("sweep", {}).get("claims") or {}


def design_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and level: what the level changes in the reference (its overrides), the plan's choice
    marked, and the offsets it is scored at."""
    rows = []
    for claim, c in claims_of(df).items():
        ref = f"{REFERENCE} ({c['reference']})" if c.get("reference") else REFERENCE
        for level, ov in [(REFERENCE, {}), *c["levels"].items()]:
            rows.append({"claim": claim, "level": ref if level == REFERENCE else level,
                         "plan's choice": "yes" if level == c["plan"] else "",
                         "changes": "; ".join(ov if isinstance(ov, list) else
                                              (override(k, v) for k, v in ov.items())) or "(the base profile)",
                         "scored at": ", ".join(c["offsets"])})
    return pd.DataFrame(rows, columns=["claim", "level", "plan's choice", "changes", "scored at"])


def trial_scores(run_dir, offset: str = "offset_fast") -> dict:
    """A trial's rolling-origin scores of its VAE at generation.`offset` (metrics.json `rolling`): the offset, RMSE,
    raw and calibrated CI violation, CRPS, the number of passes and the pass-3 / pass-1 RMSE ratio (NaN below
    three passes). NaN where the run has no such section."""
    run_dir = Path(run_dir)
    out = {"offset": np.nan, "rmse": np.nan, "ci_violation": np.nan, "cal ci_violation": np.nan, "crps": np.nan,
           "passes": np.nan, "pass3/pass1": np.nan}
    try:
        p = yaml.safe_load((run_dir / "params.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return out
    o = p["generation"][offset]
    roll = read_metrics(run_dir).get("rolling") or {}
    raw, cal = roll.get(f"vae_o{o}") or {}, roll.get(f"vae_o{o}_cal") or {}
    by_pass = raw.get("rmse_by_pass") or []
    out.update(offset=o, rmse=_num(raw.get("rmse")), ci_violation=_num(raw.get("ci_violation")),
               crps=_num(raw.get("crps")), passes=len(by_pass) or np.nan)
    out["cal ci_violation"] = _num(cal.get("ci_violation"))
    if len(by_pass) >= 3 and by_pass[0]:
        out["pass3/pass1"] = by_pass[2] / by_pass[0]
    return out


def _num(v) -> float:
    """`compare.number`, and NaN for an infinite value too."""
    x = number(v)
    return x if math.isfinite(x) else np.nan


def claim_frame(df: pd.DataFrame, claim: str, offset: str = "offset_fast") -> pd.DataFrame:
    """The trials of one claim: the reference's and the claim's levels', in the sweep's order, each finished trial
    with its `trial_scores` at generation.`offset`; `group` is the level (what `analysis.seed_summary` groups by)."""
    if df.empty or "claim" not in df.columns:
        return pd.DataFrame(columns=["trial", "group", "claim", "level", "state", "run_dir", *METRICS])
    d = df[(df["claim"] == REFERENCE) | (df["claim"] == claim)].copy()
    d["group"] = d["level"]
    scores = [trial_scores(r, offset) if s == "ok" else {} for r, s in zip(d["run_dir"], d["state"])]
    for k in ("offset", "ci_violation", *METRICS, "passes"):
        d[k] = [s.get(k, np.nan) for s in scores]
    d.attrs = dict(df.attrs)
    return d.reset_index(drop=True)


def levels(df: pd.DataFrame, claim: str) -> list[str]:
    """The claim's levels, the reference first."""
    c = claims_of(df).get(claim)
    return [REFERENCE, *c["levels"]] if c else []


def _axes(df: pd.DataFrame) -> list[str]:
    """The axes a claim's comparison pairs over: `level` and the space's (the seed), not `claim`."""
    return ["level", *[a for a in df.attrs.get("sweep", {}).get("axes", []) if a not in ("claim", "level")]]


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (the reference, then each claim's levels): its trials, how many finished, and the mean
    minutes per trial (the notebooks' seconds, finished trials)."""
    rows = []
    if not claims_of(df):
        return pd.DataFrame(rows, columns=["claim", "level", "trials", "finished", "minutes per trial"])
    for claim, level in [(REFERENCE, REFERENCE), *((c, lv) for c, s in claims_of(df).items() for lv in s["levels"])]:
        d = df[(df["claim"] == claim) & (df["level"] == level)] if "claim" in df.columns else df.iloc[:0]
        sec = pd.to_numeric(d.loc[d["state"] == "ok", "seconds"], errors="coerce") if "seconds" in d else pd.Series()
        rows.append({"claim": claim, "level": level, "trials": len(d), "finished": int((d["state"] == "ok").sum()),
                     "minutes per trial": sec.mean() / 60 if len(sec.dropna()) else np.nan})
    return pd.DataFrame(rows, columns=["claim", "level", "trials", "finished", "minutes per trial"])


def common_overrides(df: pd.DataFrame) -> list[str]:
    """The overrides every trial of the sweep shares (its `set`, and space values all trials have)."""
    trials = df.attrs.get("sweep", {}).get("trials") or []
    if not trials:
        return []
    first = trials[0]["overrides"]
    return [o for o in first if all(o in t["overrides"] for t in trials[1:])]


# --- per claim: mean +- sd, paired differences, Diebold-Mariano ------------------------------------------

def level_table(df: pd.DataFrame, claim: str, offset: str = "offset_fast") -> pd.DataFrame:
    """Mean +- sd over seeds per level (the reference first) of RMSE, calibrated CI violation, CRPS and pass-3 /
    pass-1 RMSE at generation.`offset`, with the offset itself and the trials that did not finish."""
    d = claim_frame(df, claim, offset)
    cols = ["level", "offset", "seeds", "not finished", *(f"{m} mean +- sd" for m in METRICS)]
    if d.empty:
        return pd.DataFrame(columns=cols)
    s = analysis.seed_summary(d, METRICS).set_index("group")
    rows = []
    for lv in levels(df, claim):
        mine = d[d["level"] == lv]
        row = {"level": lv, "offset": ", ".join(str(int(o)) for o in dict.fromkeys(mine["offset"].dropna())) or "-",
               "seeds": int(s.loc[lv, "seeds"]) if lv in s.index else 0,
               "not finished": int((mine["state"] != "ok").sum())}
        for m in METRICS:
            row[f"{m} mean +- sd"] = s.loc[lv, f"{m} mean +- sd"] if lv in s.index else "-"
            row[f"{m} mean"] = s.loc[lv, f"{m} mean"] if lv in s.index else np.nan
            row[f"{m} sd"] = s.loc[lv, f"{m} sd"] if lv in s.index else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paired(df: pd.DataFrame, claim: str, offset: str = "offset_fast", metrics=None) -> pd.DataFrame:
    """Each level of the claim minus the reference, trials paired by seed (`analysis.paired_by_seed`), per metric:
    mean of each, mean and sd of the per-seed differences, the t over seeds and its p-value."""
    d = claim_frame(df, claim, offset)
    out = []
    for lv in levels(df, claim)[1:]:
        for m in metrics or METRICS:
            r = analysis.paired_by_seed(d, "level", m, REFERENCE, lv, axes=_axes(df))
            if not r.empty:
                out.append(r.rename(columns={f"{m} a": "reference", f"{m} b": "at the level"}).assign(metric=m))
    cols = ["b", "metric", "seeds", "reference", "at the level", "diff b - a", "sd of diff", "t", "p"]
    if not out:
        return pd.DataFrame(columns=["level", *cols[1:]])
    return pd.concat(out, ignore_index=True)[cols].rename(columns={"b": "level", "diff b - a": "level - reference"})


def dm(df: pd.DataFrame, claim: str, offset: str = "offset_fast", loss: str = "squared") -> pd.DataFrame:
    """Each level of the claim against the reference: Diebold-Mariano on the seed-averaged per-calendar-day loss
    of the backfills at generation.`offset` (`analysis.dm_by_seed`), with each seed's DM beside it. Positive: the level's
    loss is higher than the reference's."""
    d = claim_frame(df, claim, offset)
    out = [r for lv in levels(df, claim)[1:]
           if not (r := analysis.dm_by_seed(d, "level", REFERENCE, lv, loss=loss, axes=_axes(df), offset=offset)).empty]
    cols = ["b", "seeds", "days", "mean loss diff b - a", "dm", "p", "dm per seed"]
    names = {"b": "level", "mean loss diff b - a": "mean loss diff (level - reference)"}
    if not out:
        return pd.DataFrame(columns=[names.get(c, c) for c in cols])
    return pd.concat(out, ignore_index=True)[cols].rename(columns=names)


# --- the verdict -------------------------------------------------------------------------------------

def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(x) for x in xs)


def verdict(t, p, dm_stat, dm_p, plan_is_reference: bool = True, seeds: int | None = None,
            alpha: float = ALPHA) -> tuple[str, str]:
    """The verdict on one comparison of the plan's choice with an alternative (module docstring), from the paired t
    over seeds of RMSE (alternative level minus reference) and the DM statistic of the daily loss (level minus
    reference): (word, reason). Positive t and DM mean the level is worse than the reference; `plan_is_reference`
    says which of the two is the plan's choice."""
    sign = 1 if plan_is_reference else -1         # sign * statistic > 0: the plan's choice has the lower loss

    def side(stat, pv):
        if not _finite(stat, pv):
            return None
        return ("plan" if sign * stat > 0 else "alternative") if pv < alpha else "neither"

    st, sd = side(t, p), side(dm_stat, dm_p)

    def words(name, stat, pv, s, is_t=False):
        if s is None:
            why = ("one seed, no t over seeds" if is_t and seeds is not None and 0 < seeds < 2
                   else "not available (no finished pair)")
            return f"{name}: {why}"
        lean = "the plan's choice" if sign * stat > 0 else "the alternative"
        what = f"significant for {lean}" if s != "neither" else f"not significant (leans to {lean})"
        return f"{name} {stat:.2f} (p {fmt_p(pv)}): {what}"

    n = f" over {seeds} seeds" if seeds and seeds > 1 else ""
    detail = (f"{words('paired t' + n, t, p, st, is_t=True)}; "
              f"{words('DM on the seed-averaged daily loss', dm_stat, dm_p, sd)}")
    if st == sd == "plan":
        return SUPPORTED, f"the plan's choice has the lower RMSE, significantly on both tests at {alpha:g}: {detail}"
    if st == sd == "alternative":
        return NOT_SUPPORTED, f"the alternative has the lower RMSE, significantly on both tests at {alpha:g}: {detail}"
    return INCONCLUSIVE, f"not both tests significant at {alpha:g} in one direction: {detail}"


def claim_verdict(verdicts: list[tuple[str, str]]) -> tuple[str, str]:
    """A claim's verdict from its comparisons' [(label, word)]: supported when every one is supported, not supported
    when any is not supported, inconclusive at this scale otherwise (also when there is none); with the reason."""
    if not verdicts:
        return INCONCLUSIVE, "no comparison could be made (no finished trials of the claim and the reference)"
    words = [w for _, w in verdicts]
    if all(w == SUPPORTED for w in words):
        return SUPPORTED, f"every comparison ({len(words)}) supports the plan's choice"
    against = [label for label, w in verdicts if w == NOT_SUPPORTED]
    if against:
        return NOT_SUPPORTED, f"the plan's choice is significantly worse {' and '.join(against)}"
    pro = [label for label, w in verdicts if w == SUPPORTED]
    rest = ", nor ".join(label for label, w in verdicts if w != SUPPORTED)
    if pro:
        return INCONCLUSIVE, f"supported {' and '.join(pro)}, but not {rest}"
    return INCONCLUSIVE, ("its comparison is not significant on both tests" if len(words) == 1 else
                          f"none of its {len(words)} comparisons is significant on both tests")


def comparisons(df: pd.DataFrame, claim: str) -> pd.DataFrame:
    """One row per comparison of the claim (each alternative level, at each offset the claim is scored at): the
    plan's choice and the alternative, their mean RMSE, the paired t over seeds and DM, the verdict and its reason."""
    c = claims_of(df).get(claim)
    cols = ["plan's choice", "alternative", "offset", "seeds", "rmse plan", "rmse alternative", "t", "p", "dm", "dm p",
            "dm per seed", "verdict", "reason"]
    if not c:
        return pd.DataFrame(columns=cols)
    rows = []
    for role in c["offsets"]:
        offset = OFFSET_ROLES[role]
        pr = paired(df, claim, offset, ["rmse"]).set_index("level")
        dmt = dm(df, claim, offset).set_index("level")
        lt = level_table(df, claim, offset).set_index("level")
        for lv in c["levels"]:
            plan_is_ref = c["plan"] == REFERENCE
            plan, alt = (REFERENCE, lv) if plan_is_ref else (lv, REFERENCE)
            t = pr.loc[lv, "t"] if lv in pr.index else np.nan
            p = pr.loc[lv, "p"] if lv in pr.index else np.nan
            seeds = int(pr.loc[lv, "seeds"]) if lv in pr.index else 0
            d, dp = (dmt.loc[lv, "dm"], dmt.loc[lv, "p"]) if lv in dmt.index else (np.nan, np.nan)
            word, why = verdict(t, p, d, dp, plan_is_ref, seeds)
            offs = f"{role} ({lt.loc[plan, 'offset']} / {lt.loc[alt, 'offset']})" if plan in lt.index else role
            rows.append({"plan's choice": plan, "alternative": alt, "offset": offs, "seeds": seeds,
                         "rmse plan": lt.loc[plan, "rmse mean"] if plan in lt.index else np.nan,
                         "rmse alternative": lt.loc[alt, "rmse mean"] if alt in lt.index else np.nan,
                         "t": t, "p": p, "dm": d, "dm p": dp,
                         "dm per seed": dmt.loc[lv, "dm per seed"] if lv in dmt.index else "",
                         "verdict": word, "reason": why, "_role": role, "_level": lv})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def judge(df: pd.DataFrame, claim: str, comp: pd.DataFrame | None = None) -> tuple[str, str]:
    """The claim's verdict and reason (`claim_verdict` of `comparisons`), naming each comparison by its alternative
    and offset, followed by each comparison's own reason."""
    comp = comparisons(df, claim) if comp is None else comp
    if comp.empty:
        return claim_verdict([])
    c = claims_of(df)[claim]
    many = len(c["offsets"]) > 1
    labels = [f"vs {lv}" + (f" at the {role} offset" if many else "")
              for lv, role in zip(comp["alternative"], comp["_role"])]
    word, why = claim_verdict(list(zip(labels, comp["verdict"])))
    return word, f"{why} ({'; '.join(f'{lab}: {r}' for lab, r in zip(labels, comp['reason']))})"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: what it says, its verdict and the reason."""
    rows = []
    for claim, c in claims_of(df).items():
        word, why = judge(df, claim)
        rows.append({"claim": claim, "says": c.get("says", ""), "plan's choice": c["plan"],
                     "alternatives": ", ".join(c["levels"]) if c["plan"] == REFERENCE else REFERENCE,
                     "verdict": word, "reason": why})
    return pd.DataFrame(rows, columns=["claim", "says", "plan's choice", "alternatives", "verdict", "reason"])


def style(df: pd.DataFrame, fmt: dict | None = None):
    """A Styler that colours verdict cells (green supported, red not supported, amber inconclusive), the word kept."""
    def colour(cell):
        return f"background-color: {VERDICT_COLOURS[cell]}; color: #111" if cell in VERDICT_COLOURS else ""
    shown = df[[c for c in df.columns if not str(c).startswith("_")]]
    return shown.style.map(colour).format(fmt or {}, na_rep="-").hide(axis="index")


# --- figure ------------------------------------------------------------------------------------------

def figure(df: pd.DataFrame, claim: str, metric: str = "rmse", offset: str = "offset_fast"):
    """The claim's levels side by side: each finished trial's metric as a dot (one per seed, hover: the seed) and
    the level's mean +- sd over seeds; the reference first, the plan's choice drawn in green."""
    import plotly.graph_objects as go
    d = claim_frame(df, claim, offset)
    fig = go.Figure()
    ok = d[d["state"] == "ok"]
    plan = (claims_of(df).get(claim) or {}).get("plan", REFERENCE)
    order = levels(df, claim)
    if not ok.empty:
        fig.add_trace(go.Scatter(x=ok["level"], y=ok[metric], mode="markers", name="one seed", marker={"size": 8},
                                 text=[f"seed {s}" for s in ok.get("seed", ok["trial"])]))
        lt = level_table(df, claim, offset)
        lt = lt[lt["seeds"] > 0]
        fig.add_trace(go.Scatter(x=lt["level"], y=lt[f"{metric} mean"], error_y={"array": lt[f"{metric} sd"]},
                                 mode="markers", name="mean +- sd over seeds",
                                 marker={"symbol": "line-ew-open", "size": 26,
                                         "color": ["#2ca02c" if lv == plan else "#555" for lv in lt["level"]]}))
    fig.update_layout(title=f"{claim}: {metric} by level ({offset.replace('_', ' ')})", yaxis_title=metric,
                      height=380, xaxis={"categoryorder": "array", "categoryarray": order})
    return fig


# --- the chapter's section per claim --------------------------------------------------------------------

def show(df: pd.DataFrame, claim: str, heading: bool = False) -> tuple[str, str] | None:
    """Display one claim's section of the chapter: the claim as the sweep file states it; per offset it is scored
    at, the levels' mean +- sd over seeds, the paired differences from the reference with their t over seeds,
    Diebold-Mariano against the reference, the figure; then the comparisons' verdicts and the claim's verdict with
    its reason (`heading`: under a heading of its name). Returns (verdict, reason), or None (with a line saying so)
    when the sweep has no such claim."""
    from IPython.display import Markdown, display
    from .. import report
    c = claims_of(df).get(claim)
    if c is None:
        print(f"this sweep has no claim {claim!r} (its claims: {', '.join(claims_of(df)) or 'none'})")
        return None
    if heading:
        display(Markdown(f"### {claim}"))
    if c.get("says"):
        display(Markdown(f"*The claim, as the sweep file states it:* {c['says']}"))
    for role in c["offsets"]:
        offset = OFFSET_ROLES[role]
        display(Markdown(f"**Scored at the {role} offset** (`{ROLE_NAMES[role]}` of each level).")) \
            if len(c["offsets"]) > 1 else None
        lt = level_table(df, claim, offset)
        shown = lt[[x for x in lt.columns if x.endswith("+- sd") or not x.endswith((" mean", " sd"))]]
        display(shown.rename(columns=lambda x: x.removesuffix(" mean +- sd")).style.hide(axis="index").set_caption(
            "mean +- sd over seeds per level (rolling test origins; RMSE and CRPS in implied vol, calibrated CI "
            "violation nominal 0.10)"))
        pr = paired(df, claim, offset)
        display(pr.style.format({x: "{:.4g}" for x in ("reference", "at the level", "level - reference", "sd of diff",
                                                        "t")}
                                | {"p": fmt_p}, na_rep="-").hide(axis="index").set_caption(
            "each level minus the reference, paired by seed: the t over seeds (n - 1 df)"))
        d = dm(df, claim, offset)
        display(d.style.format({"mean loss diff (level - reference)": "{:.3e}", "dm": "{:.2f}", "p": fmt_p},
                               na_rep="-").hide(axis="index").set_caption(
            "Diebold-Mariano, each level against the reference, on the seed-averaged per-calendar-day squared loss "
            "(positive: the level's loss is higher)"))
        report.show(figure(df, claim, "rmse", offset),
                    f"{claim}: RMSE of the 1-year backfills from the rolling test origins at the {role} offset, one dot "
                    f"per seed and each level's mean +- sd over seeds (green: the plan's choice). Levels whose bars "
                    f"overlap are not told apart by this many seeds.")
    comp = comparisons(df, claim)
    display(style(comp, {"rmse plan": "{:.4g}", "rmse alternative": "{:.4g}", "t": "{:.2f}", "dm": "{:.2f}",
                         "p": fmt_p, "dm p": fmt_p}).set_caption("the verdict of each comparison (the rule above)"))
    word, why = judge(df, claim, comp)
    display(Markdown(f"**Verdict on `{claim}`: {word}.** {why[0].upper() + why[1:]}."))
    return word, why
