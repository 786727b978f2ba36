"""One schema for every experiment YAML (params/test.yaml, smoke.yaml, full.yaml).

A params file is a nested mapping, complete or a delta: `base: smoke` (a profile in params/) or
`base: ../x.yaml` (a path relative to the file) names the file it is merged onto. `load(path, overrides)`
merges the chain of bases, applies `--set KEY=VALUE` overrides, rejects unknown or removed keys, wrong
types and impossible values with a single `ParamsError` naming the key, and returns plain nested dicts.
Checks that need the data (split dates inside the series) live in `check_against_data`.
"""
from __future__ import annotations

import copy
import datetime as _dt
import math
import re
from pathlib import Path

import yaml


class ParamsError(ValueError):
    """An invalid params file; the message names the offending key."""


# --- the schema --------------------------------------------------------------------------------
# A leaf is (type, required) where type is a python type, a tuple of types, or a callable check.
# A nested dict is a section. `None` in a type tuple means the key may be null.

def _list_of(t, min_len=1):
    def check(v):
        return isinstance(v, list) and len(v) >= min_len and all(_isinstance(x, t) for x in v)
    check.__name__ = f"list of {getattr(t, '__name__', t)}"
    return check


def _isinstance(v, t):
    if callable(t) and not isinstance(t, type) and not isinstance(t, tuple):
        return t(v)
    ts = t if isinstance(t, tuple) else (t,)
    for tt in ts:
        if tt is None and v is None:
            return True
        if tt is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if tt is int and isinstance(v, int) and not isinstance(v, bool):
            return True
        if isinstance(tt, type) and tt not in (int, float) and isinstance(v, tt):
            return True
        if callable(tt) and not isinstance(tt, type) and tt is not None and tt(v):
            return True
    return False


def _date_or_int(v):
    return isinstance(v, (int, _dt.date)) and not isinstance(v, bool) or (
        isinstance(v, str) and _parse_date(v) is not None)


_date_or_int.__name__ = "date (YYYY-MM-DD) or day index"

_span = _list_of(_date_or_int, 2)
_span.__name__ = "[start, end] pair of dates or day indices"

PRIORS = ("standard", "conditional")    # model.prior: N(0, I) (the plan) or a learned p(z_t | past, known inputs)
TARGETS = ("level", "change")           # model.target: vol levels (the plan) or log changes from the anchor day

