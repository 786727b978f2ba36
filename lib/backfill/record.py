"""Results of record: a full run of the curriculum, trained where a GPU is (`bench --full-run`), kept in the
repository as results/<profile>/, and the generation and evaluation of a run on any machine from it.

    python -m backfill record runs/full_run/full_working              -> results/full_working/
    python -m backfill run params/full_working.yaml --checkpoint results/full_working   (notebooks 06 on)

A record holds the run's params.yaml (with its provenance), metrics.json, record.json (device, versions, wall time
per phase) and the four phase checkpoints' weights (no optimiser state: about 2 MB each at the plan's model size).
Notebook 06 re-judges every gate from them, so all four are kept. A run seeded from a record is refused in one line
when the record's model does not fit the params (a model field or the grid differs), and its book gets a page
saying what the record ran on and whether the training code has changed since."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from . import rundir
from .pipeline import TRAINING_NOTEBOOKS

PHASES = (1, 2, 3, 4)
KEPT = ("phase", "model", "model_config", "params_hash", "summary", "history")   # of a phase checkpoint: not the optimiser


class RecordError(ValueError):
    """A record that cannot be made or used; the message is one line that names the problem."""


def keep(run_dir, out=None) -> Path:
    """Copy a finished full run (notebooks 01-05 ok, record.json written by `bench --full-run`) into `out` (default
    results/<profile>): params.yaml, metrics.json, record.json (with the training code's fingerprint added) and the
    phase checkpoints without optimiser state. Staged beside `out` and renamed into place: an existing record is
    replaced whole or not at all; a folder that is not a record is refused, never overwritten."""
    from . import checkpoint
    run_dir = Path(run_dir)
    m = rundir.read_metrics(run_dir)
    if not m:
        raise RecordError(f"{run_dir} is not a run directory (no metrics.json)")
    status = m.get("status", {})
    unfinished = [n[:2] for n in TRAINING_NOTEBOOKS if status.get(n, {}).get("state") != "ok"]
    if unfinished:
        raise RecordError(f"{run_dir} has not finished training (notebooks {', '.join(unfinished)} not ok); train it "
                          f"with `python -m backfill bench --full-run` first")
    if not (run_dir / "record.json").is_file():
        raise RecordError(f"{run_dir} has no record.json (it is written by `python -m backfill bench --full-run`)")
    out = Path(out or Path("results") / m.get("profile", run_dir.name))
    if out.exists() and not (out / "record.json").is_file():
        raise RecordError(f"{out} exists and is not a record; choose another --out")
    stage, old = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "checkpoints").mkdir(parents=True)
    try:
        for name in ("params.yaml", "metrics.json"):
            shutil.copy2(run_dir / name, stage / name)
        for n in PHASES:
            path = run_dir / "checkpoints" / f"phase{n}.pt"
            if not path.is_file():
                raise RecordError(f"{path} is missing: the run's training is incomplete")
            try:
                ck = checkpoint.load(path)
            except checkpoint.CheckpointError as e:          # the CLI catches RecordError only (it is torch-free)
                raise RecordError(str(e)) from None
            checkpoint.save(stage / "checkpoints" / f"phase{n}.pt", {k: ck[k] for k in KEPT if k in ck})
        rec = json.loads((run_dir / "record.json").read_text())
        rec.update(training_code=rundir.code_fingerprint(rundir.TRAINING_CODE), kept_from=str(run_dir))
        rundir.atomic_write_text(stage / "record.json", json.dumps(rec, indent=2) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def _plain(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg))          # tuples and lists compare equal


def check(record_dir, p: dict, grid: tuple[int, int]) -> dict:
    """The record's record.json after checking that each of its phase checkpoints holds the model these params
    build on this grid; RecordError (one line, the first field that differs) otherwise."""
    from . import checkpoint
    from .model import ModelConfig
    rec = Path(record_dir)
    if not (rec / "record.json").is_file():
        raise RecordError(f"{rec} is not a record (no record.json); make one with `python -m backfill record RUN_DIR`")
    want = _plain(ModelConfig.from_params(p, grid).to_dict())
    for n in PHASES:
        path = rec / "checkpoints" / f"phase{n}.pt"
        if not path.is_file():
            raise RecordError(f"{path} is missing: the record is incomplete")
        try:
            got = _plain(checkpoint.load(path).get("model_config") or {})
        except checkpoint.CheckpointError as e:
            raise RecordError(str(e)) from None
        for k, v in want.items():
            if got.get(k) != v:
                what = "the grid" if k in ("n_maturity", "n_moneyness") else f"model.{k}"
                raise RecordError(f"{path} does not fit these params: {what} is {got.get(k)} in the record and {v} "
                                  f"here; use the record's params ({rec / 'params.yaml'}) or train anew")
    return json.loads((rec / "record.json").read_text())


def seed_run(record_dir, p: dict, ds, run_dir, force: bool = False, log=print, checked: dict | None = None) -> bool:
    """Put a record's phase checkpoints into run_dir/checkpoints (after `check`) and its record.json, with where it
    came from and whether its data is this run's, into run_dir/record.json, so that notebooks 06 on generate and
    evaluate from the recorded model. A run directory holding other phase checkpoints (its own training, another
    record) is refused unless `force`; then its training notebooks are marked superseded. True when a checkpoint
    changed (the notebooks from 06 on must then run again). `checked`: what `check` returned, if the caller ran it."""
    from .data import fingerprint
    rec = dict(checked) if checked is not None else check(record_dir, p, ds.grid)
    run_dir = Path(run_dir)
    new = {n: (Path(record_dir) / "checkpoints" / f"phase{n}.pt").read_bytes() for n in PHASES}
    dest = {n: run_dir / "checkpoints" / f"phase{n}.pt" for n in PHASES}
    changed = [n for n in PHASES if not dest[n].is_file() or dest[n].read_bytes() != new[n]]
    other = [n for n in changed if dest[n].is_file()]
    if other and not force:
        raise RecordError(f"{run_dir} already holds other phase checkpoints ({dest[other[0]]}); seed a new directory "
                          f"(--run-dir) or replace them with --force")
    rp = Path(record_dir) / "params.yaml"
    trained_on = ((yaml.safe_load(rp.read_text()) or {}).get("provenance", {}) if rp.is_file() else {}).get("data_fingerprint")
    rec["same_data"] = trained_on == fingerprint(ds)
    if not rec["same_data"]:
        log(f"note: the record {record_dir} was trained on other data (fingerprint {trained_on}) than this run's; its "
            f"standardisation and backbone are the record's")
    dest[1].parent.mkdir(parents=True, exist_ok=True)
    for n in changed:
        rundir.atomic_write_bytes(dest[n], new[n])
    if other:
        status = rundir.read_metrics(run_dir).get("status", {})
        for name in [n for n in status if n in TRAINING_NOTEBOOKS]:
            status[name] = {"state": "superseded", "by": str(record_dir)}
        rundir.update_metrics(run_dir, status=status)
    rec["record_dir"] = str(Path(record_dir).resolve())
    rundir.atomic_write_text(run_dir / "record.json", json.dumps(rec, indent=2) + "\n")
    log(f"checkpoints of the record {record_dir} (trained {str(rec.get('time', ''))[:10]} on {rec.get('device_name')}, "
        f"commit {str(rec.get('git_commit'))[:10]})")
    return bool(changed)


PLAN_HOURS = 12.0        # the plan (section 9.1): the whole curriculum in about 12 hours on one A100


def page(run_dir) -> str | None:
    """Markdown for the book of a run seeded from a record: what the record ran on, its wall time per phase beside
    the plan's estimate, the plan's phase criteria as the record judged them, and whether the training code has
    changed since (then its checkpoints are not what today's code would train). None for a run without a record."""
    path = Path(run_dir) / "record.json"
    if not path.is_file() or "record_dir" not in (rec := json.loads(path.read_text())):
        return None
    m = rundir.read_metrics(rec["record_dir"])
    rows = []
    for name, ph in sorted(rec.get("phases", {}).items()):
        crit = (m.get("phases", {}).get(name, {}) or {}).get("criteria", {})
        failed = [c["criterion"] for c in crit.get("checks", []) if c.get("mark") not in ("PASS", None)]
        rows.append(f"| {name} | {ph.get('epochs')} | {(ph.get('seconds') or 0) / 60:.1f} | {ph.get('device')} | "
                    f"{ph.get('decision')} | {'; '.join(failed) or '-'} |")
    now = rundir.code_fingerprint(rundir.TRAINING_CODE)
    stale = rec.get("training_code") != now
    lines = [
        "# The full plan (results of record)", "",
        f"This run generated and evaluated from a model trained elsewhere: the record in `{rec['record_dir']}`, "
        f"profile `{rec.get('profile')}`, commit `{rec.get('git_commit')}`{' (with uncommitted changes)' if rec.get('git_dirty') else ''}, "
        f"trained on {rec.get('device_name')} with torch {rec.get('torch')} (CUDA {rec.get('cuda')}) on "
        f"{str(rec.get('time', ''))[:10]}. The chapters that follow (gates, generation, evaluation) ran here, on these "
        f"checkpoints.", "",
        f"The whole curriculum took {rec.get('training_seconds', 0) / 60:.1f} minutes of training "
        f"({rec.get('wall_seconds', 0) / 60:.1f} minutes with data and validation); the plan (section 9.1) estimates "
        f"about {PLAN_HOURS:g} hours on one A100.", "",
        "| phase | epochs | minutes | device | decision (the plan's criteria) | criteria not passed |",
        "|---|---|---|---|---|---|", *rows, "",
        ("**The training code has changed since this record was made** (its fingerprint "
         f"`{rec.get('training_code')}`, today's `{now}`): these checkpoints are what the recorded code trained, not "
         "what today's code would train. Train the plan again on a GPU to renew the record." if stale else
         f"The training code is the record's (fingerprint `{now}`): these checkpoints are what today's code trains."),
    ]
    if not rec.get("same_data", True):
        lines += ["", "**The record was trained on other data than this run's**: its standardisation and linear "
                  "backbone were fitted there; the scores here are out of its sample in that sense too."]
    return "\n".join(lines) + "\n"
