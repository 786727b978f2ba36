"""The plan's success criteria per phase (docs/design.md §3), as checks with measured value, threshold and verdict.

A check is {criterion, value, threshold, op}; `judge` adds a mark in words, "pass", "near" (passes or
fails within `marginal_band` of the threshold, relative) or "fail" (words, not emoji: they read in any
font and in print), and a gate's decision is PASS when every check passes, FAIL when any fails,
MARGINAL otherwise. The checks of a phase the curriculum skips (no epochs: `train.is_skipped`) are measured but
not judged: each reads "skipped" and the decision SKIPPED.
"""
from __future__ import annotations

import math

import numpy as np

PASS, NEAR, FAIL = "pass", "near", "fail"     # a check's mark
SKIP = "skipped"                                # the mark of every check of a skipped phase
SKIPPED = "SKIPPED"                             # its decision


def _check(criterion, value, threshold, op="<"):
    return {"criterion": criterion, "value": None if value is None else float(value),
            "threshold": float(threshold), "op": op}


def judge(check: dict, band: float) -> dict:
    v, thr, op = check["value"], check["threshold"], check["op"]
    if v is None or not math.isfinite(v):
        return {**check, "ok": False, "mark": FAIL}
    ok = v < thr if op == "<" else v > thr
    near = abs(v - thr) <= band * abs(thr)
    mark = NEAR if near else (PASS if ok else FAIL)
    return {**check, "ok": ok, "mark": mark}


def decision(checks: list[dict]) -> str:
    marks = [c["mark"] for c in checks]
    return "FAIL" if FAIL in marks else ("MARGINAL" if NEAR in marks else "PASS")


def offset_gap(a: float, b: float) -> float:
    """Relative difference between two offsets' RMSE: |a - b| / min(a, b)."""
    return abs(a - b) / min(a, b) if min(a, b) > 0 else float("inf")


def phase_checks(number: int, summary: dict, p: dict) -> list[dict]:
    """The plan's success criteria (its sections 2 and 13.1) for one phase, from its training summary."""
    g, tr, va = p["gates"], summary["train_eval"], summary["val_eval"]
    t = p["training"]
    if number == 1:
        return [_check("H1 RMSE, in-sample", tr["rmse_by_horizon"][1], g["phase1_h1_rmse_train"]),
                _check("H1 RMSE, validation", va["rmse_by_horizon"][1], g["phase1_h1_rmse_val"]),
                kl_check(summary, p)]
    if number == 2:
        H = max(t["phase2_horizons"])
        out = [_check(f"H{H} RMSE, in-sample", tr["rmse_by_horizon"][H], g["gate1_h90_rmse_train"]),
               _check(f"H{H} RMSE, validation", va["rmse_by_horizon"][H], g["gate1_h90_rmse_val"])]
        out += [_check(f"CI violations, H{h} (validation)", va["ci_by_horizon"][h], g["gate1_ci_violation"])
                for h in t["phase2_horizons"]]
        return out + [kl_check(summary, p)]
    offs = t[f"phase{number}_offsets"]
    ratio_thr = g["gate2_pass_ratio"] if number == 3 else g["phase4_pass_ratio"]
    gap_thr = g["gate2_offset_gap"] if number == 3 else g["phase4_offset_gap"]
    out = [_check(f"pass ratio (pass {t[f'phase{number}_ar_steps']} / pass 1 RMSE), offset {o} (validation)",
                  va[f"offset_{o}"]["pass_ratio"], ratio_thr) for o in offs]
    if len(offs) >= 2:
        out.append(_check(f"offsets {offs[0]} vs {offs[-1]}: relative RMSE gap",
                          offset_gap(va[f"offset_{offs[0]}"]["rmse"], va[f"offset_{offs[-1]}"]["rmse"]), gap_thr))
    if number == 4:
        out.append(_check("CI violations (validation)", va["ci_violation"], g["phase4_ci_violation"]))
    return out + [kl_check(summary, p)]


def kl_check(summary: dict, p: dict) -> dict:
    """The plan's table 6.1 criterion "KL loss < 10" on the validation windows (KL to the model's prior per day,
    summed over latent dimensions)."""
    return _check("KL to the prior (validation)", summary["val_eval"].get("kl"), p["gates"]["kl_max"])


