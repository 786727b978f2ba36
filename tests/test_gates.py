"""gates: the plan's phase criteria and gates 1-3 as checks (pass / near / fail) and decisions, on hand-made
values."""
import pytest

from backfill import gates


P = {"gates": {"marginal_band": 0.1, "phase1_h1_rmse_train": 0.02, "phase1_h1_rmse_val": 0.025,
               "gate1_h90_rmse_train": 0.07, "gate1_h90_rmse_val": 0.08, "gate1_ci_violation": 0.25,
               "gate2_pass_ratio": 1.5, "gate2_offset_gap": 0.10, "phase4_pass_ratio": 1.5,
               "phase4_offset_gap": 0.15, "phase4_ci_violation": 0.35, "gate3_pass_ratio": 1.5,
               "gate3_ci_violation": 0.35, "gate3_coint_normal": 0.80, "kl_max": 10.0},
     "training": {"phase2_horizons": [1, 90], "phase3_offsets": [30, 60], "phase3_ar_steps": 3,
                  "phase4_offsets": [45, 90], "phase4_ar_steps": 3}}


def _decide(number, summary, kl=1.0):
    summary["val_eval"].setdefault("kl", kl)
    return gates.judge_checks(gates.phase_checks(number, summary, P), P)


def test_phase1_decisions():
    ev = lambda r: {"rmse_by_horizon": {1: r}}                              # noqa: E731
    assert _decide(1, {"train_eval": ev(0.010), "val_eval": ev(0.015)})["decision"] == "PASS"
    assert _decide(1, {"train_eval": ev(0.010), "val_eval": ev(0.026)})["decision"] == "MARGINAL"  # within 10%
    res = _decide(1, {"train_eval": ev(0.010), "val_eval": ev(0.040)})
    assert res["decision"] == "FAIL" and [c["mark"] for c in res["checks"]] == ["pass", "fail", "pass"]
    assert res["checks"][1]["value"] == 0.04 and res["checks"][1]["threshold"] == 0.025


def test_gate1_checks_every_horizon_ci():
    tr = {"rmse_by_horizon": {1: 0.01, 90: 0.05}, "ci_by_horizon": {1: 0.1, 90: 0.1}}
    va = {"rmse_by_horizon": {1: 0.01, 90: 0.06}, "ci_by_horizon": {1: 0.1, 90: 0.40}}
    res = _decide(2, {"train_eval": tr, "val_eval": va})
    assert res["decision"] == "FAIL"
    assert [c["criterion"] for c in res["checks"] if c["mark"] == "fail"] == ["CI violations, H90 (validation)"]


def test_gate2_and_phase4_pass_ratio_and_offset_gap():
    def ev(r_a, r_b, ratio, ci=0.2):
        return {"offset_%d" % P["training"]["phase4_offsets"][0]: {"rmse": r_a, "pass_ratio": ratio},
                "offset_%d" % P["training"]["phase4_offsets"][1]: {"rmse": r_b, "pass_ratio": ratio},
                "offset_30": {"rmse": r_a, "pass_ratio": ratio}, "offset_60": {"rmse": r_b, "pass_ratio": ratio},
                "ci_violation": ci}
    assert _decide(4, {"train_eval": {}, "val_eval": ev(0.05, 0.055, 1.2)})["decision"] == "PASS"
    # 0.05 vs 0.06: gap 20% > 15% -> FAIL in phase 4; 20% > 10% -> FAIL in gate 2
    assert _decide(4, {"train_eval": {}, "val_eval": ev(0.05, 0.06, 1.2)})["decision"] == "FAIL"
    assert _decide(3, {"train_eval": {}, "val_eval": ev(0.05, 0.06, 1.2)})["decision"] == "FAIL"
    assert _decide(4, {"train_eval": {}, "val_eval": ev(0.05, 0.05, 1.6)})["decision"] == "MARGINAL"
    assert _decide(4, {"train_eval": {}, "val_eval": ev(0.05, 0.05, 1.2, ci=0.50)})["decision"] == "FAIL"
    assert gates.offset_gap(0.05, 0.06) == pytest.approx(0.2)


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_every_phase_checks_the_plans_kl_criterion(number):
    ev = {"rmse_by_horizon": {1: 0.01, 90: 0.01}, "ci_by_horizon": {1: 0.1, 90: 0.1}, "ci_violation": 0.1,
          **{f"offset_{o}": {"rmse": 0.05, "pass_ratio": 1.0} for o in (30, 45, 60, 90)}}
    assert _decide(number, {"train_eval": ev, "val_eval": dict(ev)}, kl=3.0)["decision"] == "PASS"
    res = _decide(number, {"train_eval": ev, "val_eval": dict(ev)}, kl=25.0)
    assert res["decision"] == "FAIL"
    assert [c["criterion"] for c in res["checks"] if c["mark"] == "fail"] == ["KL to the prior (validation)"]


def test_gate3_decisions():
    good = {"rmse_by_pass": [0.05, 0.06], "ci_violation": 0.2, "cointegration_share": 0.95}
    bad = {"rmse_by_pass": [0.05, 0.15], "ci_violation": 0.2, "cointegration_share": 0.95}
    marginal = {"rmse_by_pass": [0.05, 0.06], "ci_violation": 0.2, "cointegration_share": 0.78}
    assert gates.judge_checks(gates.gate3_checks([good, good], P), P)["decision"] == "PASS"
    assert gates.judge_checks(gates.gate3_checks([good, bad], P), P)["decision"] == "FAIL"   # ratio 2.1
    assert gates.judge_checks(gates.gate3_checks([marginal], P), P)["decision"] == "MARGINAL"
    checks = gates.gate3_checks([good, bad], P)
    assert checks[0]["value"] == pytest.approx(0.105 / 0.05)


def test_non_finite_value_fails():
    assert gates.judge({"criterion": "x", "value": float("nan"), "threshold": 1.0, "op": "<"}, 0.1)["mark"] == "fail"
