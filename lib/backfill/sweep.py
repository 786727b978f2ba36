"""Sweeps: one params file run over a search space, each trial a normal run directory, executed as Ray Tune trials.

A sweep file (params/sweeps/*.yaml) names a base params file, a search space over params keys and the metric to
read. `load` validates it and expands it into trials up front: every trial's overrides go through `params.load`
before anything runs, and a trial's name (its run directory) is a readable slug of its overrides, so rerunning a
sweep finds the same directories. `run` executes the trials with Ray Tune, locally (an embedded Ray) or on a
cluster (`address`); each trial is `pipeline.run(base, run_dir=<sweep dir>/<trial>, overrides=...)`, which skips
finished notebooks and resumes training from checkpoints/last.pt, and reports every phase's validation RMSE to
Tune (time attribute `phase`) so that ASHA or the plan's gates can stop hopeless trials before the expensive
phases. `table` reads the trial run directories (compare.py's readers) into one row per trial, written as
results.parquet and results.md; the analysis functions below (mean +- sd across seeds, paired comparisons across
seeds, Diebold-Mariano and MCS on seed-averaged daily losses) feed notebooks/10_sweep.ipynb.

A sweep file with `claims:` instead of `arms:` is a one-factor-at-a-time design: one shared reference configuration
(the base params with `set`) and, per claim, levels that each change one factor of it; the trials are the reference
and every level of every claim, crossed with the space (the seeds), never the claims with each other. Its chapter is
notebooks/11_plan_claims.ipynb (the analysis in `claims`).

Sweep directory (runs/sweeps/<name>/):
    <trial>/          a run directory (params.yaml, notebooks/, checkpoints/, metrics.json) plus trial.json
    ray/              Ray Tune's experiment directory (scratch: rebuilt on every launch)
    sweep.json        the expanded sweep: trials, their overrides and axis values, wall time
    results.parquet, results.md, 10_sweep.ipynb (11_plan_claims.ipynb for a sweep with claims)
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import compare as _compare
from . import params as _params
from . import pipeline
from .gates import GATE_OF_PHASE
from .rundir import ROOT, atomic_write_bytes, atomic_write_text, is_locked, make_run_dir, read_metrics


class SweepError(ValueError):
    """An invalid sweep file; the message names the file and the offending key in one line."""


KEYS = ("name", "description", "base", "set", "arms", "claims", "space", "num_samples", "search_seed", "metric",
        "mode", "resources", "max_concurrent", "scheduler")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
HEADLINE = [*_compare.SCORES, *(f"cal {s}" for s in _compare.SCORES), *(f"{b} rmse" for b in _compare.BASELINES),
            "dm vs econometric", "dm p", *(f"dm{x} vs {b}" for b in _compare.DM_AGAINST for x in ("", " p"))]
# compare.table's score columns (09_evaluation)
PHASE_METRICS = [f"phase{n}.{k}" for n in range(1, 5) for k in ("val_rmse", "val_kl")]   # notebooks 02-05
METRICS = HEADLINE + PHASE_METRICS
PHASE_NOTEBOOKS = {name: n for n, name in enumerate(pipeline.NOTEBOOKS[1:5], 1)}       # 02-05 train phases 1-4
SCHEDULERS = {"none": {}, "asha": {"metric": "val_rmse", "grace_period": 1, "reduction_factor": 2},
              "gates": {"stop_on": ["FAIL"]}}
FINAL = ("ok", "failed", "stopped")                           # trial.json states after which a trial is done
SWEEPS_DIR = ROOT / "runs" / "sweeps"
CHAPTER = ROOT / "notebooks" / "10_sweep.ipynb"
CLAIMS_CHAPTER = ROOT / "notebooks" / "11_plan_claims.ipynb"       # the chapter of a sweep with claims
REFERENCE = "reference"         # the claims' shared configuration (the base with `set`): its claim and level
CLAIM_KEYS = ("says", "plan", "offsets", "reference")   # a claim's own keys; every other key of a claim is a level
OFFSET_ROLES = {"fast": "offset_fast", "ensemble": "offset_ensemble"}   # a claim's `offsets`: generation keys
PLAIN = re.compile(r"[A-Za-z0-9_.+-]+")                  # a claim or level name (it goes into trial names)


@dataclass
class Trial:
    name: str               # its run directory's name: a slug of `config`
    config: dict            # axis -> value: arm axes (level names) and space keys (params values)
    overrides: list         # 'KEY=VALUE' strings for pipeline.run: the sweep's `set`, then the arms', then the space's
    group: str              # the configuration without the seed: trials of one group differ only in their seed
                            # (claims: `reference` or `<claim>=<level>`)


@dataclass
class Sweep:
    name: str
    path: Path              # the sweep file
    base: Path              # the params file every trial starts from
    description: str = ""
    arms: dict = field(default_factory=dict)      # axis -> {level: {dotted key: value}}
    claims: dict = field(default_factory=dict)    # claim -> {says, plan, offsets, reference (label), levels:
                                                  #           {level: {dotted key: value}}}, see `_read_claims`
    space: dict = field(default_factory=dict)     # dotted key -> list (grid) or {distribution: args}
    num_samples: int = 1
    search_seed: int = 0
    metric: str = "rmse"
    mode: str = "min"
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    max_concurrent: int | None = None
    scheduler: dict = field(default_factory=lambda: {"type": "none"})
    trials: list = field(default_factory=list)

    @property
    def axes(self) -> list[str]:
        return ["claim", "level", *self.space] if self.claims else [*self.arms, *self.space]

    @property
    def chapter(self) -> Path:
        """The notebook the sweep's chapter is executed from."""
        return CLAIMS_CHAPTER if self.claims else CHAPTER


# --- the sweep file ------------------------------------------------------------------------------

def _yaml(v) -> str:
    """A value as one line of YAML, as --set reads it back: 1.0e-05, [5, 21], standard, true."""
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _override(key: str, value) -> str:
    return f"{key}={_yaml(value)}"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_distribution(where: str, spec) -> None:
    (kind, args), = spec.items()
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(f"{where}: choice needs a non-empty list of values, got {args!r}")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(map(_number, args)) and args[0] < args[1]):
        raise SweepError(f"{where}: {kind} needs [low, high] with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise SweepError(f"{where}: loguniform needs low > 0, got {args!r}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise SweepError(f"{where}: randint needs integers [low, high) (high excluded), got {args!r}")


def _draw(spec: dict, rng: np.random.Generator):
    """One value of a distribution: uniform [a, b), loguniform (uniform in log), randint [a, b), choice."""
    (kind, args), = spec.items()
    if kind == "uniform":
        return float(rng.uniform(*args))
    if kind == "loguniform":
        return float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
    if kind == "randint":
        return int(rng.integers(*args))
    return args[int(rng.integers(len(args)))]


def _text(v) -> str:
    """A value as it appears in a trial's name: 1e-05, standard, 5-21 for [5, 21], none for []."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "-".join(_text(x) for x in v) or "none"
    if isinstance(v, dict):
        return hashlib.sha1(_yaml(v).encode()).hexdigest()[:6]
    return str(v)


def _slug(config: dict, short: dict, claims: bool = False) -> str:
    """`short=value,...` of a configuration; a claims trial starts with `reference` or `<claim>=<level>`."""
    head = []
    if claims:
        head = [REFERENCE if config["claim"] == REFERENCE else f"{config['claim']}={config['level']}"]
        config = {k: v for k, v in config.items() if k not in ("claim", "level")}
    s = ",".join([*head, *(f"{short[k]}={_text(v)}" for k, v in config.items())])
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", s)


def _short_names(axes: list[str]) -> dict:
    """Axis -> the name a trial's slug uses: the last part of a dotted key unless two axes share it."""
    last = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: s if last.count(s) == 1 else a for a, s in zip(axes, last)}


