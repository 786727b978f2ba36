"""A sweep's files (backfill.sweep.results): what a trial reports after each phase and its state in words, trial.json,
a trial's headline scores, and the results table with results.parquet / results.md / sweep.json before any trial ran.
The results table of a real sweep is checked in tests/test_sweep_runner.py."""
import json
from pathlib import Path

import numpy as np
import yaml

from backfill.sweep import results, spec

ROOT = Path(__file__).resolve().parents[1]


def test_phase_results_and_states():
    m = {"phases": {"phase1": {"val_rmse_by_horizon": {"1": 0.01}, "val_kl": 0.5, "criteria": {"decision": "PASS"}},
                    "phase2": {"val_rmse_by_horizon": {"1": 0.01, "9": 0.03}, "val_kl": 0.4},
                    "phase3": {"val_rmse": 0.05, "val_kl": 0.3, "criteria": {"decision": "FAIL"}}}}
    assert results.phase_result(m, 1) == {"phase": 1, "val_rmse": 0.01, "val_kl": 0.5, "gate": "PASS"}
    assert results.phase_result(m, 2)["val_rmse"] == 0.03 and results.phase_result(m, 3)["gate"] == "FAIL"
    assert np.isnan(results.phase_result(m, 4)["val_rmse"])
    assert results.state_text({"state": "stopped", "phase": 2, "stopped_by": "asha"}) == "stopped early at phase 2 (asha)"
    assert results.state_text({"state": "failed", "error": "boom"}) == "failed: boom"
    assert results.state_text({"state": "running"}) == "interrupted" and results.state_text({}) == "pending"


def test_trial_json_and_a_trials_scores(tmp_path):
    assert results.read_trial(tmp_path) == {}                         # before the trial first started
    results.write_trial(tmp_path, name="t", state="running")
    assert results.write_trial(tmp_path, state="ok") == {"name": "t", "state": "ok"}      # merged, not replaced
    (tmp_path / "trial.json").write_text("{half")
    assert results.read_trial(tmp_path) == {}
    (tmp_path / "metrics.json").write_text(json.dumps({"run_state": "ok", "rolling": {"vae_o9": {"rmse": 0.02}}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"generation": {"offset_fast": 9}}))
    scores = results.trial_scores(tmp_path)
    assert list(scores) == [k for k in spec.HEADLINE if k in scores] and scores["rmse"] == 0.02
    assert np.isnan(scores["crps"]) and np.isnan(scores["dm vs econometric"])


def test_the_results_files_of_a_sweep_before_any_trial_ran(tmp_path):
    sw = spec.load(ROOT / "params" / "sweeps" / "test.yaml", check_data=False)
    df = results.table(sw, tmp_path)
    assert list(df["trial"]) == ["prior=standard", "prior=conditional"] and set(df["state"]) == {"pending"}
    assert list(df["model.kl_weight"]) == [1e-5, 1.0] and df["rmse"].isna().all()
    assert list(df["trained on"]) == ["-", "-"]
    info = results.write_info(sw, tmp_path, {"started": "now", "wall_seconds": 60.0})
    assert info["axes"] == ["prior"] and info["chapter"] == "10_sweep.ipynb" and info["wall_seconds"] == 60.0
    parquet, md = results.write_results(df, tmp_path, sw, info)
    assert "(no finished trials)" in md.read_text() and "| prior=conditional | conditional |" in md.read_text()
    back = results.load_results(tmp_path)
    assert list(back.columns) == list(df.columns) and back.attrs["sweep"]["launches"] == [
        {"started": "now", "wall_seconds": 60.0}]


def test_a_launch_is_rewritten_as_it_goes_and_a_killed_one_still_counts(tmp_path):
    """The runner rewrites its launch's entry after every trial (same start): a launch killed outright keeps the
    time up to its last finished trial, and the next launch is a new entry beside it."""
    sw = spec.load(ROOT / "params" / "sweeps" / "test.yaml", check_data=False)
    results.write_info(sw, tmp_path, {"started": "2026-01-01T10:00:00", "wall_seconds": 0.0, "ended": False})
    results.write_info(sw, tmp_path, {"started": "2026-01-01T10:00:00", "wall_seconds": 300.0, "ended": False})
    # ... killed here: no final entry
    info = results.write_info(sw, tmp_path, {"started": "2026-01-01T11:00:00", "wall_seconds": 120.0, "ended": True})
    assert [(x["wall_seconds"], x["ended"]) for x in info["launches"]] == [(300.0, False), (120.0, True)]
    assert info["wall_seconds"] == 420.0
    assert results.write_info(sw, tmp_path)["launches"] == info["launches"]            # no launch: kept as it is


def test_the_runners_callback_rewrites_the_launch_after_each_trial(tmp_path):
    from backfill.sweep import runner
    sw = spec.load(ROOT / "params" / "sweeps" / "test.yaml", check_data=False)
    lines, ends = [], []
    cb = runner._callback(sw, tmp_path, lines.append, lambda: ends.append(len(lines)))

    class Trial:
        config = {"trial": {"name": "prior=standard"}}
        last_result = {"rmse": 0.0123}
    cb.on_trial_error(0, [], Trial())
    assert lines == ["[1/2] prior=standard: pending, rmse 0.0123"] and ends == [1]
