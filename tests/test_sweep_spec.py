"""The sweep file (backfill.sweep.spec): validation with one line naming the key, the expansion into named trials,
random draws, and the CLI's one-line error for a bad file. The `claims:` key is tested in tests/test_claims.py."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backfill.sweep import spec

from conftest import write_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "params" / "sweeps"




def test_committed_sweep_files_expand_to_valid_trials():
    sw = spec.load(SWEEPS / "smoke_ablation.yaml")
    assert sw.base == ROOT / "params" / "smoke.yaml" and sw.metric == "rmse" and sw.axes == ["prior", "seed"]
    assert [t.name for t in sw.trials] == [f"prior={p},seed={s}" for p in ("standard", "conditional") for s in (0, 1, 2)]
    assert sw.trials[0].overrides == ["model.prior=standard", "model.kl_weight=1.0e-05", "seed=0"]
    assert {t.group for t in sw.trials} == {"prior=standard", "prior=conditional"}
    full = spec.load(SWEEPS / "full_ablation.yaml")
    assert len(full.trials) == 18 and full.resources == {"cpu": 2, "gpu": 0.25}
    assert "prior=conditional,context_len=40,seed=2" in [t.name for t in full.trials]
    assert len({t.name for t in full.trials}) == 18
    test = spec.load(SWEEPS / "test.yaml")
    assert [t.name for t in test.trials] == ["prior=standard", "prior=conditional"]
    for profile in ("smoke", "regime_shift"):
        seeds = spec.load(SWEEPS / f"{profile}_seeds.yaml")
        assert seeds.base == ROOT / "params" / f"{profile}.yaml" and [t.name for t in seeds.trials] == \
            [f"seed={s}" for s in (0, 1, 2)]


@pytest.mark.parametrize("body, words", [
    ({"trials": 3, "space": {"seed": [0]}}, "unknown key 'trials'"),
    ({"space": {"model.priorr": ["standard"]}}, "unknown key 'model.priorr'"),
    ({"space": {"model.prior": ["standard", "gaussian"]}}, "'model.prior' must be 'standard' or 'conditional'"),
    ({"space": {"model.kl_weight": {"uniform": [1.0]}}}, "uniform needs [low, high]"),
    ({"space": {"model.kl_weight": {"loguniform": [0.0, 1.0]}}}, "loguniform needs low > 0"),
    ({"space": {"model.kl_weight": {"normal": [0, 1]}}}, "space 'model.kl_weight': must be a non-empty list"),
    ({"space": {"seed": []}}, "space 'seed': must be a non-empty list"),
    ({"space": {"seed": [0]}, "metric": "accuracy"}, "'metric' must be one of"),
    ({"space": {"seed": [0]}, "mode": "up"}, "'mode' must be min or max"),
    ({"space": {"seed": [0, 1]}, "num_samples": 2}, "repeats identical trials"),
    ({"arms": {"model.prior": {"a": {"model.prior": "standard"}}}}, "must be a plain name"),
    ({"arms": {"prior": {"a": {"model.kl_weightt": 1.0}}}}, "unknown key 'model.kl_weightt'"),
    ({"space": {"seed": [0]}, "scheduler": {"type": "hyperband"}}, "'scheduler' must be"),
    ({"space": {"seed": [0]}, "scheduler": {"type": "asha", "patience": 2}}, "unknown key 'patience' for type asha"),
    ({"space": {"seed": [0]}, "resources": {"cpu": 0}}, "'resources' must be"),
    ({"space": {"seed": [0]}, "base": "no_such_profile"}, "'base' 'no_such_profile' not found"),
    ({}, "'space' (or 'arms' or 'claims') must name at least one axis"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_key(tmp_path, body, words):
    with pytest.raises(spec.SweepError) as e:
        spec.load(write_sweep(tmp_path, **body))
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "s.yaml" in msg


def test_random_draws_are_reproducible_and_in_bounds(tmp_path):
    space = {"model.kl_weight": {"loguniform": [1.0e-4, 1.0]}, "training.learning_rate": {"uniform": [1.0e-3, 2.0e-3]},
             "model.latent_dim": {"randint": [2, 5]}, "model.target": {"choice": ["level", "change"]},
             "seed": [0, 1]}
    a = spec.load(write_sweep(tmp_path, space=space, num_samples=3, search_seed=7))
    b = spec.load(write_sweep(tmp_path, space=space, num_samples=3, search_seed=7))
    c = spec.load(write_sweep(tmp_path, space=space, num_samples=3, search_seed=8))
    assert len(a.trials) == 6 and [t.overrides for t in a.trials] == [t.overrides for t in b.trials]
    assert [t.overrides for t in a.trials] != [t.overrides for t in c.trials]
    for t in a.trials:
        cfg = t.config
        assert 1e-4 <= cfg["model.kl_weight"] <= 1 and 1e-3 <= cfg["training.learning_rate"] <= 2e-3
        assert cfg["model.latent_dim"] in (2, 3, 4) and cfg["model.target"] in ("level", "change")
    assert len({t.name for t in a.trials}) == 6


def test_long_or_clashing_names_get_a_hash(tmp_path):
    # two draws that print alike at 4 significant digits, and a long list value
    sw = spec.load(write_sweep(tmp_path, space={"model.rv_halflives": [[5, 21], list(range(1, 40))]}))
    names = [t.name for t in sw.trials]
    assert names[0] == "rv_halflives=5-21" and len(names[1]) <= 96 and len(set(names)) == 2
    pairs = spec._name_trials([{"x": 0.123451}, {"x": 0.123452}], [["x=0.123451"], ["x=0.123452"]], ["x"])
    assert pairs[0][0] != pairs[1][0] and pairs[0][0].startswith("x=0.1235-")


def test_the_cli_gives_one_line_for_a_bad_sweep(tmp_path):
    bad = write_sweep(tmp_path, space={"model.priorr": ["standard"]})
    res = subprocess.run([sys.executable, "-m", "backfill", "sweep", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "unknown key 'model.priorr'" in res.stderr
