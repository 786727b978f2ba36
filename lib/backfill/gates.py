"""The seed's success criteria per phase, as checks with measured value, threshold and verdict.

A check is {criterion, value, threshold, op}; `judge` adds ✅ (passes), ⚠️ (passes or fails within
`marginal_band` of the threshold, relative) or ❌ (fails), and a gate's decision is PASS when every
check is ✅, FAIL when any is ❌, MARGINAL otherwise.
"""
from __future__ import annotations

import math


def _check(criterion, value, threshold, op="<"):
    return {"criterion": criterion, "value": None if value is None else float(value),
            "threshold": float(threshold), "op": op}


def judge(check: dict, band: float) -> dict:
    v, thr, op = check["value"], check["threshold"], check["op"]
    if v is None or not math.isfinite(v):
        return {**check, "ok": False, "mark": "❌"}
    ok = v < thr if op == "<" else v > thr
    near = abs(v - thr) <= band * abs(thr)
    mark = "⚠️" if near else ("✅" if ok else "❌")
    return {**check, "ok": ok, "mark": mark}


def decision(checks: list[dict]) -> str:
    marks = [c["mark"] for c in checks]
    return "FAIL" if "❌" in marks else ("MARGINAL" if "⚠️" in marks else "PASS")


def offset_gap(a: float, b: float) -> float:
    """Relative difference between two offsets' RMSE: |a - b| / min(a, b)."""
    return abs(a - b) / min(a, b) if min(a, b) > 0 else float("inf")


def phase_checks(number: int, summary: dict, p: dict) -> list[dict]:
    """The seed's success criteria (sections 2 and 13.1) for one phase, from its training summary."""
    g, tr, va = p["gates"], summary["train_eval"], summary["val_eval"]
    t = p["training"]
    if number == 1:
        return [_check("H1 RMSE, in-sample", tr["rmse_by_horizon"][1], g["phase1_h1_rmse_train"]),
                _check("H1 RMSE, validation", va["rmse_by_horizon"][1], g["phase1_h1_rmse_val"])]
    if number == 2:
        H = max(t["phase2_horizons"])
        out = [_check(f"H{H} RMSE, in-sample", tr["rmse_by_horizon"][H], g["gate1_h90_rmse_train"]),
               _check(f"H{H} RMSE, validation", va["rmse_by_horizon"][H], g["gate1_h90_rmse_val"])]
        out += [_check(f"CI violations, H{h} (validation)", va["ci_by_horizon"][h], g["gate1_ci_violation"])
                for h in t["phase2_horizons"]]
        return out
    offs = t[f"phase{number}_offsets"]
    ratio_thr = g["gate2_pass_ratio"] if number == 3 else g["phase4_pass_ratio"]
    gap_thr = g["gate2_offset_gap"] if number == 3 else g["phase4_offset_gap"]
    out = [_check(f"pass {t[f'phase{number}_ar_steps']} / pass 1 RMSE, offset {o} (validation)",
                  va[f"offset_{o}"]["pass_ratio"], ratio_thr) for o in offs]
    if len(offs) >= 2:
        out.append(_check(f"offsets {offs[0]} vs {offs[-1]}: relative RMSE gap",
                          offset_gap(va[f"offset_{offs[0]}"]["rmse"], va[f"offset_{offs[-1]}"]["rmse"]), gap_thr))
    if number == 4:
        out.append(_check("CI violations (validation)", va["ci_violation"], g["phase4_ci_violation"]))
    return out


def evaluate_checks(checks: list[dict], p: dict) -> dict:
    judged = [judge(c, p["gates"]["marginal_band"]) for c in checks]
    return {"decision": decision(judged), "checks": judged}