SCHEMA = {
    "profile": str,
    "description": (str, None),
    "seed": int,
    "provenance": (dict, None),            # written into runs/<profile>/params.yaml; ignored on load
    "data": {
        "source": str,                     # "default" or a path to .npz / .csv / .parquet
        "returns_path": (str, None),       # the `date, return` table for a long CSV/parquet surface
        "cache_dir": (str, None),          # where the default dataset is cached (null: ~/.cache/backfill)
        "split_by": str,                   # "date" or "index"
        "train": _span,                    # [start, end] inclusive; validation = last val_fraction of it
        "val_fraction": float,
        "test": _span,
        "crisis": _span,
        "grid": (dict, None),              # default data only: {maturities: [years], moneyness: [K/S]} (null: 5x5)
    },
    "model": {
        "feat_dim": (_list_of(int, 2), None),   # (n_maturity, n_moneyness); null: taken from the data
        "context_len": int,
        "horizon": int,
        "latent_dim": int,
        "mem_hidden": int,
        "mem_layers": int,
        "mem_dropout": float,
        "surface_hidden": _list_of(int),
        "kl_weight": float,
        "re_feat_weight": float,
        "ex_loss_on_ret_only": bool,
        "ex_feats_loss_type": str,
        "quantiles": _list_of(float),
        "quantile_loss_weights": _list_of(float),
        "device": str,                     # "auto", "cpu" or "cuda"
        "prior": str,                      # "standard" (N(0, I), the plan) or "conditional" (learned p(z | past))
        "target": str,                     # "level" (the plan) or "change" (log change from the last context day)
        "rv_halflives": _list_of(int, 0),  # log EWMA realised-vol features of the returns, half-lives in days
        "known_future": bool,              # decoder and prior see each future day's return and RV features
    },
    "training": {
        "phase1_epochs": int,              # cumulative epoch marks, as in the plan; a phase whose mark equals the
                                           # one before (phase 1: 0) trains no epoch and is skipped
        "phase2_epochs": int,
        "phase3_epochs": int,
        "phase4_epochs": int,
        "learning_rate": float,
        "batch_size": int,
        "phase2_horizons": _list_of(int),
        "phase2_weights": dict,
        "phase3_horizon": int,
        "phase3_offsets": _list_of(int),
        "phase3_ar_steps": int,
        "phase4_horizon": int,
        "phase4_offsets": _list_of(int),
        "phase4_ar_steps": int,
        "returns": str,                    # "realized" or "predicted"
        "grad_clip": float,
        "bf16": bool,
        "max_train_windows": (int, None),  # subsample windows per epoch (null: all)
        "max_val_windows": (int, None),
        "validate_every": int,             # validation every k epochs (and after the last): fewer host syncs on a GPU
    },
    "gates": {
        "phase1_h1_rmse_train": float,
        "phase1_h1_rmse_val": float,
        "gate1_h90_rmse_train": float,
        "gate1_h90_rmse_val": float,
        "gate1_ci_violation": float,
        "gate2_pass_ratio": float,
        "gate2_offset_gap": float,
        "phase4_pass_ratio": float,
        "phase4_offset_gap": float,
        "phase4_ci_violation": float,
        "gate3_pass_ratio": float,
        "gate3_ci_violation": float,
        "gate3_coint_normal": float,
        "kl_max": float,                   # the plan's table 6.1: KL < 10 in every phase
        "marginal_band": float,            # a check within this relative distance of its threshold is "near"
    },
    "generation": {
        "n_samples": int,
        "sample_chunk": int,
        "horizon": int,
        "offset_fast": int,
        "offset_ensemble": int,
        "days_6month": int,
        "days_1year": int,
        "windows": dict,                   # name -> start date of the backfill (first generated day)
        "rolling_every": int,
        "max_rolling": (int, None),
        "bootstrap_paths": int,
        "calibration_every": int,          # validation-split origins for the conformal calibration, every n days
        "max_calibration": (int, None),    # at most this many, spread evenly over the validation origins
        "calibration_lead_bins": _list_of(int),   # lower edges of the conformal lead-time bins (days), from 1
        "calibration_unit": str,           # what the calibration treats as exchangeable: backfill or day
        "calibration_scale": str,          # what a score is measured in: realised_vol (x sqrt(lead)) or halfwidth
        "repair_arbitrage": bool,          # project each generated day onto the arbitrage-free set
    },
    "evaluation": {
        "table_6_2": dict,                 # metric -> [direction, target, stretch, red flag]
        "deployment": dict,                # criterion -> [direction, threshold]
    },
}

# Keys the plan's configs had that no code reads or that could take one value only; a file that still
# sets one is refused with the reason, rather than silently carrying a number that does nothing.
_SPLITS = "the splits are data.train / data.test (dates, or day indices with data.split_by: index)"
REMOVED = {
    "training.train_period_years": _SPLITS,
    "training.train_start_idx": _SPLITS,
    "training.train_end_idx": _SPLITS,
    "training.total_epochs": "it is training.phase4_epochs (the epoch marks are cumulative)",
    "model.use_dense_surface": "the surface always goes through the dense layers of model.surface_hidden",
    "model.num_quantiles": "it is len(model.quantiles)",
    "model.mem_type": "the memory is always an LSTM",
    "model.use_quantile_regression": "the decoder is always a quantile decoder",
    "model.ex_feats_dim": "it is derived: 3 (return, skew, slope) + len(model.rv_halflives)",
}

# The plan's training settings (the "Context=60 training plan", docs/design.md §1): what `train.is_full_plan`
# checks a run against.
FULL_PLAN = {
    "training.phase1_epochs": 200,         # cumulative epoch marks
    "training.phase2_epochs": 350,
    "training.phase3_epochs": 475,
    "training.phase4_epochs": 600,
    "training.learning_rate": 1e-5,
    "training.batch_size": 32,
    "training.max_train_windows": None,    # every window, every epoch
    "model.context_len": 60,
}

PROFILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")     # runs/<profile>: one plain path component, not '.' or '..'
MAX_SEED = (2 ** 32 - 5) // 1000                # train seeds numpy with seed * 1000 + phase, which must be < 2**32

_PROFILES_DIR = Path(__file__).resolve().parents[2] / "params"


def _parse_date(v):
    if isinstance(v, _dt.date):
        return v
    try:
        return _dt.date.fromisoformat(str(v))
    except ValueError:
        return None