def _name_trials(configs: list[dict], overrides: list[list[str]], axes: list[str],
                 claims: bool = False) -> list[tuple[str, str]]:
    """(name, group) per trial: readable slugs, cut and suffixed by a hash of the overrides when long or not
    unique, so a name always maps to one set of overrides. Claims trials: `reference,seed=0`,
    `curriculum=phase4_only,seed=0`."""
    short = _short_names(axes)
    names = [_slug(c, short, claims) for c in configs]
    groups = [_slug({k: v for k, v in c.items() if k != "seed"}, short, claims) or "all" for c in configs]
    digest = [hashlib.sha1("\n".join(o).encode()).hexdigest()[:8] for o in overrides]
    out = []
    for i, n in enumerate(names):
        if len(n) > 96 or names.count(n) > 1:
            n = f"{n[:80]}-{digest[i]}"
        out.append((n or "trial", groups[i][:96]))
    return out


def load(path, check_data: bool = True) -> Sweep:
    """Read and validate a sweep file and expand its trials; SweepError (one line) on any problem. Every trial's
    overrides are validated by `params.load(base, overrides)` here, before anything is launched, and (`check_data`)
    every configuration against its data (`data.load_for`: its splits hold its longest training window, ...)."""
    path = Path(path).resolve()
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    raw = _params.read_mapping(path, SweepError, prefix="sweep: ")
    for k in raw:
        if k not in KEYS:
            raise SweepError(f"{where}: unknown key '{k}' (known: {', '.join(KEYS)})")

    def need(key, ok, what):
        if not ok:
            raise SweepError(f"{where}: '{key}' must be {what}, got {raw.get(key)!r}")

    sw = Sweep(name=raw.get("name", path.stem), path=path, base=Path())
    need("name", isinstance(sw.name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", sw.name) and sw.name not in (".", ".."),
         "a name of letters, digits, '_', '.', '-' (it names runs/sweeps/<name>)")
    sw.description = raw.get("description") or ""
    need("base", "base" in raw, "given: the params file every trial starts from")
    sw.base = _params.base_path(raw["base"], path, SweepError, prefix="sweep: ")
    if not sw.base.is_file():
        raise SweepError(f"{where}: 'base' {raw['base']!r} not found ({sw.base})")
    fixed = raw.get("set") or {}
    need("set", isinstance(fixed, dict), "a mapping of dotted params keys to values (applied to every trial)")
    sw.arms = raw.get("arms") or {}
    need("arms", isinstance(sw.arms, dict), "a mapping axis -> {level: {dotted params key: value}}")
    for axis, levels in sw.arms.items():
        if not isinstance(axis, str) or "." in axis or axis in (raw.get("space") or {}):
            raise SweepError(f"{where}: arms: axis {axis!r} must be a plain name (no '.') not also in space: it "
                             f"names a bundle of params keys, not one")
        if not isinstance(levels, dict) or not levels or not all(
                isinstance(lv, dict) and lv and all(isinstance(k, str) for k in lv) for lv in levels.values()):
            raise SweepError(f"{where}: arms.{axis} must map each level name to a non-empty mapping "
                             f"{{dotted params key: value}}")
    sw.space = raw.get("space") or {}
    need("space", isinstance(sw.space, dict), "a mapping dotted params key -> list (grid) or distribution")
    if raw.get("claims") is not None:
        if sw.arms:
            raise SweepError(f"{where}: 'claims' and 'arms' do not combine: a claims sweep varies one factor at a time "
                             f"against one reference; make each arm's level a level of a claim")
        other = [k for k in sw.space if k != "seed"]
        if other:
            raise SweepError(f"{where}: space '{other[0]}': the space of a claims sweep holds only `seed` (the "
                             f"replicates); a factor to compare is a level of a claim, one at a time")
        sw.claims = _read_claims(raw["claims"], where, sw.space)
    if not sw.space and not sw.arms and not sw.claims:
        raise SweepError(f"{where}: 'space' (or 'arms' or 'claims') must name at least one axis")
    for key, spec in sw.space.items():
        w = f"{where}: space '{key}'"
        if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS:
            _check_distribution(w, spec)
        elif not (isinstance(spec, list) and spec):
            raise SweepError(f"{w}: must be a non-empty list (grid) or one of {{uniform: [a, b]}}, "
                             f"{{loguniform: [a, b]}}, {{randint: [a, b]}}, {{choice: [...]}}, got {spec!r}")
    sw.num_samples = raw.get("num_samples", 1)
    need("num_samples", isinstance(sw.num_samples, int) and not isinstance(sw.num_samples, bool)
         and sw.num_samples >= 1, "an integer >= 1")
    random_keys = [k for k, s in sw.space.items() if isinstance(s, dict)]
    if sw.num_samples > 1 and not random_keys:
        raise SweepError(f"{where}: 'num_samples' {sw.num_samples} repeats identical trials without a random "
                         f"distribution in space; put replicates in the space as seed: [0, 1, ...]")
    sw.search_seed = raw.get("search_seed", 0)
    need("search_seed", isinstance(sw.search_seed, int) and not isinstance(sw.search_seed, bool), "an integer")
    sw.metric = raw.get("metric", "rmse")
    need("metric", sw.metric in METRICS, f"one of: {', '.join(METRICS)}")
    sw.mode = raw.get("mode", "min")
    need("mode", sw.mode in ("min", "max"), "min or max")
    res = raw.get("resources") or {}
    need("resources", isinstance(res, dict) and set(res) <= {"cpu", "gpu"}
         and all(_number(v) and v >= 0 for v in res.values()) and res.get("cpu", 1) > 0,
         "{cpu: > 0, gpu: >= 0 (a fraction shares a GPU)}")
    sw.resources = {"cpu": res.get("cpu", 1), "gpu": res.get("gpu", 0)}
    sw.max_concurrent = raw.get("max_concurrent")
    need("max_concurrent", sw.max_concurrent is None or isinstance(sw.max_concurrent, int)
         and not isinstance(sw.max_concurrent, bool) and sw.max_concurrent >= 1, "an integer >= 1 or null")
    sched = raw.get("scheduler") or {"type": "none"}
    need("scheduler", isinstance(sched, dict) and sched.get("type") in SCHEDULERS,
         "a mapping with type: none, asha or gates")
    extra = set(sched) - {"type"} - set(SCHEDULERS[sched["type"]])
    if extra:
        raise SweepError(f"{where}: scheduler: unknown key '{sorted(extra)[0]}' for type {sched['type']} "
                         f"(known: {', '.join(SCHEDULERS[sched['type']]) or 'none'})")
    sw.scheduler = {"type": sched["type"], **SCHEDULERS[sched["type"]], **sched}
    if sw.scheduler["type"] == "asha":
        s = sw.scheduler
        need("scheduler", s["metric"] in ("val_rmse", "val_kl") and isinstance(s["grace_period"], int)
             and 1 <= s["grace_period"] <= 4 and _number(s["reduction_factor"]) and s["reduction_factor"] > 1,
             "asha with metric val_rmse or val_kl, grace_period 1-4 (phases), reduction_factor > 1")
    if sw.scheduler["type"] == "gates":
        stop_on = sw.scheduler["stop_on"]
        need("scheduler", isinstance(stop_on, list) and stop_on and set(stop_on) <= {"FAIL", "MARGINAL"},
             "gates with stop_on: a list of FAIL and/or MARGINAL")
    sw.trials = expand(sw, fixed, where)
    if check_data:
        _check_data(sw, where)
    return sw


def _read_claims(raw, where: str, space: dict) -> dict:
    """The `claims:` of a sweep file, validated: claim -> {says, plan, offsets, reference, levels}. Each claim maps
    level names to {dotted params key: value} (what the level changes in the reference) and may give
      says:      the claim in words (the chapter shows it),
      plan:      the level that is the plan's choice (default `reference`; another level only in a claim with one
                 level: it is compared with the reference),
      offsets:   the generation offsets it is scored at: [fast] (generation.offset_fast, the default) and/or
                 ensemble (generation.offset_ensemble),
      reference: null or a label for the reference in this claim (it takes no overrides: it is shared)."""
    if not isinstance(raw, dict) or not raw:
        raise SweepError(f"{where}: 'claims' must map each claim name to {{level: {{dotted params key: value}}}}, "
                         f"got {raw!r}")
    out = {}
    for claim, body in raw.items():
        w = f"{where}: claims.{claim}"
        if not isinstance(claim, str) or not PLAIN.fullmatch(claim) or claim == REFERENCE:
            raise SweepError(f"{where}: claims: {claim!r} must be a plain name (letters, digits, '_', '.', '+', '-') "
                             f"other than '{REFERENCE}' (the shared configuration's rows)")
        if not isinstance(body, dict):
            raise SweepError(f"{w} must map level names to {{dotted params key: value}}, got {body!r}")
        levels = {k: v for k, v in body.items() if k not in CLAIM_KEYS}
        if not levels:
            raise SweepError(f"{w} has no level besides the reference: give at least one level "
                             f"{{level: {{dotted params key: value}}}}")
        for level, ov in levels.items():
            if not isinstance(level, str) or not PLAIN.fullmatch(level):
                raise SweepError(f"{w}: level {level!r} must be a plain name (letters, digits, '_', '.', '+', '-')")
            if not (isinstance(ov, dict) and ov and all(isinstance(k, str) for k in ov)):
                raise SweepError(f"{w}.{level} must be a non-empty mapping {{dotted params key: value}} (what the "
                                 f"level changes in the reference), got {ov!r}")
            clash = sorted(set(ov) & set(space))
            if clash:
                raise SweepError(f"{w}.{level}: '{clash[0]}' is also in space, which would override it in every "
                                 f"trial; a key is either a claim's factor or a space axis")
        says = body.get("says") or ""
        if not isinstance(says, str):
            raise SweepError(f"{w}.says must be text (the claim in words), got {says!r}")
        ref = body.get(REFERENCE)
        if ref is not None and not isinstance(ref, str):
            raise SweepError(f"{w}.{REFERENCE}: the reference is shared by every claim and takes no overrides (it is "
                             f"the base with `set`); give null or a label, got {ref!r}")
        plan = body.get("plan", REFERENCE)
        if plan != REFERENCE and plan not in levels:
            raise SweepError(f"{w}.plan must be '{REFERENCE}' or one of its levels ({', '.join(levels)}), got {plan!r}")
        if plan != REFERENCE and len(levels) > 1:
            raise SweepError(f"{w}.plan: a plan's choice other than the reference is compared with the reference "
                             f"alone, so the claim must have one level; got {len(levels)} ({', '.join(levels)})")
        offsets = body.get("offsets", ["fast"])
        if not (isinstance(offsets, list) and offsets and len(set(map(str, offsets))) == len(offsets)
                and set(offsets) <= set(OFFSET_ROLES)):
            raise SweepError(f"{w}.offsets must be a non-empty list of {' and/or '.join(OFFSET_ROLES)} (generation."
                             f"offset_fast, generation.offset_ensemble), got {offsets!r}")
        out[claim] = {"says": says.strip(), "plan": plan, "offsets": offsets, "reference": ref or "",
                      "levels": levels}
    return out


def _check_data(sw: Sweep, where: str) -> None:
    """Every distinct configuration's params against its data (`data.load_for`: the splits hold the longest training
    window, the test split a 1-year backfill, the named windows their context): a SweepError naming the trial, before
    anything runs. The dataset is built once per data section (then cached)."""
    from . import data as _data
    seen = set()
    for t in sw.trials:
        p = _params.load(sw.base, t.overrides)
        key = json.dumps({k: p[k] for k in ("data", "model", "training", "generation")}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            _data.load_for(p)
        except _data.DataError as e:
            raise SweepError(f"{where}: trial {t.name}: {str(e).splitlines()[0]}") from None


def _cells(sw: Sweep) -> list[tuple[dict, dict]]:
    """(config part, {dotted key: value}) of each configuration before the space: every combination of the arms;
    for claims, the reference (no override) and then every level of every claim, one factor at a time."""
    if sw.claims:
        out = [({"claim": REFERENCE, "level": REFERENCE}, {})]
        return out + [({"claim": c, "level": lv}, ov)
                      for c, spec in sw.claims.items() for lv, ov in spec["levels"].items()]
    return [(dict(zip(sw.arms, levels)), {k: v for a, lv in zip(sw.arms, levels) for k, v in sw.arms[a][lv].items()})
            for levels in itertools.product(*(list(lv) for lv in sw.arms.values()))]


def expand(sw: Sweep, fixed: dict, where: str = "") -> list[Trial]:
    """The trials: every combination of the arms (or, for claims, the reference and each claim's levels) and the
    space's grid lists, `num_samples` times, each time with fresh draws of its distributions from one generator
    seeded by `search_seed` (the same trials on every load). Each trial's overrides (`set`, then the arm's or
    level's, then the space's) are checked by params.load; a claim's level must change the reference's params, and
    no two levels may be the same configuration."""
    grid = {k: v for k, v in sw.space.items() if isinstance(v, list)}
    rng = np.random.default_rng(sw.search_seed)
    configs, overrides = [], []
    for _ in range(sw.num_samples):
        for cell, cell_ov in _cells(sw):
            for values in itertools.product(*grid.values()):
                point = dict(zip(grid, values))
                config = {**cell, **{k: point[k] if k in point else _draw(s, rng) for k, s in sw.space.items()}}
                ov = [_override(k, v) for k, v in fixed.items()]
                ov += [_override(k, v) for k, v in cell_ov.items()]
                ov += [_override(k, config[k]) for k in sw.space]
                configs.append(config)
                overrides.append(ov)
    named = _name_trials(configs, overrides, sw.axes, claims=bool(sw.claims))
    trials = [Trial(n, c, o, g) for (n, g), c, o in zip(named, configs, overrides)]
    loaded = {}
    for t in trials:
        try:
            loaded[t.name] = _params.load(sw.base, t.overrides)
        except _params.ParamsError as e:
            raise SweepError(f"{where}: trial {t.name}: {e}") from None
    if sw.claims:
        _check_levels(trials, loaded, where)
    return trials


def _check_levels(trials: list[Trial], loaded: dict, where: str) -> None:
    """A claim's level that leaves the reference's params as they are, or two levels that are the same configuration,
    would spend trials on a comparison of nothing: a SweepError naming them."""
    def key(p):
        return json.dumps({k: v for k, v in p.items() if k not in ("profile", "description", "provenance")},
                          sort_keys=True, default=str)
    by_config = {}
    for t in trials:
        c = key(loaded[t.name])
        cell = (t.config["claim"], t.config["level"])
        other = by_config.setdefault(c, cell)
        if other != cell:
            what = ("leaves the reference's params as they are" if other[0] == REFERENCE else
                    f"is the same configuration as claims.{other[0]}.{other[1]}")
            raise SweepError(f"{where}: claims.{cell[0]}.{cell[1]} {what}: a level must change the reference's params, "
                             f"and no two levels may be the same configuration")


# --- running a sweep with Ray Tune ------------------------------------------------------------------

def sweep_dir(sw: Sweep, out=None) -> Path:
    return Path(out).resolve() if out else SWEEPS_DIR / sw.name


def read_trial(run_dir) -> dict:
    """run_dir/trial.json: {state: running|ok|failed|stopped, ...}; {} before the trial first started."""
    path = Path(run_dir) / "trial.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def write_trial(run_dir, **record) -> dict:
    rec = {**read_trial(run_dir), **record}
    atomic_write_text(Path(run_dir) / "trial.json", json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


def _num(v) -> float:
    return float(v) if _number(v) else float("nan")


def phase_result(metrics: dict, n: int) -> dict:
    """What a trial reports to Tune after phase n: its validation RMSE (phases 1-2: at the phase's longest
    horizon; 3-4: of the autoregressive passes), validation KL and the phase's criteria decision (NaN, NaN and
    SKIPPED for a phase that trained no epoch)."""
    ph = (metrics.get("phases") or {}).get(f"phase{n}") or {}
    by_h = ph.get("val_rmse_by_horizon")
    rmse = by_h[max(by_h, key=int)] if by_h else ph.get("val_rmse")
    if ph.get("skipped"):             # no epoch: its numbers are the model it started from, not a result of it
        return {"phase": n, "val_rmse": float("nan"), "val_kl": float("nan"), "gate": "SKIPPED"}
    return {"phase": n, "val_rmse": _num(rmse), "val_kl": _num(ph.get("val_kl")),
            "gate": (ph.get("criteria") or {}).get("decision") or "-"}


def headline(run_dir) -> dict:
    """The run's headline scores as compare.table reads them (NaN where missing)."""
    row = _compare.table([run_dir]).iloc[0]
    return {k: _num(row[k]) for k in HEADLINE if k in row}


def _failure(run_dir) -> str:
    failed = [(n, s) for n, s in (read_metrics(run_dir).get("status") or {}).items() if s.get("state") == "failed"]
    if not failed:
        return "the run failed"
    n, s = failed[-1]
    return f"{n} failed in cell {s.get('cell')}: {s.get('error')}"


def trainable(config: dict) -> None:
    """One trial, in a Ray worker: a normal run of the base params with the trial's overrides into its run
    directory, reporting each phase (02-05) to Tune and the headline scores at the end. A trial stopped by the
    scheduler on an earlier launch only replays its phases; any other resumes its run (pipeline.run skips
    finished notebooks, training resumes from checkpoints/last.pt)."""
    from ray import tune
    t, ctx = config["trial"], config["ctx"]
    run_dir = Path(ctx["sweep_dir"]) / t["name"]
    threads = str(ctx["threads"])             # kernels inherit the environment: torch and BLAS use the trial's CPUs
    os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                      BACKFILL_BATCH="1")
    rec = read_trial(run_dir)
    if rec.get("state") == "stopped":
        m = read_metrics(run_dir)
        for n in range(1, rec.get("phase", 0) + 1):
            tune.report(phase_result(m, n))
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_trial(run_dir, name=t["name"], overrides=t["overrides"], base=ctx["base"], state="running",
                error=None, phase=None, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    logf = open(run_dir / "sweep.log", "a")

    def log(line):
        logf.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        logf.flush()

    def on_notebook(name, metrics):
        if name in PHASE_NOTEBOOKS:
            tune.report(phase_result(metrics, PHASE_NOTEBOOKS[name]))   # the scheduler may stop the trial here

    t0 = time.time()
    try:
        rc = pipeline.run(ctx["base"], run_dir=run_dir, overrides=t["overrides"], log=log, on_notebook=on_notebook)
    except Exception as e:                        # bad data, a locked run directory, ...
        write_trial(run_dir, state="failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
        raise
    finally:
        logf.close()
    if rc != 0:
        err = _failure(run_dir)
        write_trial(run_dir, state="failed", error=err, seconds=round(time.time() - t0, 1))
        raise RuntimeError(f"trial {t['name']}: {err}")
    write_trial(run_dir, state="ok", seconds=round(time.time() - t0, 1))
    m = read_metrics(run_dir)
    last = max([n for n in range(1, 5) if f"phase{n}" in (m.get("phases") or {})], default=None)
    final = {**(phase_result(m, last) if last else {"phase": 0, "val_rmse": float("nan"), "val_kl": float("nan")}),
             "gate": "-", "final": 1}
    phases = {f"phase{n}.{k}": v for n in range(1, 5) for k, v in phase_result(m, n).items() if k.startswith("val_")}
    tune.report({**final, **phases, **headline(run_dir)})


def _callback(sw: Sweep, out: Path, log):
    """A Tune callback on the driver: marks trials the scheduler stopped (trial.json state stopped, at the last
    phase they reported) and prints one line per finished trial."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, what):
            self.done += 1
            name = trial.config["trial"]["name"]
            r = trial.last_result or {}
            v = r.get(sw.metric)
            score = f", {sw.metric} {v:.4g}" if _number(v) and np.isfinite(v) else ""
            log(f"[{self.done}/{len(sw.trials)}] {name}: {what}{score}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            run_dir = out / trial.config["trial"]["name"]
            rec = read_trial(run_dir)
            if rec.get("state") not in FINAL:         # stopped by ASHA or the gates at a phase boundary
                phase = (trial.last_result or {}).get("phase")
                rec = write_trial(run_dir, state="stopped", phase=phase, stopped_by=sw.scheduler["type"])
            self._line(trial, state_text(rec))

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, state_text(read_trial(out / trial.config["trial"]["name"])))

    return Progress()


def _scheduler(sw: Sweep):
    """(scheduler, stopper) for Tune: ASHA on a phase metric with the phase as its clock (rungs at
    grace_period * reduction_factor^k phases), or the plan's gates as a stopper (a phase whose criteria decide
    one of stop_on ends the trial), or neither."""
    s = sw.scheduler
    if s["type"] == "asha":
        from ray.tune.schedulers import ASHAScheduler
        return ASHAScheduler(time_attr="phase", metric=s["metric"], mode="min", max_t=4,
                             grace_period=s["grace_period"], reduction_factor=s["reduction_factor"],
                             stop_last_trials=False), None         # reaching phase 4 must not stop generation
    if s["type"] == "gates":
        stop_on = set(s["stop_on"])
        return None, lambda trial_id, result: result.get("gate") in stop_on
    return None, None


def _init_ray(sw: Sweep, address: str | None) -> Path | None:
    """Join the cluster at `address`, or start a local Ray for the sweep's duration; returns the local Ray's session
    folder (None on a cluster)."""
    import logging
    import ray
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"        # trials keep the driver's cwd; every path here is absolute
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # with verbose=0: no status tables, our line per trial
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
              ignore_reinit_error=True)
    if address:
        try:
            ray.init(address=address, **kw)
        except Exception as e:                  # ConnectionError, ray.exceptions.AuthenticationError, ...
            raise SweepError(f"cannot join the Ray cluster at {address} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160]}); a cluster started by `ray start` uses token "
                             f"authentication: run with RAY_AUTH_MODE=token and the cluster's token in "
                             f"~/.ray/auth_token (or RAY_AUTH_TOKEN)") from None
        return None
    cpus = os.cpu_count() or 1
    if sw.resources["cpu"] > cpus:
        raise SweepError(f"{sw.path.name}: resources.cpu {sw.resources['cpu']} is more than this machine's "
                         f"{cpus} CPUs; lower it or run on a cluster with --address")
    ctx = ray.init(num_cpus=cpus, **kw)
    if sw.resources["gpu"] > ray.cluster_resources().get("GPU", 0):
        raise SweepError(f"{sw.path.name}: resources.gpu {sw.resources['gpu']} but this machine has no GPU; "
                         f"set gpu: 0 or run on a GPU machine or cluster")
    session = (getattr(ctx, "address_info", None) or {}).get("session_dir")
    return Path(session) if session else None


def _shutdown_ray(session: Path | None, out: Path) -> None:
    """Shut Ray down; a local Ray's session folder (/tmp/ray/session_*, one per launch: they piled up) is removed,
    its logs kept as out/ray/logs (the last launch's, beside the rest of the scratch)."""
    import ray
    ray.shutdown()
    if session is None or not session.is_dir():
        return
    try:
        shutil.rmtree(out / "ray" / "logs", ignore_errors=True)
        if (session / "logs").is_dir():
            (out / "ray").mkdir(parents=True, exist_ok=True)
            shutil.move(session / "logs", out / "ray" / "logs")
        shutil.rmtree(session, ignore_errors=True)
        latest = session.parent / "session_latest"
        if latest.is_symlink() and Path(os.readlink(latest)).name == session.name:
            latest.unlink()
    except OSError:                       # scratch: never worth failing a finished sweep over
        pass


def run(sw: Sweep, out=None, address: str | None = None, chapter: bool = True, log=print) -> int:
    """Run the sweep's trials as Ray Tune trials into runs/sweeps/<name>/<trial>/ (or `out`), then write the
    results table and execute the sweep chapter. 0 when every trial finished (ok or stopped early), 1 otherwise.

    Resume: the trials are expanded deterministically, so a rerun finds the same run directories. Tune starts
    afresh every time (its experiment directory, ray/, is scratch); a trial that finished is not re-executed
    (pipeline.run skips its notebooks: same key), an interrupted or failed one resumes from its notebooks and
    checkpoints, one stopped by the scheduler stays stopped."""
    from ray import tune
    out = make_run_dir(sweep_dir(sw, out), ())     # not the sources' folder (the chapter is executed into it)
    t0, started = time.time(), time.strftime("%Y-%m-%dT%H:%M:%S")
    write_info(sw, out)
    session = _init_ray(sw, address)
    try:
        shutil.rmtree(out / "ray" / "tune", ignore_errors=True)
        scheduler, stopper = _scheduler(sw)
        ctx = {"sweep_dir": str(out), "base": str(sw.base), "threads": max(1, int(sw.resources["cpu"]))}
        trials = [{"name": t.name, "overrides": t.overrides} for t in sw.trials]
        log(f"sweep {sw.name}: {len(trials)} trials of {sw.base.name} into {out} "
            f"({sw.resources['cpu']} CPU, {sw.resources['gpu']} GPU each; scheduler {sw.scheduler['type']})")
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": sw.resources["cpu"], "gpu": sw.resources["gpu"]}),
            param_space={"trial": tune.grid_search(trials), "ctx": ctx},
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=sw.max_concurrent,
                                        trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname),
            run_config=tune.RunConfig(name="tune", storage_path=str(out / "ray"), verbose=0, stop=stopper,
                                      callbacks=[_callback(sw, out, log)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
    finally:
        _shutdown_ray(session, out)
    for t in sw.trials:                   # a killed worker releases its run directory's lock as it exits
        for _ in range(40):
            if address or not is_locked(out / t.name):
                break
            time.sleep(0.25)
    wall = round(time.time() - t0, 1)
    df = table(sw, out)
    info = write_info(sw, out, {"started": started, "wall_seconds": wall})
    paths = write_results(df, out, sw, info)
    log(f"sweep {sw.name}: {wall:.0f} s wall; results: {paths[1]}")
    done = df["state"].str.match(r"ok|stopped").all()
    if chapter and df["state"].map(lambda s: s.split()[0] in ("ok", "stopped", "failed:")).all():
        log(f"sweep {sw.name}: chapter {execute_chapter(out, sw.base, sw.chapter)}")
    elif not done:
        log(f"sweep {sw.name}: unfinished trials; rerun the same command to resume them")
    return 0 if done else 1


def _trial_dirname(trial) -> str:
    return trial.config["trial"]["name"]


def write_info(sw: Sweep, out: Path, launch: dict | None = None) -> dict:
    """out/sweep.json: the expanded sweep (what the chapter and `load_results` read besides the table), with one
    entry per launch (its start and wall seconds) and their total."""
    path = out / "sweep.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    launches = old.get("launches", []) + ([launch] if launch else [])
    info = {"name": sw.name, "description": sw.description, "sweep_file": str(sw.path), "base": str(sw.base),
            "metric": sw.metric, "mode": sw.mode, "axes": sw.axes, "chapter": sw.chapter.name,
            "claims": {c: {**v, "levels": {lv: [_override(k, x) for k, x in ov.items()]     # KEY=VALUE, as --set
                                           for lv, ov in v["levels"].items()}} for c, v in sw.claims.items()},
            "resources": sw.resources,
            "scheduler": sw.scheduler, "trials": [asdict(t) for t in sw.trials], "launches": launches,
            "wall_seconds": round(sum(x["wall_seconds"] for x in launches), 1)}
    atomic_write_text(path, json.dumps(info, indent=2, default=str) + "\n")
    return info


# --- the results table ---------------------------------------------------------------------------

def state_text(rec: dict, run_dir=None) -> str:
    """A trial's state in words: ok, stopped early at phase N (by), failed: error, running, interrupted, pending."""
    st = rec.get("state")
    if st == "ok":
        return "ok"
    if st == "stopped":
        return f"stopped early at phase {rec.get('phase')} ({rec.get('stopped_by', 'scheduler')})"
    if st == "failed":
        return f"failed: {rec.get('error')}"
    if st == "running":
        return "running" if run_dir is not None and is_locked(run_dir) else "interrupted"
    return "pending"


def _cell(v):
    """A config value for the table: scalars as they are, anything else as one line of YAML."""
    return v if isinstance(v, (str, int, float, bool)) or v is None else _yaml(v)


def table(sw: Sweep, out=None) -> pd.DataFrame:
    """One row per trial: its name and group, one column per axis, the params that differ between trials (dotted
    keys), its state, every gate's decision (from notebook 06, else from the phase's criteria), each phase's
    validation RMSE, compare.table's headline scores, the notebooks' total seconds and the run directory."""
    out = sweep_dir(sw, out)
    flat = [_compare.flatten({k: v for k, v in _params.load(sw.base, t.overrides).items()
                              if k not in _compare.NOT_PARAMS}) for t in sw.trials]
    varying = [k for k in flat[0] if k not in sw.axes and len({_yaml(f.get(k)) for f in flat}) > 1]
    dirs = {t.name: out / t.name for t in sw.trials}
    have = [t.name for t in sw.trials if (dirs[t.name] / "metrics.json").is_file()]
    scores = _compare.table([dirs[n] for n in have]).set_index("run") if have else pd.DataFrame()
    later_gates = [g for g in _compare.GATE_ORDER if g not in GATE_OF_PHASE.values()]     # gate3 (notebook 07)
    rows = []
    for t, f in zip(sw.trials, flat):
        rd = dirs[t.name]
        m = read_metrics(rd)
        row = {"trial": t.name, "group": t.group, **{a: _cell(t.config[a]) for a in sw.axes},
               **{k: _cell(f.get(k)) for k in varying}, "state": state_text(read_trial(rd), rd)}
        s = scores.loc[str(rd)] if str(rd) in scores.index else None
        for n, g in GATE_OF_PHASE.items():
            crit = ((m.get("phases") or {}).get(f"phase{n}") or {}).get("criteria") or {}
            v = s[g] if s is not None and g in s and s[g] != _compare.MISSING else None
            row[g] = v or crit.get("decision") or _compare.MISSING
        for g in later_gates:
            row[g] = s[g] if s is not None and g in s else _compare.MISSING
        for n in range(1, 5):
            r = phase_result(m, n)
            row[f"phase{n}.val_rmse"], row[f"phase{n}.val_kl"] = r["val_rmse"], r["val_kl"]
        row["method"] = s["method"] if s is not None else _compare.MISSING
        row.update({k: _num(s[k]) if s is not None and k in s else np.nan for k in HEADLINE})
        row["seconds"] = sum(_num(x.get("seconds")) for x in (m.get("status") or {}).values()
                             if _number(x.get("seconds"))) if m else np.nan
        row["overrides"] = "; ".join(t.overrides)
        row["run_dir"] = str(rd)
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in df.columns:                              # parquet needs one type per column
        kinds = {type(v) for v in df[c] if v is not None and not (isinstance(v, float) and np.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[c] = df[c].map(lambda v: v if isinstance(v, str) else _yaml(v))
    return df


MD_SCORES = ["phase4.val_rmse", "rmse", "cal rmse", "ci_violation", "cal ci_violation", "coverage_p05",
             "coverage_p95", "crps", "dm vs econometric", "dm p", "seconds"]      # results.md; the parquet has all
MD_SUMMARY = ["rmse", "cal rmse", "ci_violation", "cal ci_violation", "crps", "phase4.val_rmse"]


def summary_markdown(df: pd.DataFrame, metrics=None) -> str:
    """Mean +- sd across seeds per group, as a markdown table."""
    s = seed_summary(df, metrics or MD_SUMMARY)
    if s.empty:
        return "(no finished trials)\n"
    cols = ["group", "seeds"] + [c for c in s.columns if c.endswith(" mean +- sd")]
    return _compare.to_markdown(s[cols].rename(columns=lambda c: c.removesuffix(" mean +- sd")))


def write_results(df: pd.DataFrame, out: Path, sw: Sweep, info: dict | None = None) -> tuple[Path, Path]:
    """out/results.parquet (the table, every column) and out/results.md (a header, mean +- sd per group and the
    trials with their gates and main scores)."""
    import io
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "results.parquet", buf.getvalue())
    lead = ["trial"] + [c for c in df.columns[2:df.columns.get_loc("state")]]        # axes and varying params
    cols = [*lead, "state", *GATE_OF_PHASE.values(), "gate3", *MD_SCORES]
    shown = df[[c for c in cols if c in df.columns]]
    launches = (info or {}).get("launches", [])
    wall = (f"; wall time {launches[-1]['wall_seconds'] / 60:.1f} min"
            + (f" ({info['wall_seconds'] / 60:.1f} min over {len(launches)} launches)" if len(launches) > 1 else "")
            if launches else "")
    base = sw.base.relative_to(ROOT) if sw.base.is_relative_to(ROOT) else sw.base
    head = [f"# Sweep {sw.name}", "", *([sw.description.strip(), ""] if sw.description.strip() else []),
            f"Base params `{base}`; metric `{sw.metric}` ({sw.mode}); scheduler {sw.scheduler['type']}; "
            f"{len(df)} trials{wall}.", "",
            "## Mean +- sd across seeds per configuration", "", summary_markdown(df).rstrip(), "",
            "## Trials", "", _compare.to_markdown(shown).rstrip(), ""]
    atomic_write_text(out / "results.md", "\n".join(head) + "\n")
    return out / "results.parquet", out / "results.md"


# --- analysis (notebooks/10_sweep.ipynb) ------------------------------------------------------------

SUMMARY_METRICS = ["rmse", "cal rmse", "coverage_p05", "coverage_p95", "ci_violation", "cal ci_violation",
                   "pinball_mean", "interval_score", "crps", "dm vs econometric", "phase4.val_rmse"]


def load_results(sweep_dir) -> pd.DataFrame:
    """The results table of a sweep directory (empty without one); df.attrs['sweep'] holds sweep.json."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "results.parquet"
    df = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["trial", "group", "state", "run_dir"])
    info = sweep_dir / "sweep.json"
    df.attrs["sweep"] = json.loads(info.read_text()) if info.is_file() else {}
    return df


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran to the end."""
    return df[df["state"] == "ok"]


def seed_summary(df: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Per group (a configuration: every axis but the seed), over its finished trials: the number of seeds and,
    per metric, mean, sd (ddof 1; NaN with one seed) and 'mean +- sd' as text. Sorted by the first metric."""
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in df.columns]
    ok = finished(df)
    if ok.empty or not metrics:
        return pd.DataFrame(columns=["group", "seeds"])
    rows = []
    for g, d in ok.groupby("group", sort=False):
        row = {"group": g, "seeds": len(d)}
        for m in metrics:
            x = pd.to_numeric(d[m], errors="coerce").dropna()
            mean, sd = (x.mean(), x.std(ddof=1)) if len(x) else (np.nan, np.nan)
            row[f"{m} mean"], row[f"{m} sd"] = mean, sd
            row[f"{m} mean +- sd"] = "-" if not len(x) else f"{mean:.4g} +- {sd:.2g}" if len(x) > 1 else f"{mean:.4g}"
        rows.append(row)
    return pd.DataFrame(rows).sort_values(f"{metrics[0]} mean", kind="stable").reset_index(drop=True)


def _pairs(df: pd.DataFrame, axis: str, a, b, axes) -> list[tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """[(other axes' values, trials at axis=a, trials at axis=b)] for each configuration of the other non-seed
    axes, the two frames indexed by seed and holding the same seeds in the same order (finished trials only)."""
    others = [x for x in axes if x not in (axis, "seed")]
    ok = finished(df)
    key = "seed" if "seed" in ok.columns else None
    out = []
    groups = ok.groupby(others, sort=False) if others else [((), ok)]
    for vals, d in groups:
        vals = vals if isinstance(vals, tuple) else (vals,)
        da, db = d[d[axis] == a], d[d[axis] == b]
        idx_a = da.set_index(key) if key else da.reset_index(drop=True)
        idx_b = db.set_index(key) if key else db.reset_index(drop=True)
        common = [s for s in idx_a.index if s in idx_b.index]
        if common:
            out.append((dict(zip(others, vals)), idx_a.loc[common], idx_b.loc[common]))
    return out


def axis_levels(df: pd.DataFrame, axis: str) -> list:
    return list(dict.fromkeys(df[axis])) if axis in df.columns else []


def _compared(df: pd.DataFrame, axis: str, a, b, axes) -> tuple[list, object, object]:
    """The sweep's axes (from sweep.json unless given) and the two levels of `axis` compared (its first two unless
    given)."""
    lv = axis_levels(df, axis)
    return (axes or df.attrs.get("sweep", {}).get("axes") or [axis], lv[0] if a is None and lv else a,
            lv[1] if b is None and len(lv) > 1 else b)


def paired_by_seed(df: pd.DataFrame, axis: str, metric: str = "rmse", a=None, b=None, axes=None) -> pd.DataFrame:
    """Level b against level a of `axis` on `metric`, trials paired by seed (and every other axis equal): per
    configuration of the other axes, the mean of each, the mean and sd of the per-seed differences b - a, the
    paired t statistic and its two-sided p-value (n - 1 df). The noise is the seed-to-seed spread of the
    difference: a gap smaller than what reseeding moves it by is not significant."""
    from scipy import stats
    axes, a, b = _compared(df, axis, a, b, axes)
    rows = []
    for others, da, db in _pairs(df, axis, a, b, axes):
        xa, xb = pd.to_numeric(da[metric], errors="coerce"), pd.to_numeric(db[metric], errors="coerce")
        d = (xb - xa).dropna()
        n = len(d)
        sd = d.std(ddof=1) if n > 1 else np.nan
        t = d.mean() / (sd / np.sqrt(n)) if n > 1 and sd > 0 else np.nan
        p = 2 * stats.t.sf(abs(t), n - 1) if np.isfinite(t) else np.nan
        rows.append({**others, "a": a, "b": b, "seeds": n, f"{metric} a": xa.mean(), f"{metric} b": xb.mean(),
                     "diff b - a": d.mean(), "sd of diff": sd, "t": t, "p": p, "b better in": int((d < 0).sum())})
    return pd.DataFrame(rows)


def daily_losses(run_dir, loss: str = "squared", offset: str = "offset_fast") -> dict:
    """{rolling window: (days,) daily loss} of a run's VAE (at the offset of generation.`offset`: offset_fast or
    offset_ensemble) on the rolling test origins, from its backfill/rolling_*.npz (what notebook 08 wrote):
    'squared', 'pinball' or 'interval'."""
    from . import generate, metrics
    run_dir = Path(run_dir)
    p = yaml.safe_load((run_dir / "params.yaml").read_text())
    o = p["generation"][offset]
    out = {}
    for f in sorted((run_dir / "backfill").glob(f"rolling_*_o{o}.npz"), key=lambda f: int(f.stem.split("_")[1])):
        b = generate.load_backfill(f)
        if b.truth is not None:        # keyed by origin (rolling_<day>): runs with other offsets share the windows
            out[f.stem.rsplit("_o", 1)[0]] = metrics.daily_loss(loss, b.p05, b.p50, b.p95, b.truth)
    return out


def seed_averaged_dm(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int) -> dict:
    """Diebold-Mariano (HLN-corrected, metrics.dm_test) on the seed-averaged loss differential: loss_a, loss_b
    (seeds, T) daily losses of two configurations on the same calendar days, row i of each trained with seed i;
    d_t = mean over seeds of (b - a). Negative: b is better. `horizon` is the path length whose errors are
    correlated, capped at T/2. Also the DM of each seed alone."""
    from . import metrics
    la, lb = np.atleast_2d(np.asarray(loss_a, float)), np.atleast_2d(np.asarray(loss_b, float))
    T = la.shape[1]
    h = max(min(int(horizon), T // 2), 1)
    res = metrics.dm_test((lb - la).mean(0), horizon=h, lags=h - 1)
    per_seed = [metrics.dm_test(lb[i] - la[i], horizon=h, lags=h - 1)["dm"] for i in range(len(la))]
    return {**res, "seeds": len(la), "dm_per_seed": per_seed}


def _stacked_losses(frames: list[pd.DataFrame], loss: str,
                    offset: str = "offset_fast") -> tuple[list[np.ndarray], int]:
    """Daily losses of the trials of each frame (run_dir column) on the rolling windows all of them share, averaged
    per calendar day over the windows covering it (`metrics.by_calendar_day`: each day counted once):
    [(trials, U)] in the frames' row order, and the pass length (generation.horizon, the longest of the frames':
    the span over which a path forecast's errors stay correlated, the DM test's horizon)."""
    from . import metrics
    per = [[daily_losses(r, loss, offset) for r in f["run_dir"]] for f in frames]
    common = set.intersection(*(set(d) for ds in per for d in ds)) if per and per[0] else set()
    names = sorted(common, key=lambda w: int(w.split("_")[1]))
    if not names:
        return [], 0
    horizon = max(int(yaml.safe_load((Path(f["run_dir"].iloc[0]) / "params.yaml").read_text())["generation"]["horizon"])
                  for f in frames)
    starts = [int(w.split("_")[1]) for w in names]
    return [np.stack([metrics.by_calendar_day(starts, [d[w] for w in names])[1] for d in ds]) for ds in per], horizon


def dm_by_seed(df: pd.DataFrame, axis: str, a=None, b=None, loss: str = "squared", axes=None,
               offset: str = "offset_fast") -> pd.DataFrame:
    """Level b against level a of `axis`, per configuration of the other axes: DM on the seed-averaged per-calendar-
    day loss differential over the rolling test origins (seeds paired), and the DM of each seed alone, so the
    reading shows both the day-to-day evidence and how much it moves with the seed. `offset`: the backfills of
    generation.offset_fast (the default) or generation.offset_ensemble."""
    axes, a, b = _compared(df, axis, a, b, axes)
    rows = []
    for others, da, db in _pairs(df, axis, a, b, axes):
        stacks, horizon = _stacked_losses([da, db], loss, offset)
        if not horizon:
            continue
        la, lb = stacks
        r = seed_averaged_dm(la, lb, horizon)
        rows.append({**others, "a": a, "b": b, "seeds": r["seeds"], "loss": loss, "days": r["days"],
                     "mean loss diff b - a": r["mean_loss_diff"], "dm": r["dm"], "p": r["p_value"],
                     "dm per seed": ", ".join(f"{x:.2f}" for x in r["dm_per_seed"])})
    return pd.DataFrame(rows)


def config_mcs(df: pd.DataFrame, loss: str = "squared", size: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Model Confidence Set (metrics.model_confidence_set) over the groups, each group's loss the mean over its
    seeds of the per-calendar-day loss on the rolling origins all trials share; block length one pass (capped at
    half the days). {group, mean loss, in_set, p_value}."""
    from . import metrics
    ok = finished(df)
    groups = list(dict.fromkeys(ok["group"]))
    if len(groups) < 2:
        return pd.DataFrame(columns=["group", "mean loss", "in set", "p"])
    stacks, horizon = _stacked_losses([ok[ok["group"] == g] for g in groups], loss)
    if not horizon:
        return pd.DataFrame(columns=["group", "mean loss", "in set", "p"])
    losses = {g: s.mean(0) for g, s in zip(groups, stacks)}
    block = max(min(horizon, stacks[0].shape[1] // 2), 1)
    res = metrics.model_confidence_set(losses, size=size, block_size=block, seed=seed)
    return pd.DataFrame([{"group": g, "mean loss": float(losses[g].mean()), "in set": res[g]["in_set"],
                          "p": res[g]["p_value"]} for g in groups]).sort_values("mean loss", kind="stable")


def numeric_axes(df: pd.DataFrame) -> list[str]:
    """Axes and varying params with several numeric levels (context length, KL weight, ...), the seed excluded."""
    info = df.attrs.get("sweep", {})
    cand = [c for c in df.columns if c in info.get("axes", []) or "." in c and c.split(".")[0] in _params.SCHEMA]
    return [c for c in dict.fromkeys(cand) if c != "seed" and c not in PHASE_METRICS
            and pd.api.types.is_numeric_dtype(df[c]) and df[c].nunique() > 1]


def by_group_figure(df: pd.DataFrame, metric: str = "rmse"):
    """Each finished trial's metric as a dot per seed, by group, with the group's mean +- sd."""
    import plotly.graph_objects as go
    ok = finished(df)
    s = seed_summary(df, [metric])
    fig = go.Figure()
    if metric in ok.columns:
        fig.add_trace(go.Scatter(x=ok["group"], y=ok[metric], mode="markers", name="one seed",
                                 text=[f"seed {v}" for v in ok.get("seed", ok["trial"])], marker={"size": 8}))
    if not s.empty:
        fig.add_trace(go.Scatter(x=s["group"], y=s[f"{metric} mean"], error_y={"array": s[f"{metric} sd"]},
                                 mode="markers", name="mean +- sd", marker={"symbol": "line-ew-open", "size": 24}))
    fig.update_layout(title=f"{metric} by configuration: each seed, and mean +- sd across seeds",
                      yaxis_title=metric, height=400)
    return fig


def versus_figure(df: pd.DataFrame, x: str, metric: str = "rmse"):
    """metric (mean +- sd across seeds) against a numeric axis x, one line per configuration of the rest."""
    import plotly.graph_objects as go
    ok = finished(df).copy()
    fig = go.Figure()
    if ok.empty or x not in ok.columns or metric not in ok.columns:
        return fig
    rest = [c for c in df.attrs.get("sweep", {}).get("axes", []) if c not in (x, "seed") and c in ok.columns]
    ok["_line"] = ok[rest].astype(str).agg(",".join, axis=1) if rest else "all"
    for line, d in ok.groupby("_line", sort=False):
        g = d.groupby(x)[metric].agg(["mean", "std"]).reset_index()
        fig.add_trace(go.Scatter(x=g[x], y=g["mean"], error_y={"array": g["std"]}, mode="lines+markers", name=line))
    positive = (ok[x] > 0).all()
    fig.update_layout(title=f"{metric} against {x} (mean +- sd across seeds)", xaxis_title=x, yaxis_title=metric,
                      height=380, xaxis_type="log" if positive and ok[x].max() / ok[x].min() > 100 else None)
    return fig


# --- the chapter ---------------------------------------------------------------------------------

def execute_chapter(out, base=None, chapter=None) -> Path:
    """Execute the sweep's chapter with papermill for this sweep directory into out/<chapter>.ipynb: `chapter`, else
    the one sweep.json names (notebooks/11_plan_claims.ipynb for a sweep with claims, 10_sweep.ipynb otherwise: the
    crossed-grid readings of 10 come out empty on a one-factor-at-a-time design)."""
    out = Path(out).resolve()
    if chapter is None:
        info = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").is_file() else {}
        chapter = CLAIMS_CHAPTER if info.get("claims") else CHAPTER
    chapter = Path(chapter)
    dest = out / chapter.name
    tmp = out / f".{chapter.stem}.running.ipynb"
    os.environ["BACKFILL_BATCH"] = "1"
    pipeline.execute_notebook(chapter, tmp, {"params_path": str(base or ""), "run_dir": str(out), "sweep_dir": str(out)})
    os.replace(tmp, dest)
    return dest
