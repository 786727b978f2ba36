"""The chapters' analysis (backfill.sweep.analysis) on a hand-made results table: mean +- sd across seeds, the
paired comparison, Diebold-Mariano on seed-averaged losses, the empty sweep of nbval; and that importing it (as the
chapters do) starts neither Ray nor the runner."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from backfill.sweep import analysis, results


def hand_made() -> pd.DataFrame:
    rmse = {("standard", 0): 0.030, ("standard", 1): 0.034, ("standard", 2): 0.032,
            ("conditional", 0): 0.020, ("conditional", 1): 0.023, ("conditional", 2): 0.020}
    df = pd.DataFrame([{"trial": f"prior={p},seed={s}", "group": f"prior={p}", "prior": p, "seed": s, "state": "ok",
                        "rmse": v, "ci_violation": 0.1} for (p, s), v in rmse.items()])
    extra = {"trial": "prior=conditional,seed=3", "group": "prior=conditional", "prior": "conditional", "seed": 3,
             "state": "stopped early at phase 2 (asha)", "rmse": np.nan, "ci_violation": np.nan}
    df = pd.concat([df, pd.DataFrame([extra])], ignore_index=True)
    df.attrs["sweep"] = {"axes": ["prior", "seed"], "metric": "rmse"}
    return df


def test_mean_and_sd_across_seeds_per_configuration():
    s = analysis.seed_summary(hand_made(), ["rmse"]).set_index("group")
    assert list(s.index) == ["prior=conditional", "prior=standard"]          # best first
    assert s.loc["prior=standard", "seeds"] == 3                             # the stopped trial is left out
    assert s.loc["prior=standard", "rmse mean"] == pytest.approx(0.032)
    assert s.loc["prior=standard", "rmse sd"] == pytest.approx(0.002)
    assert s.loc["prior=conditional", "rmse mean +- sd"] == "0.021 +- 0.0017"
    assert "trained on" not in s                                             # a table without the column


def test_the_seed_summary_names_the_kernel_paths_a_configurations_seeds_trained_on():
    df = hand_made()
    df["trained on"] = ["cpu AVX512"] * 5 + ["cpu AVX2", "cpu AVX512"]      # the last row: a stopped trial
    s = analysis.seed_summary(df, ["rmse"]).set_index("group")
    assert s.loc["prior=standard", "trained on"] == "cpu AVX512"
    assert s.loc["prior=conditional", "trained on"] == "cpu AVX2; cpu AVX512"
    assert "| cpu AVX2; cpu AVX512 |" in results.summary_markdown(df, ["rmse"])


def test_paired_comparison_across_seeds():
    from scipy import stats
    r = analysis.paired_by_seed(hand_made(), "prior", "rmse", "standard", "conditional").iloc[0]
    d = np.array([0.020 - 0.030, 0.023 - 0.034, 0.020 - 0.032])
    assert r["seeds"] == 3 and r["diff b - a"] == pytest.approx(d.mean()) and r["b better in"] == 3
    t = stats.ttest_rel([0.020, 0.023, 0.020], [0.030, 0.034, 0.032])
    assert r["t"] == pytest.approx(t.statistic) and r["p"] == pytest.approx(t.pvalue)


def test_seed_averaged_diebold_mariano():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1, 200) ** 2                  # (T,) what every configuration finds hard
    a = common + rng.normal(0, 0.1, (3, 200)) ** 2       # (seeds, T) daily losses
    b = 0.8 * common + rng.normal(0, 0.1, (3, 200)) ** 2
    r = analysis.seed_averaged_dm(a, b, horizon=10)
    assert r["seeds"] == 3 and r["days"] == 200 and len(r["dm_per_seed"]) == 3
    assert r["dm"] < -2 and r["p_value"] < 0.05 and all(x < 0 for x in r["dm_per_seed"])
    assert analysis.seed_averaged_dm(a, a, 10)["mean_loss_diff"] == 0


def test_the_chapter_runs_without_a_sweep(tmp_path):
    """nbval runs notebooks/10_sweep.ipynb with no sweep; the sections show an explanation, not an error."""
    df = results.load_results(tmp_path)
    assert df.empty and analysis.seed_summary(df).empty and analysis.config_mcs(df).empty
    assert analysis.numeric_axes(df) == [] and analysis.axis_levels(df, "prior") == []
    analysis.by_group_figure(df, "rmse")


def test_the_chapters_import_neither_ray_nor_the_runner():
    """Notebooks 10 and 11 import analysis, claims and results: none of them may import Ray or the runner (nor the
    pipeline that executes notebooks)."""
    code = ("import sys; from backfill.sweep import analysis, claims, results, spec; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray' or m in "
            "('backfill.sweep.runner', 'backfill.pipeline', 'papermill')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
