"""Backfill generation (passes, overlap averaging, shapes, reproducibility) and the gate logic."""
import numpy as np
import pytest
import torch

from backfill import data, gates, generate, params, train
from backfill.rollout import rollout


@pytest.fixture(scope="module")
def setup():
    p = params.load(params.profile_path("test"))
    ds = data.load_for(p)
    torch.manual_seed(0)
    model = train.build_model(p, ds, data.splits(ds, p)["train"]).eval()
    return p, ds, model


# --- passes and coverage: the plan's section 5 -------------------------------------------------

def test_passes_and_days_covered_match_the_plan():
    assert generate.n_passes(252, 90) == 3 and generate.days_covered(90, 90, 3) == 270
    assert generate.n_passes(252, 45) == 6 and generate.days_covered(90, 45, 6) == 315
    assert generate.n_passes(180, 90) == 2 and generate.days_covered(90, 90, 2) == 180


def test_offset45_overlap_weights_are_exact():
    w = generate.overlap_weights(90, 45, 6, 315)                # (passes, days)
    assert w.shape == (6, 315)
    np.testing.assert_allclose(w.sum(0), 1.0)
    assert (w[0, :45] == 1).all() and (w[1:, :45] == 0).all()  # days 0..44: pass 1 alone
    assert (w[0, 45:90] == 0.5).all() and (w[1, 45:90] == 0.5).all()   # pass 1 and 2 overlap
    assert (w[5, 270:] == 1).all()                               # the tail: pass 6 alone
    w90 = generate.overlap_weights(90, 90, 3, 270)
    assert set(np.unique(w90)) == {0.0, 1.0} and (w90.sum(0) == 1).all()
    with pytest.raises(ValueError):
        generate.overlap_weights(5, 10, 2, 20)                   # offset > horizon leaves gaps


def test_overlapping_days_are_the_mean_of_the_covering_passes(setup):
    p, ds, model = setup
    C, H, O, days, start = model.context_len, 6, 3, 12, 4000
    bf = generate.backfill(model, ds, start, days, H, O, 1, seed=7)
    # the same rollout by hand, with the same generator seed
    ctx = torch.as_tensor(ds.surface[start - C:start], dtype=torch.float32)[None]
    feats = torch.as_tensor(ds.features(model.cfg.rv_halflives)[start - C:start + 3 * O + H], dtype=torch.float32)[None]
    with torch.no_grad():
        steps = rollout(model, ctx, feats, C, H, O, generate.n_passes(days, O), maturities=ds.maturities,
                        moneyness=ds.moneyness, generate=True, generator=torch.Generator().manual_seed(7))
    med = [s["q"][0, :, model.mid].numpy() for s in steps]       # pass s covers days 3s..3s+5
    np.testing.assert_allclose(bf.p50[0], med[0][0], rtol=1e-5)                       # day 0: pass 1 only
    np.testing.assert_allclose(bf.p50[4], (med[0][4] + med[1][1]) / 2, rtol=1e-5)    # day 4: passes 1, 2
    np.testing.assert_allclose(bf.p50[7], (med[1][4] + med[2][1]) / 2, rtol=1e-5)    # day 7: passes 2, 3
    np.testing.assert_allclose(bf.p50[11], (med[2][5] + med[3][2]) / 2, rtol=1e-5)   # day 11: passes 3, 4


def test_backfill_shapes_dates_and_file(setup, tmp_path):
    p, ds, model = setup
    start, days = ds.index_of("2016-03-01"), 25
    bf = generate.backfill(model, ds, start, days, 9, 9, 6, seed=1, chunk=4, name="oos")
    assert bf.passes == 3
    for a in (bf.p05, bf.p50, bf.p95, bf.spread05, bf.spread95, bf.truth):
        assert a.shape == (days, 5, 5)
    assert bf.sample_p50.shape == (6, days, 5, 5)
    assert list(bf.dates) == list(ds.day_labels()[start:start + days]) and bf.dates[0] == "2016-03-01"
    assert (bf.p05 <= bf.p50).all() and (bf.p50 <= bf.p95).all()
    assert list(bf.segment[:10]) == [0] * 9 + [1]
    path = bf.save(tmp_path / "oos_o9.npz", ds.maturities, ds.moneyness)
    z = np.load(path)
    assert {"dates", "maturities", "moneyness", "quantiles", "p05", "p50", "p95", "truth"} <= set(z.files)
    assert z["dates"][0] == "2016-03-01" and z["p50"].shape == (days, 5, 5)


def test_generation_with_a_fixed_seed_is_reproducible(setup):
    p, ds, model = setup
    a = generate.backfill(model, ds, 3000, 18, 9, 9, 8, seed=3, chunk=3)
    b = generate.backfill(model, ds, 3000, 18, 9, 9, 8, seed=3, chunk=3)
    c = generate.backfill(model, ds, 3000, 18, 9, 9, 8, seed=4, chunk=3)
    np.testing.assert_array_equal(a.p50, b.p50)
    np.testing.assert_array_equal(a.sample_p50, b.sample_p50)
    assert not np.array_equal(a.sample_p50, c.sample_p50)


def test_backfill_needs_context(setup):
    p, ds, model = setup
    with pytest.raises(ValueError, match="context"):
        generate.backfill(model, ds, 5, 18, 9, 9, 2, seed=0)


def test_backfill_starts_named_and_rolling(setup):
    p, ds, model = setup
    w = generate.backfill_starts(ds, p, data.splits(ds, p)["test"], 25)
    assert generate.window_starts is generate.backfill_starts          # the name notebook 08 calls
    assert w["crisis"] == ds.index_of("2008-06-02") and w["out_of_sample"] == ds.index_of("2016-03-01")
    rolling = sorted(v for k, v in w.items() if k.startswith("rolling_"))
    assert len(rolling) == p["generation"]["max_rolling"] and rolling[1] - rolling[0] == 21


# --- gate logic on hand-made values ------------------------------------------------------------

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
def test_every_phase_checks_the_seeds_kl_criterion(number):
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
