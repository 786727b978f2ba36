"""The params schema (lib/backfill/params.py): profiles load, full.yaml is the plan, bad params fail early
with one clear line naming the key, and the CLI refuses bad params without touching the run dir."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch.nn as nn
import yaml

import backfill.params
from backfill import data, params, rundir
from backfill.model import LossWeights
from backfill.phases import phase_specs
from backfill.train import is_full_plan, is_skipped
from backfill.data import DataError
from backfill.params import ParamsError

PROFILES = ("test", "smoke", "full", "smoke_plan", "regime_shift", "full_working", "smoke_kl1", "short_history")
# the plan (the user's design document, not in the repository) where a copy sits beside the checkout
PLAN_DIR = Path(backfill.params.__file__).resolve().parents[3] / "shared" / "seed"


# --- helpers -----------------------------------------------------------------------------------

def _raw(name="test") -> dict:
    """A profile's complete params (its bases merged, not validated): what a complete file holds, to be broken."""
    return params.resolve(params.profile_path(name))


def _file(name: str) -> dict:
    """A profile's file as written (a delta names its base)."""
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


# --- 2. full.yaml is the plan's model_config / training_config, key by key ---------------------

def _plan_file():
    files = sorted(PLAN_DIR.glob("*.txt")) if PLAN_DIR.is_dir() else []
    return files[0] if files else None