def _typename(t):
    if isinstance(t, tuple):
        return " or ".join("null" if x is None else _typename(x) for x in t)
    return getattr(t, "__name__", str(t))


def _nonfinite(v):
    """The first NaN or infinite float in a value (lists and mappings searched), else None: YAML's .nan / .inf
    pass every type and range check (nan < 0 is False) and would only fail in a notebook."""
    if isinstance(v, float) and not math.isfinite(v):
        return v
    for x in (v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()):
        bad = _nonfinite(x)
        if bad is not None:
            return bad
    return None


def _walk(schema: dict, node, prefix: str):
    if not isinstance(node, dict):
        raise ParamsError(f"params: '{prefix or '<root>'}' must be a mapping, got {type(node).__name__}")
    for key in node:
        if key not in schema:
            where = f"{prefix}.{key}" if prefix else key
            raise ParamsError(f"params: unknown key '{where}'")
    for key, spec in schema.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in node:
            nullable = isinstance(spec, tuple) and None in spec
            if nullable:
                node[key] = None
                continue
            raise ParamsError(f"params: missing key '{where}'")
        if isinstance(spec, dict):
            _walk(spec, node[key], where)
        elif where != "provenance" and _nonfinite(node[key]) is not None:
            raise ParamsError(f"params: '{where}' must be finite, got {_nonfinite(node[key])!r}")
        elif not _isinstance(node[key], spec):
            raise ParamsError(f"params: '{where}' must be {_typename(spec)}, got {node[key]!r}")


def _fail(key, msg):
    raise ParamsError(f"params: '{key}' {msg}")


