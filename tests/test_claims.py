"""The plan's claims (backfill.sweep.claims): the `claims:` key of sweep files (backfill.sweep.spec: validation,
one-factor-at-a-time expansion), a skipped phase's report, the verdict rule and the per-claim analysis on hand-made run
directories. The test profile's claims sweep (params/sweeps/test_claims.yaml) runs end to end in
tests/test_sweep_runner.py (it reuses that module's test sweep)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from backfill import params
from backfill.sweep import claims, results, spec
from backfill.generate import Backfill

from conftest import write_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "params" / "sweeps"
TEST = str(ROOT / "params" / "test.yaml")




PRIOR = {"standard": {"model.prior": "standard", "model.kl_weight": 1.0e-5}}
SINGLE = {"single": {"training.phase4_offsets": [9]}}


def test_a_skipped_phase_reports_no_validation_numbers():
    """A phase with no epoch reports NaN and SKIPPED to Tune and the results table, not the numbers of the model it
    started from."""
    m = {"phases": {"phase1": {"skipped": True, "val_rmse_by_horizon": {"1": 0.5}, "val_kl": 0.1,
                               "criteria": {"decision": "SKIPPED"}}}}
    r = results.phase_result(m, 1)
    assert r["gate"] == "SKIPPED" and np.isnan(r["val_rmse"]) and np.isnan(r["val_kl"])


# --- the sweep file ----------------------------------------------------------------------------------------

def test_the_committed_claims_sweeps_expand_one_factor_at_a_time():
    for name, base in (("plan_claims", "smoke"), ("plan_claims_regime_shift", "regime_shift")):
        sw = spec.load(SWEEPS / f"{name}.yaml")               # also checks every configuration against its data
        assert sw.base == ROOT / "params" / f"{base}.yaml" and sw.axes == ["claim", "level", "seed"]
        assert len(sw.trials) == 24 and len({t.name for t in sw.trials}) == 24
        assert [t.name for t in sw.trials[:4]] == ["reference,seed=0", "reference,seed=1", "reference,seed=2",
                                                 "curriculum=phase4_only,seed=0"]
        assert {t.group for t in sw.trials} == {
            "reference", "curriculum=phase4_only", "curriculum=phase1_only", "multi_offset=single_offset",
            "horizon_context=C20_H30", "horizon_context=C30_H60", "horizon_context=C60_H120", "prior=standard"}
        assert sw.chapter == spec.CLAIMS_CHAPTER and sw.claims["prior"]["plan"] == "standard"
        assert sw.claims["multi_offset"]["offsets"] == ["fast", "ensemble"]
        ref = params.load(sw.base, sw.trials[0].overrides)
        for t in sw.trials:
            p = params.load(sw.base, t.overrides)
            changed = {k for k in ("model", "training", "generation", "data") for x in p[k] if p[k][x] != ref[k][x]}
            if t.config["claim"] == "reference":
                assert not changed and p["seed"] == t.config["seed"]
            else:                        # a level changes only its claim's factor
                want = {"curriculum": {"training"}, "multi_offset": {"training"}, "prior": {"model"},
                        "horizon_context": {"model", "training", "generation"}}[t.config["claim"]]
                extra = {"data"} if name.endswith("regime_shift") and t.config["level"] == "C60_H120" else set()
                assert changed == want | extra, t.name
            if t.config["level"].startswith("C"):
                C, H = (int(x[1:]) for x in t.config["level"].split("_"))
                g, tr = p["generation"], p["training"]
                assert (p["model"]["context_len"], g["horizon"], g["offset_fast"], g["offset_ensemble"]) == (C, H, H, H // 2)
                assert tr["phase4_horizon"] == H and tr["phase4_offsets"] == [H // 2, H]
                assert tr["phase3_horizon"] == 2 * H // 3 and tr["phase3_offsets"] == [H // 3, 2 * H // 3]
                assert max(tr["phase2_horizons"]) == H and len(tr["phase2_horizons"]) == 6
    test = spec.load(SWEEPS / "test_claims.yaml")
    assert [t.name for t in test.trials] == ["reference,seed=0", "curriculum=phase4_only,seed=0",
                                             "multi_offset=single_offset,seed=0", "horizon_context=C5_H6,seed=0",
                                             "prior=standard,seed=0"]


def test_expansion_order_overrides_and_groups(tmp_path):
    sw = spec.load(write_sweep(tmp_path, set={"generation.max_calibration": 2},
                                claims={"prior": {"plan": "standard", **PRIOR}, "offsets": SINGLE},
                                space={"seed": [0, 1]}))
    assert [(t.config["claim"], t.config["level"], t.config["seed"]) for t in sw.trials] == [
        ("reference", "reference", 0), ("reference", "reference", 1), ("prior", "standard", 0),
        ("prior", "standard", 1), ("offsets", "single", 0), ("offsets", "single", 1)]
    assert sw.trials[2].overrides == ["generation.max_calibration=2", "model.prior=standard",
                                      "model.kl_weight=1.0e-05", "seed=0"]
    assert sw.trials[0].overrides == ["generation.max_calibration=2", "seed=0"]
    assert [t.group for t in sw.trials[::2]] == ["reference", "prior=standard", "offsets=single"]
    assert sw.claims["offsets"] == {"says": "", "plan": "reference", "offsets": ["fast"], "reference": "",
                                    "levels": SINGLE}
    alone = spec.load(write_sweep(tmp_path, claims={"prior": PRIOR}))      # no space: one trial per configuration
    assert [t.name for t in alone.trials] == ["reference", "prior=standard"] and alone.axes == ["claim", "level"]


@pytest.mark.parametrize("body, words", [
    ({"claims": {"prior": PRIOR}, "arms": {"x": PRIOR}}, "'claims' and 'arms' do not combine"),
    ({"claims": []}, "'claims' must map each claim name"),
    ({"claims": {"reference": PRIOR}}, "other than 'reference'"),
    ({"claims": {"prior": {}}}, "claims.prior has no level besides the reference"),
    ({"claims": {"prior": {"reference": "the base"}}}, "claims.prior has no level besides the reference"),
    ({"claims": {"prior": {"standard": {}}}}, "claims.prior.standard must be a non-empty mapping"),
    ({"claims": {"prior": {"a=b": {"model.prior": "standard"}}}}, "level 'a=b' must be a plain name"),
    ({"claims": {"prior": {"standard": {"model.priorr": "standard"}}}}, "unknown key 'model.priorr'"),
    ({"claims": {"prior": {"reference": {"model.prior": "standard"}, **PRIOR}}}, "takes no overrides"),
    ({"claims": {"prior": {"plan": "other", **PRIOR}}}, "claims.prior.plan must be 'reference' or one of"),
    ({"claims": {"x": {"plan": "standard", **PRIOR, **SINGLE}}}, "compared with the reference alone"),
    ({"claims": {"prior": {"offsets": ["slow"], **PRIOR}}}, "claims.prior.offsets must be"),
    ({"claims": {"prior": {"says": ["a"], **PRIOR}}}, "claims.prior.says must be text"),
    ({"claims": {"prior": {"same": {"model.prior": "conditional"}}}}, "claims.prior.same leaves the reference's"),
    ({"claims": {"a": PRIOR, "b": PRIOR}}, "claims.b.standard is the same configuration as claims.a.standard"),
    ({"claims": {"prior": {"s3": {"seed": 3}}}, "space": {"seed": [0]}}, "claims.prior.s3: 'seed' is also in space"),
    ({"claims": {"prior": PRIOR}, "space": {"seed": [0], "model.latent_dim": [3, 4]}},
     "space 'model.latent_dim': the space of a claims sweep holds only `seed`"),
    ({"claims": {"long": {"h200": {"training.phase4_horizon": 200, "training.phase4_offsets": [200]}}}},
     "trial long=h200: data.val_fraction: the validation split has"),
])
def test_a_bad_claims_file_is_one_line_naming_the_key(tmp_path, body, words):
    with pytest.raises(spec.SweepError) as e:
        spec.load(write_sweep(tmp_path, **body))
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "s.yaml" in msg, msg


# --- the verdict rule ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t, p, dm, dm_p, plan_is_ref, word", [
    (5.0, 0.01, 3.0, 0.003, True, claims.SUPPORTED),         # the level is worse than the reference, the plan's
    (5.0, 0.01, 3.0, 0.003, False, claims.NOT_SUPPORTED),    # ... or the plan's choice is the level
    (-5.0, 0.01, -3.0, 0.003, True, claims.NOT_SUPPORTED),
    (-5.0, 0.01, -3.0, 0.003, False, claims.SUPPORTED),
    (5.0, 0.01, 1.0, 0.30, True, claims.INCONCLUSIVE),       # only the t over seeds is significant
    (1.0, 0.40, 3.0, 0.003, True, claims.INCONCLUSIVE),      # only DM
    (5.0, 0.01, -3.0, 0.003, True, claims.INCONCLUSIVE),     # the two disagree
    (np.nan, np.nan, 3.0, 0.003, True, claims.INCONCLUSIVE),  # one seed: no t
    (5.0, 0.06, 3.0, 0.04, True, claims.INCONCLUSIVE),       # 5% is the line
])
def test_the_verdict_rule(t, p, dm, dm_p, plan_is_ref, word):
    w, why = claims.verdict(t, p, dm, dm_p, plan_is_ref, seeds=1 if np.isnan(t) else 3)
    assert w == word and why
    if np.isnan(t):
        assert "one seed, no t over seeds" in why


def test_a_claim_needs_every_comparison():
    S, N, I = claims.SUPPORTED, claims.NOT_SUPPORTED, claims.INCONCLUSIVE
    assert claims.claim_verdict([("vs a", S), ("vs b", S)])[0] == S
    assert claims.claim_verdict([("vs a", S), ("vs b", N)]) == (N, "the plan's choice is significantly worse vs b")
    word, why = claims.claim_verdict([("vs a", S), ("vs b", I)])
    assert word == I and why == "supported vs a, but not vs b"
    assert claims.claim_verdict([])[0] == I
    assert claims.claim_verdict([("vs a", I)]) == (I, "its comparison is not significant on both tests")


# --- the analysis on hand-made run directories ---------------------------------------------------------------

def fake_trial(root: Path, name: str, scale: float, seed: int, rng, offsets=(9, 5), jitter: float = 0.0) -> Path:
    """A finished trial's run directory as the analysis reads it: params.yaml, metrics.json (`rolling`, its RMSE
    moved by `jitter`) and the rolling backfills, with median errors of size `scale` (10% noise)."""
    d = root / name
    (d / "backfill").mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump({"generation": {"offset_fast": offsets[0], "offset_ensemble": offsets[1],
                                                                  "horizon": offsets[0]}}))
    truth_rng = np.random.default_rng(100)
    rolling = {}
    for o in offsets:
        for start in (0, 10, 20):
            truth = 0.2 + 0.01 * truth_rng.standard_normal((30, 2, 3))
            err = scale * (1 + 0.1 * rng.standard_normal((30, 2, 3)))
            p50 = truth + err
            Backfill(f"rolling_{start}", start, 30, o, o, 3, 4, np.arange(start, start + 30), p50 - 0.05, p50, p50 + 0.05,
                     p50, p50, p50[None], truth, np.repeat(np.arange(3), 10)).save(
                d / "backfill" / f"rolling_{start}_o{o}.npz", np.array([0.25, 1.0]), np.array([0.9, 1.0, 1.1]))
        rolling[f"vae_o{o}"] = {"rmse": scale * (1 + 0.02 * seed) + jitter, "ci_violation": 0.2, "crps": scale / 2,
                                "rmse_by_pass": [scale, 1.1 * scale, 1.2 * scale]}
        rolling[f"vae_o{o}_cal"] = {"ci_violation": 0.1 + 0.01 * seed}
    (d / "metrics.json").write_text(json.dumps({"rolling": rolling}))
    return d


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """Reference errors 0.01; curriculum=worse 0.02 (the plan's choice, the reference, is better), prior=standard
    0.03 (the plan's choice, standard, is worse), offsets=close 0.01 too (other noise, RMSE up and down by seed)
    with one seed failed."""
    root = tmp_path_factory.mktemp("claims")
    spec = {"curriculum": {"says": "four phases", "plan": "reference", "offsets": ["fast"], "reference": "4 phases",
                           "levels": {"worse": {"training.phase1_epochs": 0}}},
            "offsets": {"says": "", "plan": "reference", "offsets": ["fast", "ensemble"], "reference": "",
                        "levels": {"close": {"training.phase4_offsets": [9]}}},
            "prior": {"says": "", "plan": "standard", "offsets": ["fast"], "reference": "",
                      "levels": {"standard": {"model.prior": "standard"}}}}
    rows = []
    for k, (claim, level, scale) in enumerate((("reference", "reference", 0.01), ("curriculum", "worse", 0.02),
                                               ("offsets", "close", 0.01), ("prior", "standard", 0.03))):
        for seed in range(3):
            rng = np.random.default_rng([seed, k])
            name = (level if claim == "reference" else f"{claim}={level}") + f",seed={seed}"
            d = fake_trial(root, name, scale, seed, rng, jitter=[3e-4, -2e-4, 0][seed] if level == "close" else 0)
            state = "failed: boom" if (level, seed) == ("close", 2) else "ok"
            rows.append({"trial": name, "group": name.rsplit(",", 1)[0], "claim": claim, "level": level, "seed": seed,
                         "state": state, "seconds": 60.0 * (1 + seed), "run_dir": str(d)})
    df = pd.DataFrame(rows)
    df.attrs["sweep"] = {"axes": ["claim", "level", "seed"], "claims": spec,
                         "trials": [{"overrides": ["generation.max_rolling=8", f"seed={r['seed']}"]} for r in rows]}
    return df


def test_level_table_paired_and_dm(hand_made):
    lt = claims.level_table(hand_made, "curriculum").set_index("level")
    assert list(lt.index) == ["reference", "worse"] and lt.loc["reference", "offset"] == "9"
    assert lt.loc["reference", "rmse mean"] == pytest.approx(0.0102) and lt.loc["worse", "seeds"] == 3
    assert lt.loc["reference", "pass3/pass1 mean"] == pytest.approx(1.2)
    assert lt.loc["reference", "cal ci_violation mean +- sd"] == "0.11 +- 0.01"
    pr = claims.paired(hand_made, "curriculum")
    r = pr[pr["metric"] == "rmse"].iloc[0]
    assert r["level"] == "worse" and r["seeds"] == 3 and r["level - reference"] == pytest.approx(0.0102)
    d = claims.dm(hand_made, "curriculum").iloc[0]
    assert d["level"] == "worse" and d["seeds"] == 3 and d["dm"] > 2 and d["p"] < 0.05
    assert d["days"] == 50                                   # three overlapping origins: each calendar day once
    ens = claims.level_table(hand_made, "offsets", "offset_ensemble").set_index("level")
    assert ens.loc["reference", "offset"] == "5" and ens.loc["close", "seeds"] == 2
    assert ens.loc["close", "not finished"] == 1


def test_verdicts_on_hand_made_claims(hand_made):
    # the reference's errors are half the level's on every seed and day: supported
    comp = claims.comparisons(hand_made, "curriculum")
    assert list(comp["verdict"]) == [claims.SUPPORTED] and comp["t"].iloc[0] > 4 and comp["dm"].iloc[0] > 2
    assert claims.judge(hand_made, "curriculum")[0] == claims.SUPPORTED
    # the plan's choice (standard) has three times the reference's errors: not supported
    comp = claims.comparisons(hand_made, "prior")
    assert comp[["plan's choice", "alternative"]].values.tolist() == [["standard", "reference"]]
    assert list(comp["verdict"]) == [claims.NOT_SUPPORTED]
    # no gap, two seeds left: scored at both offsets, inconclusive at each
    comp = claims.comparisons(hand_made, "offsets")
    assert list(comp["_role"]) == ["fast", "ensemble"] and comp["seeds"].tolist() == [2, 2]
    assert comp["offset"].tolist() == ["fast (9 / 9)", "ensemble (5 / 5)"]
    word, why = claims.judge(hand_made, "offsets", comp)
    assert word == claims.INCONCLUSIVE and why.startswith("none of its 2 comparisons is significant on both tests (")
    assert "vs close at the fast offset: not both tests significant" in why and "at the ensemble offset" in why
    s = claims.summary(hand_made).set_index("claim")
    assert list(s["verdict"]) == [claims.SUPPORTED, claims.INCONCLUSIVE, claims.NOT_SUPPORTED]
    assert s.loc["prior", "plan's choice"] == "standard" and s.loc["curriculum", "says"] == "four phases"
    cost = claims.cost_table(hand_made).set_index("level")
    assert cost.loc["reference", "minutes per trial"] == pytest.approx(2.0) and cost.loc["close", "finished"] == 2
    assert claims.common_overrides(hand_made) == ["generation.max_rolling=8"]
    design = claims.design_table(hand_made)
    assert design["level"].tolist()[:2] == ["reference (4 phases)", "worse"]
    assert design.loc[design["level"] == "standard", "plan's choice"].item() == "yes"
    claims.figure(hand_made, "offsets", "rmse", "offset_ensemble")


def test_the_chapter_reads_an_empty_sweep(tmp_path):
    """nbval runs notebooks/11_plan_claims.ipynb with no sweep: every section says so instead of failing."""
    df = results.load_results(tmp_path)
    assert claims.claims_of(df) == {} and claims.summary(df).empty and claims.design_table(df).empty
    assert claims.cost_table(df).empty and claims.show(df, "curriculum") is None
