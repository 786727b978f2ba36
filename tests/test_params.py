"""The params schema (SPEC section 2): profiles load, full.yaml is the seed's plan, bad params fail early
with one clear line naming the key, and the CLI refuses bad params without touching the run dir."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

import backfill.params
from backfill import data, params
from backfill.data import DataError
from backfill.params import ParamsError

PROFILES = ("test", "smoke", "full", "smoke_seed", "regime_shift", "full_working")
SEED_DIR = Path(backfill.params.__file__).resolve().parents[3] / "shared" / "seed"


# --- helpers -----------------------------------------------------------------------------------

def _raw(name="test") -> dict:
    return yaml.safe_load(params.profile_path(name).read_text())


def _write(tmp_path, p, name="bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def _load_error(tmp_path, p) -> str:
    with pytest.raises(ParamsError) as ei:
        params.load(_write(tmp_path, p))
    msg = str(ei.value)
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    assert msg.startswith("params:"), msg
    return msg


# --- 1. the three profiles load ----------------------------------------------------------------

@pytest.mark.parametrize("name", PROFILES)
def test_profile_loads(name):
    p = params.load(params.profile_path(name))
    assert p["profile"] == name
    assert set(p) >= {"data", "model", "training", "gates", "generation"}
    # validate normalises phase2_weights to int keys that match the horizons
    assert sorted(p["training"]["phase2_weights"]) == p["training"]["phase2_horizons"]


# --- 2. full.yaml is the seed's model_config / training_config, key by key ---------------------

def _seed_file():
    files = sorted(SEED_DIR.glob("*.txt")) if SEED_DIR.is_dir() else []
    return files[0] if files else None


def _extract_dict(text: str, name: str, cuda_available: bool) -> dict:
    """Evaluate the first `name = {...}` python literal of the seed with a stub torch."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{name} = {{"))
    buf = []
    for ln in lines[start:]:
        buf.append(ln)
        src = "\n".join(buf)
        try:
            code = compile(src, f"<seed {name}>", "exec")
        except SyntaxError:
            continue
        torch_stub = types.SimpleNamespace(
            cuda=types.SimpleNamespace(is_available=lambda: cuda_available))
        ns = {"torch": torch_stub}
        exec(code, ns)
        return ns[name]
    raise AssertionError(f"could not parse {name} from the seed")


def _seed_configs(cuda_available=False):
    f = _seed_file()
    if f is None:
        return None
    text = f.read_text()
    return (_extract_dict(text, "model_config", cuda_available),
            _extract_dict(text, "training_config", cuda_available))


SEED = _seed_configs()
SEED_MODEL_KEYS = sorted(SEED[0]) if SEED else ["<seed absent>"]
SEED_TRAINING_KEYS = sorted(SEED[1]) if SEED else ["<seed absent>"]


@pytest.fixture(scope="module")
def full():
    return params.load(params.profile_path("full"))


def _need_seed():
    if SEED is None:
        pytest.skip(f"seed plan not found under {SEED_DIR}")


def _norm(v):
    if isinstance(v, tuple):
        return [_norm(x) for x in v]
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def test_seed_configs_parsed_completely():
    _need_seed()
    model, training = SEED
    assert len(model) == 20 and len(training) == 18
    assert model["device"] == "cpu"                     # the stub torch has no CUDA


@pytest.mark.parametrize("key", SEED_MODEL_KEYS)
def test_full_yaml_model_matches_seed(full, key):
    _need_seed()
    seed_val = SEED[0][key]
    assert key in full["model"], f"model.{key} missing from full.yaml"
    ours = full["model"][key]
    if key == "device":
        # seed: "cuda" if torch.cuda.is_available() else "cpu"; ours: "auto" = the same rule
        assert ours == "auto"
        from backfill import train
        import torch
        seed_cuda = _seed_configs(cuda_available=True)[0]["device"]
        for avail, expect in ((False, seed_val), (True, seed_cuda)):
            orig = torch.cuda.is_available
            torch.cuda.is_available = lambda a=avail: a
            try:
                assert train.pick_device(full).type == expect
            finally:
                torch.cuda.is_available = orig
        return
    assert _norm(ours) == _norm(seed_val)
    assert isinstance(ours, bool) == isinstance(seed_val, bool)   # True != 1 in a schema


@pytest.mark.parametrize("key", SEED_TRAINING_KEYS)
def test_full_yaml_training_matches_seed(full, key):
    _need_seed()
    seed_val = SEED[1][key]
    assert key in full["training"], f"training.{key} missing from full.yaml"
    ours = full["training"][key]
    if key == "phase2_weights":
        assert all(type(k) is int for k in ours)
        assert ours == seed_val
        return
    assert _norm(ours) == _norm(seed_val)
    assert not isinstance(ours, bool) and type(ours) is type(seed_val)


# --- 3. one clear error per bad-params class ---------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    p = _raw()
    p["foo"] = 1
    msg = _load_error(tmp_path, p)
    assert "'foo'" in msg and "unknown" in msg


def test_unknown_nested_key(tmp_path):
    p = _raw()
    p["training"]["foo"] = 1
    msg = _load_error(tmp_path, p)
    assert "training.foo" in msg and "unknown" in msg