def judge_checks(checks: list[dict], p: dict, skipped: bool = False) -> dict:
    """{decision, checks}: each check judged (pass / near / fail); for a skipped phase every check reads "skipped"
    (its value is what the model the phase starts from measures, not a result of the phase) and the decision
    SKIPPED."""
    if skipped:
        return {"decision": SKIPPED, "checks": [{**c, "ok": None, "mark": SKIP} for c in checks]}
    judged = [judge(c, p["gates"]["marginal_band"]) for c in checks]
    return {"decision": decision(judged), "checks": judged}


def phase_criteria(number: int, summary: dict, p: dict) -> dict:
    """The plan's criteria for phase `number` judged on its training summary (notebooks 02-05): `judge_checks` of
    `phase_checks`, SKIPPED when the phase trained no epoch."""
    from .train import is_skipped
    return judge_checks(phase_checks(number, summary, p), p, skipped=is_skipped(p, number))


# The plan's fallback advice (its sections 7.2, 7.3 and 13.2) beside each gate.
ADVICE = {
    "phase1": "Foundation not reached: extend phase 1 before moving on (the plan, section 2).",
    "gate1": "If fail: extend phase 2, or fall back to H=60 as the maximum horizon (the plan's gate 1).",
    "gate2": "If fail: extend phase 3 or add an explicit AR loss term (the plan's gate 2).",
    "phase4": "Error accumulation or CI violations too high: monitor pass by pass, fall back to offset 45 "
              "(ensemble) or add conformal prediction (the plan, section 7.2).",
    "gate3": "PASS: proceed to the 1-year backfill. MARGINAL: try the offset-45 alternative. "
             "FAIL: debug, retrain or add refinements (the plan's gate 3).",
}
GATE_OF_PHASE = {1: "phase1", 2: "gate1", 3: "gate2", 4: "phase4"}


def validate_checkpoint(run, number: int) -> dict:
    """Re-evaluate the saved phase checkpoint on the validation split (and in-sample windows)."""
    from pathlib import Path
    from . import checkpoint, phases, train
    p = run.params
    ck = Path(run.run_dir) / "checkpoints" / f"phase{number}.pt"
    if not ck.exists():
        raise FileNotFoundError(f"{ck} is missing: run notebook 0{number + 1} (phase {number}) first")
    device = train.pick_device(p)
    model = checkpoint.load_model(ck, device)
    spec = phases.phase_specs(p)[number - 1]
    series = phases.Series.from_dataset(run.data, device, p["model"]["rv_halflives"])
    cap = p["training"]["max_val_windows"]
    out = {}
    for split, key in (("train", "train_eval"), ("val", "val_eval")):
        starts = phases.eval_starts(run.splits[split], spec.window, cap)
        out[key] = phases.validate(model, spec, series, starts, p)
    return out


def training_gates(run) -> dict:
    """Every phase criterion and gate 1/2 from the saved checkpoints: {gate: {decision, checks, advice}} (SKIPPED for
    a phase the curriculum skips)."""
    from .train import is_skipped
    out = {}
    for number, gate in GATE_OF_PHASE.items():
        summary = validate_checkpoint(run, number)
        skipped = is_skipped(run.params, number)
        res = judge_checks(phase_checks(number, summary, run.params), run.params, skipped=skipped)
        advice = (f"Phase {number} is skipped (training.phase{number}_epochs gives it no epoch): its checkpoint is the "
                  f"model it starts from, so this gate judges nothing." if skipped else ADVICE[gate])
        out[gate] = {**res, "phase": number, "advice": advice}
    return out


def gate3_checks(scores: list[dict], p: dict) -> list[dict]:
    """Gate 3 on 2-pass 6-month backfills: scores = metrics.score_backfill of the normal-regime windows."""
    g = p["gates"]
    ratio = float(np.mean([s["rmse_by_pass"][-1] for s in scores]) / np.mean([s["rmse_by_pass"][0] for s in scores]))
    return [_check("pass ratio (pass 2 / pass 1 RMSE)", ratio, g["gate3_pass_ratio"]),
            _check("CI violations", float(np.mean([s["ci_violation"] for s in scores])), g["gate3_ci_violation"]),
            _check("co-integration share (normal regime)",
                   float(np.mean([s["cointegration_share"] for s in scores])), g["gate3_coint_normal"], ">")]
