"""The sweep file: reading and validating params/sweeps/*.yaml, expanding it into trials, naming them.

A sweep file names a base params file, a search space over params keys (grid lists and random distributions),
optional `arms` (named bundles of params keys, one grid axis each) and the metric to read. `load` validates it and
expands it into trials up front: every trial's overrides go through `params.load` before anything runs, and a
trial's name (its run directory) is a readable slug of its overrides, so rerunning a sweep finds the same
directories.

A sweep file with `claims:` instead of `arms:` is a one-factor-at-a-time design: one shared reference configuration
(the base params with `set`) and, per claim, levels that each change one factor of it; the trials are the reference
and every level of every claim, crossed with the space (the seeds), never the claims with each other (`_read_claims`).
Its chapter is notebooks/11_plan_claims.ipynb (the analysis in `claims`).

This module imports no other module of the sweep package.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .. import compare as _compare
from .. import params as _params
from ..rundir import ROOT


class SweepError(ValueError):
    """An invalid sweep file; the message names the file and the offending key in one line."""


KEYS = ("name", "description", "base", "set", "arms", "claims", "space", "num_samples", "search_seed", "metric",
        "mode", "resources", "max_concurrent", "scheduler")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
HEADLINE = [*_compare.SCORES, *(f"cal {s}" for s in _compare.SCORES), *(f"{b} rmse" for b in _compare.BASELINES),
            "dm vs econometric", "dm p", *(f"dm{x} vs {b}" for b in _compare.DM_AGAINST for x in ("", " p"))]
# compare.table's score columns (09_evaluation)
PHASE_METRICS = [f"phase{n}.{k}" for n in range(1, 5) for k in ("val_rmse", "val_kl")]   # notebooks 02-05
METRICS = HEADLINE + PHASE_METRICS                                                  # what `metric` may name
SCHEDULERS = {"none": {}, "asha": {"metric": "val_rmse", "grace_period": 1, "reduction_factor": 2},
              "gates": {"stop_on": ["FAIL"]}}
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

def yaml_line(v) -> str:
    """A value as one line of YAML, as --set reads it back: 1.0e-05, [5, 21], standard, true."""
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def override(key: str, value) -> str:
    """'KEY=VALUE' as --set and `params.load` read it: model.kl_weight=1.0e-05."""
    return f"{key}={yaml_line(value)}"


def is_number(v) -> bool:
    """An int or a float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_distribution(where: str, spec) -> None:
    (kind, args), = spec.items()
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(f"{where}: choice needs a non-empty list of values, got {args!r}")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(map(is_number, args)) and args[0] < args[1]):
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
        return hashlib.sha1(yaml_line(v).encode()).hexdigest()[:6]
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
         and all(is_number(v) and v >= 0 for v in res.values()) and res.get("cpu", 1) > 0,
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
             and 1 <= s["grace_period"] <= 4 and is_number(s["reduction_factor"]) and s["reduction_factor"] > 1,
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
    from .. import data as _data
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
                ov = [override(k, v) for k, v in fixed.items()]
                ov += [override(k, v) for k, v in cell_ov.items()]
                ov += [override(k, config[k]) for k in sw.space]
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


def sweep_dir(sw: Sweep, out=None) -> Path:
    """The sweep's directory: `out`, else runs/sweeps/<name>."""
    return Path(out).resolve() if out else SWEEPS_DIR / sw.name