def validate(p: dict) -> dict:
    """Check types and cross-field consistency; returns `p` (dates normalised to ISO strings)."""
    for key, why in REMOVED.items():
        section, name = key.split(".")
        if isinstance(p.get(section), dict) and name in p[section]:
            raise ParamsError(f"params: '{key}' was removed: {why}")
    _walk(SCHEMA, p, "")
    d, m, t, g = p["data"], p["model"], p["training"], p["generation"]
    if not PROFILE_NAME.fullmatch(p["profile"]) or p["profile"] in (".", ".."):
        _fail("profile", f"must be a plain name (letters, digits, '_', '-', '.'; it names the run directory "
                         f"runs/<profile>), got {p['profile']!r}")
    if not 0 <= p["seed"] <= MAX_SEED:
        _fail("seed", f"must be in [0, {MAX_SEED}], got {p['seed']}")
    if d["split_by"] not in ("date", "index"):
        _fail("data.split_by", f"must be 'date' or 'index', got {d['split_by']!r}")
    for key in ("train", "test", "crisis"):
        span = d[key]
        dates = [_parse_date(x) if not isinstance(x, int) else None for x in span]
        if None not in dates:
            span = [x.isoformat() for x in dates]
        elif not all(isinstance(x, int) for x in span):
            _fail(f"data.{key}", f"must be two dates (YYYY-MM-DD) or two day indices, got {span!r}")
        elif d["split_by"] == "date" and key != "crisis":
            _fail(f"data.{key}", f"must hold dates because data.split_by is 'date', got {span!r}")
        if span[0] >= span[1]:
            _fail(f"data.{key}", f"start must be before end, got {span!r}")
        d[key] = span
    if not 0 < d["val_fraction"] < 1:
        _fail("data.val_fraction", f"must be in (0, 1), got {d['val_fraction']}")
    if type(d["train"][1]) is type(d["test"][0]) and d["train"][1] >= d["test"][0]:
        _fail("data.test", f"must start after the training span ends ({d['train'][1]})")
    if d["grid"] is not None:
        if d["source"] != "default":
            _fail("data.grid", f"applies only to data.source 'default' (a file has its own grid), got {d['source']!r}")
        if set(d["grid"]) != {"maturities", "moneyness"}:
            _fail("data.grid", f"must map exactly 'maturities' and 'moneyness' to lists, got keys {list(d['grid'])}")
        for key, n_min in (("maturities", 2), ("moneyness", 3)):
            v = d["grid"][key]
            if not _list_of(float, n_min)(v) or min(v) <= 0 or any(b <= a for a, b in zip(v, v[1:])):
                _fail(f"data.grid.{key}", f"must be >= {n_min} positive, strictly increasing numbers, got {v!r}")
            d["grid"][key] = [float(x) for x in v]

    positive = {"model.context_len": m["context_len"], "model.horizon": m["horizon"],
                "model.latent_dim": m["latent_dim"], "model.mem_hidden": m["mem_hidden"],
                "model.mem_layers": m["mem_layers"],
                "training.batch_size": t["batch_size"], "training.phase3_ar_steps": t["phase3_ar_steps"],
                "training.phase4_ar_steps": t["phase4_ar_steps"], "generation.n_samples": g["n_samples"],
                "generation.sample_chunk": g["sample_chunk"], "generation.rolling_every": g["rolling_every"],
                "generation.bootstrap_paths": g["bootstrap_paths"],
                "generation.calibration_every": g["calibration_every"]}
    for key, v in positive.items():
        if v < 1:
            _fail(key, f"must be >= 1, got {v}")
    if any(h < 1 for h in m["surface_hidden"]):
        _fail("model.surface_hidden", f"layer sizes must be >= 1, got {m['surface_hidden']}")
    if m["feat_dim"] is not None and (len(m["feat_dim"]) != 2 or min(m["feat_dim"]) < 2):
        _fail("model.feat_dim", f"must be [n_maturity, n_moneyness] with each >= 2, got {m['feat_dim']}")
    if m["ex_feats_loss_type"] not in ("l2", "l1"):
        _fail("model.ex_feats_loss_type", f"must be 'l2' or 'l1', got {m['ex_feats_loss_type']!r}")
    if m["prior"] not in PRIORS:
        _fail("model.prior", f"must be {' or '.join(map(repr, PRIORS))}, got {m['prior']!r}")
    if m["target"] not in TARGETS:
        _fail("model.target", f"must be {' or '.join(map(repr, TARGETS))}, got {m['target']!r}")
    if any(h < 1 for h in m["rv_halflives"]):
        _fail("model.rv_halflives", f"half-lives must be >= 1 day, got {m['rv_halflives']}")
    if m["known_future"] and t["returns"] != "realized":
        _fail("model.known_future", "needs training.returns: realized (future returns are what it knows)")
    if not 0 <= m["mem_dropout"] < 1:
        _fail("model.mem_dropout", f"must be in [0, 1), got {m['mem_dropout']}")
    for key in ("kl_weight", "re_feat_weight"):
        if m[key] < 0:
            _fail(f"model.{key}", f"must be >= 0, got {m[key]}")
    q = m["quantiles"]
    if sorted(q) != q or not all(0 < x < 1 for x in q) or not {0.05, 0.5, 0.95} <= set(q) \
            or q[0] != 0.05 or q[-1] != 0.95:
        _fail("model.quantiles", f"must be increasing from 0.05 to 0.95 and include 0.5 (the CI is p05-p95), got {q}")
    if len(m["quantile_loss_weights"]) != len(q):
        _fail("model.quantile_loss_weights", f"needs one weight per quantile ({len(q)}), got "
              f"{len(m['quantile_loss_weights'])}")
    if m["device"] not in ("auto", "cpu", "cuda"):
        _fail("model.device", f"must be 'auto', 'cpu' or 'cuda', got {m['device']!r}")

    marks = [t["phase1_epochs"], t["phase2_epochs"], t["phase3_epochs"], t["phase4_epochs"]]
    if marks[0] < 0:
        _fail("training.phase1_epochs", f"must be >= 0 (0 skips phase 1), got {marks[0]}")
    for i in range(1, 4):
        if marks[i] < marks[i - 1]:
            _fail(f"training.phase{i + 1}_epochs", f"phase epoch marks must be cumulative, got {marks}")
    if marks[3] < 1:
        _fail("training.phase4_epochs", f"must be >= 1: the marks are cumulative, so it is the curriculum's total "
                                        f"number of epochs (a phase whose mark equals the one before is skipped, not "
                                        f"all four), got {marks}")
    if t["learning_rate"] <= 0:
        _fail("training.learning_rate", f"must be > 0, got {t['learning_rate']}")
    hs = t["phase2_horizons"]
    if sorted(set(hs)) != hs or hs[0] < 1:
        _fail("training.phase2_horizons", f"must be strictly increasing and >= 1, got {hs}")
    w = t["phase2_weights"]
    try:
        w = {int(k): float(v) for k, v in w.items()}
    except (TypeError, ValueError):
        _fail("training.phase2_weights", f"must map horizon -> weight, got {t['phase2_weights']!r}")
    if sorted(w) != hs:
        _fail("training.phase2_weights", f"keys {sorted(w)} do not match training.phase2_horizons {hs}")
    if any(v < 0 for v in w.values()):
        _fail("training.phase2_weights", "weights must be >= 0")
    t["phase2_weights"] = w
    for ph in (3, 4):
        H, offs = t[f"phase{ph}_horizon"], t[f"phase{ph}_offsets"]
        if H < 1:
            _fail(f"training.phase{ph}_horizon", f"must be >= 1, got {H}")
        for o in offs:
            if o < 1 or o > H:
                _fail(f"training.phase{ph}_offsets", f"offset {o} must be in [1, horizon={H}]")
    if t["returns"] not in ("realized", "predicted"):
        _fail("training.returns", f"must be 'realized' or 'predicted', got {t['returns']!r}")
    if t["grad_clip"] <= 0:
        _fail("training.grad_clip", f"must be > 0, got {t['grad_clip']}")
    if t["validate_every"] < 1:
        _fail("training.validate_every", f"must be >= 1, got {t['validate_every']}")
    for key in ("max_train_windows", "max_val_windows"):
        if t[key] is not None and t[key] < 1:
            _fail(f"training.{key}", f"must be >= 1 or null, got {t[key]}")

    for key, v in p["gates"].items():
        if v <= 0:
            _fail(f"gates.{key}", f"must be > 0, got {v}")
    for key in ("horizon", "offset_fast", "offset_ensemble", "days_6month", "days_1year"):
        if g[key] < 1:
            _fail(f"generation.{key}", f"must be >= 1, got {g[key]}")
    lb = g["calibration_lead_bins"]
    if lb[0] != 1 or any(b <= a for a, b in zip(lb, lb[1:])):
        _fail("generation.calibration_lead_bins", f"must be strictly increasing lower edges starting at 1, got {lb}")
    from .conformal import SCALES, UNITS
    if g["calibration_unit"] not in UNITS:
        _fail("generation.calibration_unit", f"must be one of {', '.join(UNITS)}, got {g['calibration_unit']!r}")
    if g["calibration_scale"] not in SCALES:
        _fail("generation.calibration_scale", f"must be one of {', '.join(SCALES)}, got {g['calibration_scale']!r}")
    if g["max_calibration"] is not None and g["max_calibration"] < 1:
        _fail("generation.max_calibration", f"must be >= 1 or null, got {g['max_calibration']}")
    for key in ("offset_fast", "offset_ensemble"):
        if g[key] > g["horizon"]:
            _fail(f"generation.{key}", f"offset {g[key]} must be <= generation.horizon ({g['horizon']})")
    for name, start in g["windows"].items():
        if _parse_date(start) is None and not isinstance(start, int):
            _fail(f"generation.windows.{name}", f"must be a date or day index, got {start!r}")
        if isinstance(start, _dt.date):
            g["windows"][name] = start.isoformat()
    for table, n in (("table_6_2", 4), ("deployment", 2)):
        for name, row in p["evaluation"][table].items():
            if not (isinstance(row, list) and len(row) == n and row[0] in ("<", ">")
                    and all(_isinstance(v, float) for v in row[1:])):
                _fail(f"evaluation.{table}.{name}", f"must be [\"<\" or \">\", {n - 1} number(s)], got {row!r}")
    return p