@pytest.mark.parametrize("value", ["32", 32.0, True])
def test_wrong_type(tmp_path, value):
    p = _raw()
    p["training"]["batch_size"] = value
    msg = _load_error(tmp_path, p)
    assert "training.batch_size" in msg and "int" in msg


def test_missing_key(tmp_path):
    p = _raw()
    del p["training"]["batch_size"]
    msg = _load_error(tmp_path, p)
    assert "training.batch_size" in msg and "missing" in msg


def test_nullable_key_may_be_omitted(tmp_path):
    p = _raw()
    del p["data"]["cache_dir"]
    assert params.load(_write(tmp_path, p))["data"]["cache_dir"] is None


def test_offset_greater_than_horizon(tmp_path):
    p = _raw()
    p["training"]["phase4_horizon"] = 90
    p["training"]["phase4_offsets"] = [45, 90]
    params.load(_write(tmp_path, p, "ok.yaml"))          # offset == horizon is allowed
    p["training"]["phase4_offsets"] = [45, 120]
    msg = _load_error(tmp_path, p)
    assert "training.phase4_offsets" in msg and "120" in msg


def test_context_len_zero(tmp_path):
    p = _raw()
    p["model"]["context_len"] = 0
    msg = _load_error(tmp_path, p)
    assert "model.context_len" in msg


def test_phase2_weights_not_matching_horizons(tmp_path):
    p = _raw()
    p["training"]["phase2_weights"] = {1: 1.0, 3: 0.6}   # horizons are [1, 3, 9]
    msg = _load_error(tmp_path, p)
    assert "training.phase2_weights" in msg and "training.phase2_horizons" in msg


def test_total_epochs_not_phase4_epochs(tmp_path):
    p = _raw()
    p["training"]["total_epochs"] = 5                     # phase4_epochs is 4
    msg = _load_error(tmp_path, p)
    assert "training.total_epochs" in msg


def test_non_cumulative_epoch_marks(tmp_path):
    p = _raw()
    p["training"]["phase3_epochs"] = 1                    # marks [1, 2, 1, 4]
    msg = _load_error(tmp_path, p)
    assert "cumulative" in msg and "[1, 2, 1, 4]" in msg
    assert "training.phase3_epochs" in msg                # the mark that goes backwards


def test_quantiles_without_median(tmp_path):
    p = _raw()
    p["model"]["quantiles"] = [0.05, 0.4, 0.95]
    msg = _load_error(tmp_path, p)
    assert "model.quantiles" in msg and "0.5" in msg


def test_quantile_weights_count_mismatch(tmp_path):
    p = _raw()
    p["model"]["quantile_loss_weights"] = [5.0, 1.0]
    msg = _load_error(tmp_path, p)
    assert "model.quantile_loss_weights" in msg


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("profile: test\ntraining: [1, 2\n  batch_size: 3\n")
    with pytest.raises(ParamsError) as ei:
        params.load(path)
    msg = str(ei.value)
    assert "\n" not in msg and "not valid YAML" in msg and str(path) in msg


def test_file_not_found(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError) as ei:
        params.load(path)
    msg = str(ei.value)
    assert "\n" not in msg and "not found" in msg and str(path) in msg


@pytest.mark.parametrize("key,span", [("test", ["2030-01-01", "2031-01-01"]),
                                      ("train", ["1980-01-01", "1990-12-31"])])
def test_split_dates_outside_data(tmp_path, key, span):
    # the default dataset spans 1999-01-05..2018-12-31
    p = _raw()
    p["data"][key] = span
    p = params.load(_write(tmp_path, p))                  # fine without the data ...
    with pytest.raises(DataError) as ei:
        data.load_for(p)                                  # ... rejected against it
    msg = str(ei.value)
    assert f"data.{key}" in msg and "outside the data" in msg and "\n" not in msg


# --- 4. the CLI --------------------------------------------------------------------------------