def _extract_dict(text: str, name: str, cuda_available: bool) -> dict:
    """Evaluate the first `name = {...}` python literal of the plan with a stub torch."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{name} = {{"))
    buf = []
    for ln in lines[start:]:
        buf.append(ln)
        src = "\n".join(buf)
        try:
            code = compile(src, f"<plan {name}>", "exec")
        except SyntaxError:
            continue
        torch_stub = types.SimpleNamespace(
            cuda=types.SimpleNamespace(is_available=lambda: cuda_available))
        ns = {"torch": torch_stub}
        exec(code, ns)
        return ns[name]
    raise AssertionError(f"could not parse {name} from the plan")


def _plan_configs(cuda_available=False):
    f = _plan_file()
    if f is None:
        return None
    text = f.read_text()
    return (_extract_dict(text, "model_config", cuda_available),
            _extract_dict(text, "training_config", cuda_available))


PLAN = _plan_configs()
PLAN_MODEL_KEYS = sorted(PLAN[0]) if PLAN else ["<plan absent>"]
PLAN_TRAINING_KEYS = sorted(PLAN[1]) if PLAN else ["<plan absent>"]


@pytest.fixture(scope="module")
def full():
    return params.load(params.profile_path("full"))


def _need_plan():
    if PLAN is None:
        pytest.skip(f"the plan not found under {PLAN_DIR}")


def _norm(v):
    if isinstance(v, tuple):
        return [_norm(x) for x in v]
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def test_plan_configs_parsed_completely():
    _need_plan()
    model, training = PLAN
    assert len(model) == 20 and len(training) == 18
    assert model["device"] == "cpu"                     # the stub torch has no CUDA


def _plan_model(full):
    from backfill.model import CVAE, ModelConfig
    return CVAE(ModelConfig.from_params(full, tuple(full["model"]["feat_dim"])))


def _grid(full):
    return full["model"]["feat_dim"][0] * full["model"]["feat_dim"][1]


# The plan's keys that are no longer params (params.REMOVED): the plan's value must be what the code does
# unconditionally with full.yaml, so the comparison stays key by key rather than dropping them.
REMOVED_PLAN_CHECKS = {
    "mem_type": lambda full, v: v == "lstm" and all(
        type(m) is nn.LSTM for m in _plan_model(full).modules() if isinstance(m, nn.RNNBase)),
    "num_quantiles": lambda full, v: v == len(full["model"]["quantiles"])
        == _plan_model(full).decoder.surface_head.out_features // _grid(full),
    "use_dense_surface": lambda full, v: v is True and [
        x.out_features for x in _plan_model(full).posterior.dense if isinstance(x, nn.Linear)]
        == full["model"]["surface_hidden"],
    "use_quantile_regression": lambda full, v: v is True
        and _plan_model(full).decoder.surface_head.out_features == len(full["model"]["quantiles"]) * _grid(full)
        and LossWeights.from_params(full).quantiles == tuple(full["model"]["quantiles"]),
    "ex_feats_dim": lambda full, v: v == _plan_model(full).cfg.n_feat == 3 + len(full["model"]["rv_halflives"]),
    "total_epochs": lambda full, v: v == full["training"]["phase4_epochs"]
        == sum(s.epochs for s in phase_specs(full)) == params.FULL_PLAN["training.phase4_epochs"],
}
# The plan's day-index span of its own dataset: not reproduced (ours is data.train, in dates), said here.
PLAN_SPAN_KEYS = {"train_period_years": 16, "train_start_idx": 1000, "train_end_idx": 5000}


def test_every_removed_key_is_checked_against_the_plan():
    _need_plan()
    assert {k.split(".")[1] for k in params.REMOVED} == set(REMOVED_PLAN_CHECKS) | set(PLAN_SPAN_KEYS)
    assert set(params.REMOVED) <= {f"model.{k}" for k in PLAN[0]} | {f"training.{k}" for k in PLAN[1]}


def _check_removed_plan_key(full, section, key, plan_val):
    assert key not in full[section], f"{section}.{key} was removed but full.yaml still has it"
    if key in PLAN_SPAN_KEYS:
        assert plan_val == PLAN_SPAN_KEYS[key] and "data.train" in params.REMOVED[f"{section}.{key}"]
        assert full["data"]["split_by"] == "date"
        return
    assert REMOVED_PLAN_CHECKS[key](full, plan_val), f"{section}.{key}: the plan's {plan_val!r} is not what the code does"


@pytest.mark.parametrize("key", PLAN_MODEL_KEYS)
def test_full_yaml_model_matches_the_plan(full, key):
    _need_plan()
    plan_val = PLAN[0][key]
    if f"model.{key}" in params.REMOVED:
        return _check_removed_plan_key(full, "model", key, plan_val)
    assert key in full["model"], f"model.{key} missing from full.yaml"
    ours = full["model"][key]
    if key == "device":
        # seed: "cuda" if torch.cuda.is_available() else "cpu"; ours: "auto" = the same rule
        assert ours == "auto"
        from backfill import train
        import torch
        plan_cuda = _plan_configs(cuda_available=True)[0]["device"]
        for avail, expect in ((False, plan_val), (True, plan_cuda)):
            orig = torch.cuda.is_available
            torch.cuda.is_available = lambda a=avail: a
            try:
                assert train.pick_device(full).type == expect
            finally:
                torch.cuda.is_available = orig
        return
    assert _norm(ours) == _norm(plan_val)
    assert isinstance(ours, bool) == isinstance(plan_val, bool)   # True != 1 in a schema


@pytest.mark.parametrize("key", PLAN_TRAINING_KEYS)
def test_full_yaml_training_matches_the_plan(full, key):
    _need_plan()
    plan_val = PLAN[1][key]
    if f"training.{key}" in params.REMOVED:
        return _check_removed_plan_key(full, "training", key, plan_val)
    assert key in full["training"], f"training.{key} missing from full.yaml"
    ours = full["training"][key]
    if key == "phase2_weights":
        assert all(type(k) is int for k in ours)
        assert ours == plan_val
        return
    assert _norm(ours) == _norm(plan_val)
    assert not isinstance(ours, bool) and type(ours) is type(plan_val)


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


@pytest.mark.parametrize("key", sorted(params.REMOVED))
def test_a_removed_key_says_why(tmp_path, key):
    p = _raw()
    section, name = key.split(".")
    p[section][name] = 1
    assert _load_error(tmp_path, p) == f"params: '{key}' was removed: {params.REMOVED[key]}"


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


# --- 7. the plan as written vs the working model ------------------------------------------------

@pytest.mark.parametrize("name", ["full", "smoke_plan"])
def test_plan_profiles_keep_the_plans_model(name):
    m = params.load(params.profile_path(name))["model"]
    assert (m["prior"], m["target"], m["kl_weight"], m["rv_halflives"], m["known_future"]) == \
        ("standard", "level", 1e-5, [], False)


@pytest.mark.parametrize("name", ["smoke", "regime_shift", "full_working", "test"])
def test_working_profiles_use_the_conditional_prior(name):
    p = params.load(params.profile_path(name))
    m = p["model"]
    assert (m["prior"], m["target"], m["known_future"]) == ("conditional", "change", True)
    from backfill.model import ModelConfig
    assert ModelConfig.from_params(p, (5, 5)).n_feat == 3 + len(m["rv_halflives"]) == 5
    assert p["generation"]["repair_arbitrage"]


def test_full_working_is_the_full_plan():
    from backfill import train
    assert train.is_full_plan(params.load(params.profile_path("full_working")))


@pytest.mark.parametrize("key,value,msg", [
    ("prior", "gaussian", "model.prior"), ("target", "delta", "model.target"),
    ("rv_halflives", [0], "model.rv_halflives"), ("ex_feats_dim", 5, "'model.ex_feats_dim' was removed")])
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


# --- 8. params as deltas: base, --set, the committed profiles ----------------------------------

def _flat(d: dict, schema=params.SCHEMA, prefix="") -> dict:
    """Dotted keys of the schema's sections; free-form mappings (windows, weights, tables) stay whole."""
    out = {}
    for k, v in d.items():
        spec = schema.get(k)
        if isinstance(v, dict) and isinstance(spec, dict):
            out.update(_flat(v, spec, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _delta(tmp_path, name, body: dict) -> Path:
    return _write(tmp_path, {"profile": name, "description": f"{name} experiment", **body}, f"{name}.yaml")


def test_base_merges_recursively(tmp_path):
    path = _delta(tmp_path, "x", {"base": "smoke", "model": {"kl_weight": 0.5},
                                  "generation": {"windows": {"late": "2017-03-01"}}})
    p, smoke = params.load(path), params.load(params.profile_path("smoke"))
    assert p["profile"] == "x" and p["model"]["kl_weight"] == 0.5
    assert p["generation"]["windows"] == {"late": "2017-03-01"}     # a free-form mapping is replaced whole
    assert p["generation"]["n_samples"] == smoke["generation"]["n_samples"]   # a schema section merges key by key
    assert _flat(p) == {**_flat(smoke), "profile": "x", "description": "x experiment", "model.kl_weight": 0.5,
                        "generation.windows": p["generation"]["windows"]}
    assert "base" not in p


def test_base_chains_by_name_and_by_relative_path(tmp_path):
    (tmp_path / "sub").mkdir()
    _delta(tmp_path, "mid", {"base": "smoke_plan", "seed": 7})
    child = _delta(tmp_path / "sub", "child", {"base": "../mid.yaml", "model": {"latent_dim": 3}})
    p = params.load(child)
    plan = params.load(params.profile_path("smoke_plan"))
    assert _flat(p) == {**_flat(plan), "profile": "child", "description": "child experiment", "seed": 7,
                        "model.latent_dim": 3}


@pytest.mark.parametrize("body,needle", [({"base": "no_such_profile"}, "'no_such_profile' not found"),
                                         ({"base": "../nope.yaml"}, "'../nope.yaml' not found"),
                                         ({"base": 3}, "must be a profile name or a path")])
def test_a_missing_or_bad_base_names_the_file_and_the_key(tmp_path, body, needle):
    path = _delta(tmp_path, "x", body)
    msg = _load_error_at(path)
    assert msg.startswith(f"params: {path}: 'base' ") and needle in msg


def _load_error_at(path) -> str:
    with pytest.raises(ParamsError) as ei:
        params.load(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("params: "), msg
    return msg


def test_a_cycle_of_bases_is_refused(tmp_path):
    a = _delta(tmp_path, "a", {"base": "b.yaml"})
    _delta(tmp_path, "b", {"base": "./a.yaml"})
    msg = _load_error_at(a)
    assert "'base' './a.yaml' makes a cycle (a.yaml -> b.yaml -> a.yaml)" in msg and "b.yaml:" in msg
    me = _delta(tmp_path, "me", {"base": "me.yaml"})
    assert "makes a cycle (me.yaml -> me.yaml)" in _load_error_at(me)


@pytest.mark.parametrize("key", ["profile", "description"])
def test_profile_and_description_are_not_inherited(tmp_path, key):
    body = {"base": "smoke", "profile": "x", "description": "d"}
    del body[key]
    path = _write(tmp_path, body, "x.yaml")
    assert _load_error_at(path) == f"params: {path}: '{key}' must be given (it is not inherited from base 'smoke')"


def test_a_removed_key_in_a_delta_is_refused(tmp_path):
    path = _delta(tmp_path, "x", {"base": "smoke", "model": {"mem_type": "lstm"}})
    assert _load_error_at(path) == "params: 'model.mem_type' was removed: the memory is always an LSTM"


@pytest.mark.parametrize("text,key,value", [
    ("model.kl_weight=1.0", "model.kl_weight", 1.0), ("model.rv_halflives=[5, 21]", "model.rv_halflives", [5, 21]),
    ("training.max_train_windows=null", "training.max_train_windows", None),
    ("model.prior=conditional", "model.prior", "conditional"), ("seed=3", "seed", 3),
    ("description=a b=c", "description", "a b=c")])
def test_parse_override(text, key, value):
    assert params.parse_override(text) == (key, value)


def test_overrides_apply_on_the_merged_params_before_validation():
    base = params.load(params.profile_path("smoke_plan"))
    p = params.load(params.profile_path("smoke_plan"),
                    ["model.kl_weight=0.5", "seed=3", "training.phase2_weights.7=0.25",
                     "generation.windows.late=2017-03-01", "data.train=[2001-01-02, 2013-12-31]"])
    assert p["model"]["kl_weight"] == 0.5 and p["seed"] == 3
    assert p["training"]["phase2_weights"] == {**base["training"]["phase2_weights"], 7: 0.25}   # int keys kept
    assert p["generation"]["windows"]["late"] == "2017-03-01" and p["data"]["train"] == ["2001-01-02", "2013-12-31"]
    assert _flat(p) == {**_flat(base), "model.kl_weight": 0.5, "seed": 3, "data.train": p["data"]["train"],
                        "training.phase2_weights": p["training"]["phase2_weights"],
                        "generation.windows": p["generation"]["windows"]}
    later = params.load(params.profile_path("smoke"), ["model.kl_weight=0.5", "model.kl_weight=2"])
    assert later["model"]["kl_weight"] == 2                  # the last --set of a key wins


@pytest.mark.parametrize("text,msg", [
    ("model.kl_weight", "params: --set 'model.kl_weight' must be KEY=VALUE with a dotted KEY"),
    ("model..x=1", "params: --set 'model..x=1' must be KEY=VALUE"),
    ("model.kl_wieght=1", "params: --set model.kl_wieght: unknown key 'model.kl_wieght'"),
    ("base=smoke", "params: --set base: unknown key 'base'"),
    ("provenance.x=1", "params: --set provenance.x: unknown key 'provenance'"),
    ("seed.x=1", "params: --set seed.x: 'seed' is not a mapping"),
    ("model.kl_weight=[1,", "params: --set model.kl_weight: '[1,' is not a YAML value"),
    ("model.kl_weight=abc", "params: 'model.kl_weight' must be float, got 'abc'"),
    ("model.kl_weight=-1", "params: 'model.kl_weight' must be >= 0, got -1"),
    ("model.mem_type=lstm", "params: 'model.mem_type' was removed: the memory is always an LSTM"),
    ("training.total_epochs=72", "params: 'training.total_epochs' was removed: it is training.phase4_epochs")])
def test_bad_overrides_are_one_line_errors(text, msg):
    with pytest.raises(ParamsError) as ei:
        params.load(params.profile_path("smoke"), [text])
    assert str(ei.value).startswith(msg) and "\n" not in str(ei.value)


def test_overrides_are_recorded_and_open_run_keeps_them(tmp_path):
    src = params.profile_path("test")
    sets = ["model.kl_weight=0.5", "generation.n_samples=3"]
    p = params.load(src, sets)
    ds = data.load_for(p)
    resolved = rundir.record_params(tmp_path / "run", p, ds, src, sets)
    again = params.load(resolved)                            # what the notebooks load
    assert {k: v for k, v in again.items() if k != "provenance"} == {k: v for k, v in p.items() if k != "provenance"}
    run = rundir.open_run(resolved, tmp_path / "run")      # the first cell of every notebook
    rec = yaml.safe_load(resolved.read_text())
    assert rec["provenance"]["overrides"] == sets and rec["provenance"]["params_source"] == str(src)
    assert rec["model"]["kl_weight"] == 0.5 and run.params["generation"]["n_samples"] == 3 and "base" not in rec
    assert rec["provenance"]["params_hash"] == rundir.params_hash(p, data_fingerprint=data.fingerprint(ds))
    rundir.open_run(src, tmp_path / "run")                 # opened on the file itself: no overrides
    rec = yaml.safe_load(resolved.read_text())
    assert rec["provenance"]["overrides"] == [] and rec["provenance"]["params_source"] == str(src.resolve())


def test_a_different_set_is_different_params():
    src = params.profile_path("test")
    h = [rundir.params_hash(params.load(src, sets)) for sets in ([], ["model.kl_weight=0.5"],
                                                                   ["model.kl_weight=0.5"], ["model.kl_weight=1.0"])]
    assert h[0] != h[1] == h[2] and h[3] == h[0]           # 1.0 is test.yaml's own value


@pytest.mark.slow
def test_cli_set_runs_records_and_skips_only_the_same_params(tmp_path):
    rd = tmp_path / "run"

    def run(*sets):
        args = [a for s in sets for a in ("--set", s)]
        r = subprocess.run([sys.executable, "-m", "backfill", "run", str(params.profile_path("test")), *args,
                            "--run-dir", str(rd), "--only", "01"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    assert "ok (" in run("seed=1", "model.kl_weight=0.5")
    rec = yaml.safe_load((rd / "params.yaml").read_text())
    assert rec["provenance"]["overrides"] == ["seed=1", "model.kl_weight=0.5"] and rec["seed"] == 1
    assert rec["provenance"]["params_source"] == str(params.profile_path("test").resolve())
    assert "skipped" in run("seed=1", "model.kl_weight=0.5")
    assert "ok (" in run("seed=2", "model.kl_weight=0.5")     # a different --set is run again
    assert yaml.safe_load((rd / "params.yaml").read_text())["provenance"]["overrides"][0] == "seed=2"


@pytest.mark.parametrize("sets,msg", [(["model.foo=1"], "backfill: params: --set model.foo: unknown key 'model.foo'"),
                                      (["model.kl_weight=x"], "backfill: params: 'model.kl_weight' must be float"),
                                      (["model.kl_weight=.nan"], "backfill: params: 'model.kl_weight' must be finite"),
                                      (["seed=-1"], "backfill: params: 'seed' must be in [0, ")])
def test_cli_bad_set_exit_2_one_line_nothing_written(tmp_path, sets, msg):
    args = [a for s in sets for a in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "backfill", "run", str(params.profile_path("test")), *args,
                        "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(msg), r.stderr
    assert not (tmp_path / "run").exists()


def test_is_full_plan_is_the_plans_training():
    full = params.load(params.profile_path("full"))
    assert is_full_plan(full) and not is_full_plan(params.load(params.profile_path("smoke")))
    for key in params.FULL_PLAN:
        section, name = key.split(".")
        other = params.load(params.profile_path("full"))
        other[section][name] = 512 if other[section][name] is None else other[section][name] * 2
        assert not is_full_plan(other), key
    if PLAN is not None:                                     # FULL_PLAN is the plan's training_config
        model, training = PLAN
        for key, v in params.FULL_PLAN.items():
            section, name = key.split(".")
            if name in (model if section == "model" else training):
                assert (model if section == "model" else training)[name] == v, key
        assert training["total_epochs"] == params.FULL_PLAN["training.phase4_epochs"]


# What each committed delta changes, against what it was before it became a delta (the files loaded to
# exactly these dicts, minus the removed keys, when they were complete copies). full.yaml, the plan, is the only
# complete file.
_WORKING = {"model.prior": "conditional", "model.target": "change", "model.kl_weight": 1.0,
            "model.rv_halflives": [5, 21], "model.known_future": True, "generation.repair_arbitrage": True}
DELTAS = {
    "smoke": ("full", {**_WORKING, "training.phase1_epochs": 40, "training.phase2_epochs": 56,
                       "training.phase3_epochs": 64, "training.phase4_epochs": 72, "training.learning_rate": 3e-3,
                       "training.max_train_windows": 512, "training.max_val_windows": 128,
                       "generation.n_samples": 100, "generation.sample_chunk": 100, "generation.max_rolling": 12,
                       "generation.bootstrap_paths": 200}),
    "test": ("full", {**_WORKING, "data.train": ["2004-01-01", "2009-12-31"], "model.feat_dim": None,
                      "model.context_len": 10, "model.horizon": 9, "model.latent_dim": 3, "model.mem_hidden": 16,
                      "model.mem_dropout": 0.1, "model.surface_hidden": [5, 5], "model.device": "cpu",
                      "training.phase1_epochs": 1, "training.phase2_epochs": 2, "training.phase3_epochs": 3,
                      "training.phase4_epochs": 4, "training.learning_rate": 3e-3, "training.batch_size": 16,
                      "training.phase2_horizons": [1, 3, 9], "training.phase2_weights": {1: 1.0, 3: 0.6, 9: 0.3},
                      "training.phase3_horizon": 6, "training.phase3_offsets": [3, 6], "training.phase4_horizon": 9,
                      "training.phase4_offsets": [5, 9], "training.max_train_windows": 64,
                      "training.max_val_windows": 32, "generation.n_samples": 4, "generation.sample_chunk": 4,
                      "generation.horizon": 9, "generation.offset_fast": 9, "generation.offset_ensemble": 5,
                      "generation.days_6month": 18, "generation.days_1year": 25,
                      "generation.windows": {"crisis": "2008-06-02", "normal": "2005-03-01",
                                             "out_of_sample": "2016-03-01"},
                      "generation.max_rolling": 2, "generation.bootstrap_paths": 20, "generation.max_calibration": 4,
                      "generation.calibration_lead_bins": [1, 6, 13]}),
    "smoke_plan": ("smoke", {"model.prior": "standard", "model.target": "level", "model.kl_weight": 1e-5,
                             "model.rv_halflives": [], "model.known_future": False,
                             "generation.repair_arbitrage": False}),
    "regime_shift": ("smoke", {"data.train": ["2003-01-01", "2007-06-29"], "data.val_fraction": 0.3,
                               "data.test": ["2007-07-02", "2010-12-31"]}),
    "smoke_kl1": ("smoke_plan", {"model.kl_weight": 1.0, "generation.n_samples": 32, "generation.sample_chunk": 32,
                                 "generation.max_rolling": 6}),
    "full_working": ("full", {"model.prior": "conditional", "model.target": "change", "model.kl_weight": 1.0,
                              "model.rv_halflives": [5, 21], "model.known_future": True,
                              "generation.repair_arbitrage": True}),
}


@pytest.mark.parametrize("name", sorted(DELTAS))
def test_committed_deltas_differ_from_their_base_exactly_in_the_keys_they_state(name):
    base, changes = DELTAS[name]
    raw = _file(name)
    assert raw["base"] == base and set(raw) - {"base", "profile", "description"} <= set(params.SCHEMA)
    p, b = _flat(params.load(params.profile_path(name))), _flat(params.load(params.profile_path(base)))
    assert {k: v for k, v in p.items() if b.get(k) != v} == {"profile": name, "description": p["description"],
                                                             **changes}
    assert set(p) == set(b)
    assert set(_flat({k: v for k, v in raw.items() if k != "base"})) == {"profile", "description", *changes}


def test_full_is_the_only_complete_params_file():
    raw = _file("full")
    assert "base" not in raw
    assert set(_flat(raw)) == set(_flat(params.load(params.profile_path("full")))) - {"provenance"}
    for path in sorted(params.profile_path("full").parent.glob("*.yaml")):
        assert path.stem == "full" or "base" in _file(path.stem), path.name


def test_a_delta_replaces_free_form_mappings_whole(tmp_path):
    """A delta can drop entries of a free-form mapping (phase-2 weights, generation windows): only the schema's
    sections merge key by key."""
    (tmp_path / "d.yaml").write_text(
        "base: smoke\nprofile: d\ndescription: shorter phase 2 and one window\n"
        "training:\n  phase2_horizons: [1, 7, 14]\n  phase2_weights: {1: 1.0, 7: 0.9, 14: 0.8}\n"
        "generation:\n  windows: {crisis: 2008-06-02}\n")
    p = params.load(tmp_path / "d.yaml")
    assert p["training"]["phase2_weights"] == {1: 1.0, 7: 0.9, 14: 0.8}
    assert p["generation"]["windows"] == {"crisis": "2008-06-02"}
    assert p["training"]["learning_rate"] == params.load(params.profile_path("smoke"))["training"]["learning_rate"]


@pytest.mark.parametrize("text,msg", [
    ("model.kl_weight=.nan", "params: 'model.kl_weight' must be finite, got nan"),
    ("training.learning_rate=.inf", "params: 'training.learning_rate' must be finite, got inf"),
    ("gates.kl_max=.nan", "params: 'gates.kl_max' must be finite, got nan"),
    ("model.quantile_loss_weights=[1, .nan, 1, 1, 1]", "params: 'model.quantile_loss_weights' must be finite"),
    ("training.phase2_weights.7=-.inf", "params: 'training.phase2_weights' must be finite, got -inf"),
    ("evaluation.deployment.x=['<', .nan]", "params: 'evaluation.deployment' must be finite, got nan"),
    ("seed=-1", "params: 'seed' must be in [0, "),
    ("seed=4294968", "params: 'seed' must be in [0, 4294967]"),
    ("profile=..", "params: 'profile' must be a plain name"),
    ("profile=.", "params: 'profile' must be a plain name"),
    ("profile=a/b", "params: 'profile' must be a plain name"),
    ("profile=/tmp/x", "params: 'profile' must be a plain name"),
    ("profile=''", "params: 'profile' must be a plain name")])
def test_non_finite_numbers_a_negative_seed_and_a_path_as_profile_fail_at_validation(text, msg):
    """YAML's .nan passes `x < 0` checks and was stored as null, failing only in notebook 01; a profile of '..' made
    the repository root the run directory."""
    with pytest.raises(ParamsError) as ei:
        params.load(params.profile_path("test"), [text])
    assert str(ei.value).startswith(msg) and "\n" not in str(ei.value), str(ei.value)


def test_plain_profile_names_load():
    for name in ("smoke_kl0.5", "a-b", "x.y", "A1"):
        assert params.load(params.profile_path("test"), [f"profile={name}"])["profile"] == name


def test_a_sweep_set_with_nan_is_one_line(tmp_path):
    from backfill.sweep import spec
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": str(params.profile_path("test")), "set": {"model.kl_weight": float("nan")},
                                    "space": {"seed": [0]}}))
    with pytest.raises(spec.SweepError) as ei:
        spec.load(path)
    assert "'model.kl_weight' must be finite, got nan" in str(ei.value) and "\n" not in str(ei.value)


def test_cli_profile_dotdot_is_refused_and_the_notebooks_are_untouched():
    """`--set profile=..` made the repository root the run directory: notebook 01's executed copy overwrote its
    source, and a later failure moved every source notebook to notebooks/stale/."""
    root = params.profile_path("test").parents[1]
    before = {p.name: p.read_bytes() for p in (root / "notebooks").glob("*.ipynb")}
    r = subprocess.run([sys.executable, "-m", "backfill", "run", str(params.profile_path("test")), "--set", "profile=..",
                        "--set", "seed=-1", "--only", "01"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("backfill: params: 'profile' must be a plain name"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (root / "notebooks").glob("*.ipynb")} == before
    assert not (root / "notebooks" / "stale").exists() and not (root / "metrics.json").exists()


@pytest.mark.parametrize("marks, ok", [([0, 0, 0, 4], True), ([4, 4, 4, 4], True), ([0, 2, 2, 3], True),
                                       ([0, 0, 0, 0], False), ([-1, 0, 0, 4], False), ([2, 1, 3, 4], False)])
def test_epoch_marks_may_skip_phases_but_not_all_epochs(marks, ok):
    sets = [f"training.phase{n}_epochs={m}" for n, m in enumerate(marks, 1)]
    if ok:
        p = params.load(params.profile_path("test"), sets)
        assert [is_skipped(p, n) for n in range(1, 5)] == [m == b for m, b in zip(marks, [0, *marks[:3]])]
    else:
        with pytest.raises(params.ParamsError) as e:
            params.load(params.profile_path("test"), sets)
        msg = str(e.value)
        assert "\n" not in msg and "epochs" in msg and ("must be >= " in msg or "cumulative" in msg)


@pytest.mark.parametrize("key, bad, default, other", [("calibration_unit", "origin", "backfill", "day"),
                                                       ("calibration_unit", 3, "backfill", "day"),
                                                       ("calibration_scale", "vol", "realised_vol", "halfwidth"),
                                                       ("calibration_scale", 1, "realised_vol", "halfwidth")])
def test_a_bad_calibration_unit_or_scale_is_a_one_line_error(tmp_path, key, bad, default, other):
    p = _raw("smoke")
    p["generation"][key] = bad
    msg = _load_error(tmp_path, p)
    assert f"generation.{key}" in msg and "\n" not in msg
    assert params.load(params.profile_path("smoke"))["generation"][key] == default
    p["generation"][key] = other                                          # the other choice loads
    assert params.load(_write(tmp_path, p))["generation"][key] == other