def read_mapping(path, error=None, prefix: str = "params: ") -> dict:
    """One YAML file as a mapping, as written (no bases merged); a missing file, bad YAML or another top level is
    one line of `error` (ParamsError; the sweep files use their own) starting with `prefix`."""
    error = error or ParamsError
    if not Path(path).is_file():
        raise error(f"{prefix}file not found: {path}")
    try:
        p = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise error(f"{prefix}{path} is not valid YAML" + (f" (line {line + 1})" if line is not None else "")) from None
    if not isinstance(p, dict):
        raise error(f"{prefix}{path} must hold a mapping at the top level")
    return p


def merge(base: dict, over: dict, schema=None) -> dict:
    """`over` on top of `base`: a section of the schema updates the base's section key by key; any other value,
    a free-form mapping included (phase2_weights, generation.windows, the evaluation tables), replaces it whole,
    so that a delta can also drop entries of such a mapping."""
    schema = SCHEMA if schema is None else schema
    out = copy.deepcopy(base)
    for key, v in over.items():
        sub = schema.get(key) if isinstance(schema, dict) else None
        nested = isinstance(sub, dict) and isinstance(v, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], v, sub) if nested else copy.deepcopy(v)
    return out


def base_path(value, path: Path, error=None, prefix: str = "params: ") -> Path:
    """`base: smoke` is params/smoke.yaml; `base: x.yaml` or `base: ../x.yaml` is relative to the file `path`
    (a params file, or a sweep file: it passes its own `error` and `prefix`)."""
    if not isinstance(value, str) or not value.strip():
        raise (error or ParamsError)(f"{prefix}{path}: 'base' must be a profile name or a path, got {value!r}")
    if "/" in value or value.endswith((".yaml", ".yml")):
        return (path.parent / value).resolve()
    return profile_path(value).resolve()