def _cli(bad_yaml, run_dir):
    return subprocess.run([sys.executable, "-m", "backfill", "run", str(bad_yaml), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_params_exit_2_one_line_no_run_dir(tmp_path):
    p = _raw()
    p["training"]["foo"] = 1
    bad = _write(tmp_path, p)
    r = _cli(bad, tmp_path / "run")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("backfill: params:") and "training.foo" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_bad_params_leave_existing_run_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    metrics = run / "metrics.json"
    payload = b'{"profile": "test", "status": {"01_data_autocorrelation": {"state": "ok"}}}\n'
    metrics.write_bytes(payload)
    before = sorted(x.name for x in run.iterdir())
    p = _raw()
    p["model"]["context_len"] = 0
    r = _cli(_write(tmp_path, p), run)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("backfill: params:") and "model.context_len" in r.stderr
    assert metrics.read_bytes() == payload
    assert sorted(x.name for x in run.iterdir()) == before


# --- 5. longest window -------------------------------------------------------------------------

def test_longest_window_full():
    assert params.longest_window(params.load(params.profile_path("full"))) == 330


def test_longest_window_test():
    assert params.longest_window(params.load(params.profile_path("test"))) == 10 + 2 * 9 + 9 == 37


@pytest.mark.parametrize("path", sorted((Path(params.__file__).resolve().parents[2] / "params").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_committed_params_file_is_valid(path):
    p = params.load(path)
    assert p["profile"] == path.stem


# --- 6. data.grid (the default dataset on any grid) ------------------------------------------------

GRID = {"maturities": [1 / 12, 1 / 6, 1 / 4, 1 / 2, 1.0, 2.0], "moneyness": [0.9, 0.933, 0.967, 1.0, 1.033, 1.067, 1.1]}


@pytest.mark.parametrize("name", PROFILES)
def test_grid_defaults_to_null(name):
    assert params.load(params.profile_path(name))["data"]["grid"] is None


def test_grid_loads(tmp_path):
    p = _raw()
    p["data"]["grid"] = GRID
    assert params.load(_write(tmp_path, p))["data"]["grid"] == GRID


@pytest.mark.parametrize("grid", [
    {"maturities": [0.5, 0.25, 1.0], "moneyness": [0.9, 1.0, 1.1]},       # not increasing
    {"maturities": [0.25, 0.25], "moneyness": [0.9, 1.0, 1.1]},            # repeated
    {"maturities": [0.0, 0.5], "moneyness": [0.9, 1.0, 1.1]},              # not positive
    {"maturities": [0.25, 0.5], "moneyness": [-1.0, 1.0, 1.1]},
    {"maturities": [0.5], "moneyness": [0.9, 1.0, 1.1]},                   # too few maturities
    {"maturities": [0.25, 0.5], "moneyness": [0.9, 1.1]},                  # too few strikes
    {"maturities": [0.25, 0.5], "moneyness": ["a", 1.0, 1.1]},
    {"maturities": [0.25, 0.5]},                                           # missing key
    {"maturities": [0.25, 0.5], "moneyness": [0.9, 1.0, 1.1], "strikes": [1]},
    [0.25, 0.5],                                                           # not a mapping
])
def test_bad_grid(tmp_path, grid):
    p = _raw()
    p["data"]["grid"] = grid
    assert "data.grid" in _load_error(tmp_path, p)


def test_grid_needs_the_default_source(tmp_path):
    p = _raw()
    p["data"]["source"] = str(tmp_path / "surfaces.npz")
    p["data"]["grid"] = GRID
    msg = _load_error(tmp_path, p)
    assert "data.grid" in msg and "default" in msg
    with pytest.raises(DataError) as ei:                  # data.load refuses it too
        data.load(str(tmp_path / "surfaces.npz"), grid=GRID)
    assert "data.grid" in str(ei.value) and "\n" not in str(ei.value)


def test_load_for_honours_grid(tmp_path):
    p = _raw()
    p["data"]["grid"] = GRID
    p["data"]["cache_dir"] = str(tmp_path)
    ds = data.load_for(params.load(_write(tmp_path, p)))
    assert ds.grid == (6, 7) and list(ds.moneyness) == GRID["moneyness"]
    assert data.default_cache_path(tmp_path, GRID).exists()


# --- 7. the seed as written vs the working model ------------------------------------------------

@pytest.mark.parametrize("name", ["full", "smoke_seed"])
def test_seed_profiles_keep_the_seeds_model(name):
    m = params.load(params.profile_path(name))["model"]
    assert (m["prior"], m["target"], m["kl_weight"], m["rv_halflives"], m["known_future"]) == \
        ("standard", "level", 1e-5, [], False)


@pytest.mark.parametrize("name", ["smoke", "regime_shift", "full_working", "test"])
def test_working_profiles_use_the_conditional_prior(name):
    p = params.load(params.profile_path(name))
    m = p["model"]
    assert (m["prior"], m["target"], m["known_future"]) == ("conditional", "change", True)
    assert m["ex_feats_dim"] == 3 + len(m["rv_halflives"]) and p["generation"]["repair_arbitrage"]


def test_full_working_is_the_full_plan():
    from backfill import train
    assert train.is_full_plan(params.load(params.profile_path("full_working")))


@pytest.mark.parametrize("key,value,msg", [
    ("prior", "gaussian", "model.prior"), ("target", "delta", "model.target"),
    ("rv_halflives", [0], "model.rv_halflives"), ("ex_feats_dim", 3, "model.ex_feats_dim")])
def test_bad_model_options_are_one_line_errors(tmp_path, key, value, msg):
    p = _raw("smoke")
    p["model"][key] = value
    assert msg in _load_error(tmp_path, p)


def test_known_future_needs_realised_returns(tmp_path):
    p = _raw("smoke")
    p["training"]["returns"] = "predicted"
    assert "model.known_future" in _load_error(tmp_path, p)


def test_a_validation_split_shorter_than_the_longest_window_fails_at_load(tmp_path):
    from backfill import data
    p = _raw("regime_shift")
    p["data"]["val_fraction"] = 0.2                  # 226 days < the 330-day phase-4 window
    with pytest.raises(data.DataError, match="data.val_fraction: the validation split has .* fewer than"):
        data.load_for(params.load(_write(tmp_path, p)))
