"""Running a sweep's trials as Ray Tune trials, locally (an embedded Ray) or on a cluster (`address`), then its
results table and chapter.

Each trial is `pipeline.run(base, run_dir=<sweep dir>/<trial>, overrides=...)`, which skips finished notebooks and
resumes training from checkpoints/last.pt, and reports every phase's validation RMSE to Tune (time attribute
`phase`) so that ASHA or the plan's gates can stop hopeless trials before the expensive phases. Ray is imported
inside the functions that use it, never when this module is imported.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .. import pipeline
from ..rundir import is_locked, make_run_dir, read_metrics
from .results import (FINAL, phase_result, read_trial, state_text, table, trial_scores, write_info, write_results,
                      write_trial)
from .spec import CHAPTER, CLAIMS_CHAPTER, Sweep, SweepError, is_number, sweep_dir

PHASE_NOTEBOOKS = {name: n for n, name in enumerate(pipeline.NOTEBOOKS[1:5], 1)}       # 02-05 train phases 1-4


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
    tune.report({**final, **phases, **trial_scores(run_dir)})


def _callback(sw: Sweep, out: Path, log, on_trial_end=lambda: None):
    """A Tune callback on the driver: marks trials the scheduler stopped (trial.json state stopped, at the last
    phase they reported), prints one line per finished trial and calls `on_trial_end` after it."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, what):
            self.done += 1
            name = trial.config["trial"]["name"]
            r = trial.last_result or {}
            v = r.get(sw.metric)
            score = f", {sw.metric} {v:.4g}" if is_number(v) and np.isfinite(v) else ""
            log(f"[{self.done}/{len(sw.trials)}] {name}: {what}{score}")
            on_trial_end()

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

    def launch(ended: bool) -> dict:           # this launch's entry of sweep.json, rewritten as it goes
        return {"started": started, "wall_seconds": round(time.time() - t0, 1), "ended": ended}

    def keep_time() -> None:                   # bookkeeping: never worth stopping the trials over
        try:
            write_info(sw, out, launch(False))
        except OSError as e:
            log(f"sweep {sw.name}: could not update sweep.json ({e})")
    write_info(sw, out, launch(False))
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
                                      callbacks=[_callback(sw, out, log, keep_time)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
    finally:
        _shutdown_ray(session, out)
    for t in sw.trials:                   # a killed worker releases its run directory's lock as it exits
        for _ in range(40):
            if address or not is_locked(out / t.name):
                break
            time.sleep(0.25)
    df = table(sw, out)
    info = write_info(sw, out, launch(True))
    wall = info["launches"][-1]["wall_seconds"]
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