def resolve(path, _chain: tuple = ()) -> dict:
    """The params of `path` merged onto its chain of bases (`base:`), not yet validated. `profile` and
    `description` are never inherited: every file of a chain names its own experiment."""
    path = Path(path)
    p = read_mapping(path)
    if "base" not in p:
        return p
    value = p.pop("base")
    base = base_path(value, path)
    chain = (*_chain, path.resolve())
    if base in chain:
        cycle = " -> ".join(x.name for x in (*chain[chain.index(base):], base))
        raise ParamsError(f"params: {path}: 'base' {value!r} makes a cycle ({cycle})")
    if not base.exists():
        raise ParamsError(f"params: {path}: 'base' {value!r} not found ({base})")
    for key in ("profile", "description"):
        if key not in p:
            raise ParamsError(f"params: {path}: '{key}' must be given (it is not inherited from base {value!r})")
    return merge(resolve(base, chain), p)


def parse_override(text: str) -> tuple[str, object]:
    """'model.kl_weight=0.5' -> ('model.kl_weight', 0.5): a dotted key and a value read as YAML."""
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not all(key.split(".")):
        raise ParamsError(f"params: --set {text!r} must be KEY=VALUE with a dotted KEY, e.g. model.kl_weight=0.5")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ParamsError(f"params: --set {key}: {raw!r} is not a YAML value") from None


def _check_override_key(key: str) -> None:
    """A --set key must be in the schema, or inside one of its free-form mappings (generation.windows.x)."""
    if key in REMOVED:
        raise ParamsError(f"params: '{key}' was removed: {REMOVED[key]}")
    spec, parts = SCHEMA, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(spec, dict):                   # below a leaf: only a mapping-valued leaf has keys
            if spec is dict or isinstance(spec, tuple) and dict in spec:
                return
            parent = ".".join(parts[:i])
            raise ParamsError(f"params: --set {key}: '{parent}' is not a mapping")
        where = ".".join(parts[:i + 1])
        if part not in spec or where == "provenance":
            raise ParamsError(f"params: --set {key}: unknown key '{where}'")
        spec = spec[part]


def _same_key(node: dict, part: str):
    """The existing key of `node` spelled `part` (phase2_weights has int keys), else `part`."""
    return next((k for k in node if str(k) == part), part)


def apply_overrides(p: dict, overrides=()) -> dict:
    """A copy of `p` with each 'KEY=VALUE' of `overrides` set in turn; the value replaces what was there."""
    p = copy.deepcopy(p)
    for text in overrides:
        key, value = parse_override(text)
        _check_override_key(key)
        *parents, last = key.split(".")
        node = p
        for i, part in enumerate(parents):
            part = _same_key(node, part)
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                where = ".".join(parents[:i + 1])
                raise ParamsError(f"params: --set {key}: '{where}' is not a mapping")
            node = node[part]
        node[_same_key(node, last)] = value
    return p


def load(path, overrides=()) -> dict:
    """Read a params YAML merged onto its bases, apply `--set` overrides ('KEY=VALUE') and validate;
    raise ParamsError (one line) on any problem."""
    return validate(apply_overrides(resolve(path), overrides))


def profile_path(name: str) -> Path:
    """params/<name>.yaml of this checkout."""
    return _PROFILES_DIR / f"{name}.yaml"


def longest_window(p: dict) -> int:
    """Days needed by the longest training window of the curriculum (data.phase_window_lengths)."""
    from .data import phase_window_lengths
    return max(phase_window_lengths(p).values())
