"""`python -m backfill bench`: training throughput per phase at the full model size, to JSON; and
`python -m backfill bench --full-run`: the whole curriculum trained on this machine's device, with a record of it.

Times forward + backward + optimiser step on batches of real windows of the default data (the
params' batch size, 32 in full.yaml) after warm-up batches, projects the whole curriculum's
training time from the full plan's epochs and window counts, and times a 1000-sample 1-year backfill.
`full_run` executes notebooks 01-05 (data and the four phases) into a run directory on the device (a GPU box) and
writes record.json beside them (commit, device, torch and CUDA versions, wall time per phase); the generation and
evaluation notebooks then run anywhere, a CPU included, from those checkpoints:
`python -m backfill run PARAMS --run-dir DIR --from 06`.
"""
from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from . import data, params, phases, rundir, train
from .model import LossWeights


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_phase(model, spec, series, starts, p, steps: int, device) -> dict:
    """Median seconds per training batch of one phase (offset cycling through the phase's list)."""
    C, w, bs = p["model"]["context_len"], LossWeights.from_params(p), p["training"]["batch_size"]
    grid = (series.maturities, series.moneyness)
    opt = torch.optim.Adam(model.parameters(), lr=p["training"]["learning_rate"])
    use_bf16 = p["training"]["bf16"] and device.type == "cuda"
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 2):                          # two warm-up batches
        x, a = series.windows(rng.choice(starts, bs), spec.window)
        offset = spec.offsets[i % len(spec.offsets)] if spec.offsets else None
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = phases.batch_loss(model, spec, x, a, C, w, offset, grid, p["training"]["returns"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {"seconds_per_batch_median": sec, "windows_per_second": bs / sec, "batches_timed": steps,
            "window_days": spec.window}


def time_epochs(p: dict, ds, epochs: int) -> dict:
    """Seconds per real epoch of phase 1 (every training window, per-epoch validation included), run through
    `train.train_phase` in a temporary run directory: what the projection above leaves out."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        run = rundir.Run(p, ds, Path(tmp), data.splits(ds, p))
        train.train_phase(run, 1, stop_after=epochs, progress=False)
        hist = train.read_history(tmp, 1)
    sec = [float(x) for x in hist["seconds"]]
    return {"phase": 1, "epochs": len(sec), "seconds_per_epoch": sec,
            "median_seconds_per_epoch": float(np.median(sec)) if sec else None}


def main(params_path="params/full_working.yaml", out="runs/bench.json", steps: int = 5, epochs: int = 0) -> dict:
    p = params.load(params_path)
    ds = data.load_for(p)
    device = train.pick_device(p)
    sp = data.splits(ds, p)
    series = phases.Series.from_dataset(ds, device, p["model"]["rv_halflives"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = {"params": str(params_path), "profile": p["profile"], "device": str(device),
              "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor()
              or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch_size": p["training"]["batch_size"], "phases": {}}
    rundir.seed_everything(p["seed"])
    model = train.build_model(p, ds, sp["train"]).to(device)
    n_params = sum(t.numel() for t in model.parameters())
    result["model_parameters"] = n_params
    total = 0.0
    for spec in phases.phase_specs(p):
        starts = data.window_starts(sp["train"], spec.window)
        r = time_phase(model, spec, series, starts, p, steps, device)
        n_windows = len(starts) if p["training"]["max_train_windows"] is None else \
            min(len(starts), p["training"]["max_train_windows"])
        r["train_windows_per_epoch"] = n_windows
        r["epochs"] = spec.epochs
        r["projected_training_seconds"] = spec.epochs * n_windows / r["windows_per_second"]
        total += r["projected_training_seconds"]
        result["phases"][f"phase{spec.number}"] = r
        print(f"phase {spec.number} ({spec.name}): {r['windows_per_second']:.0f} windows/s, "
              f"projected {r['projected_training_seconds'] / 60:.1f} min for {spec.epochs} epochs")
    result["projected_training_minutes"] = total / 60
    result["projection_note"] = ("training batches only; per-epoch validation adds to it")
    from . import generate
    result["generation"] = generate.bench(p, ds, device)
    if epochs:
        result["phase1_epochs"] = time_epochs(p, ds, epochs)
    result["peak_memory_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                                else _peak_rss_mb())
    result["peak_memory_kind"] = "CUDA allocated" if device.type == "cuda" else "process max RSS"
    rundir.atomic_write_text(Path(out), json.dumps(rundir.jsonable(result), indent=2) + "\n")
    print(f"projected full curriculum: {result['projected_training_minutes']:.1f} min on {result['device']}; "
          f"written to {out}")
    return result


def full_run(params_path="params/full_working.yaml", run_dir=None, overrides=(), log=print) -> int:
    """Train the whole curriculum of `params_path` (notebooks 01-05) into `run_dir` (default
    runs/full_run/<profile>) on this machine's device, then write run_dir/record.json: the commit, the device's name,
    the torch and CUDA versions, the wall time of each phase and of the whole run. 0 on success, else the failed
    run's status (its notebooks say why)."""
    from . import pipeline
    p = params.load(params_path, overrides)
    run_dir = Path(run_dir or Path("runs") / "full_run" / p["profile"])
    t0 = time.time()
    for nb in pipeline.TRAINING_NOTEBOOKS:
        rc = pipeline.run(params_path, only=nb[:2], run_dir=run_dir, overrides=overrides, log=log)
        if rc:
            return rc
    record = write_record(run_dir, params_path, wall_seconds=time.time() - t0)
    log(f"full run: {record['training_seconds'] / 60:.1f} min of training on {record['device_name']}; record in "
        f"{run_dir / 'record.json'}; next, on any machine: python -m backfill run {params_path} --run-dir {run_dir} "
        f"--from 06")
    return 0


def write_record(run_dir, params_path, wall_seconds: float) -> dict:
    """run_dir/record.json: what a full run of the curriculum ran on and how long each phase took (from its
    metrics.json), so that its results can be traced and its speed compared (the plan quotes 12 h on an A100)."""
    m = rundir.read_metrics(run_dir)
    cuda = torch.cuda.is_available()
    ph = {name: {"epochs": r.get("epochs"), "seconds": r.get("seconds"), "device": r.get("device"),
                 "decision": (r.get("criteria") or {}).get("decision")} for name, r in sorted(m.get("phases", {}).items())}
    record = {"params": str(params_path), "profile": m.get("profile"), **rundir.provenance(),
              "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
              "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
              "cudnn": torch.backends.cudnn.version() if cuda else None, "phases": ph,
              "training_seconds": float(sum(r["seconds"] or 0 for r in ph.values())),
              "wall_seconds": round(float(wall_seconds), 1)}
    rundir.atomic_write_text(Path(run_dir) / "record.json", json.dumps(rundir.jsonable(record), indent=2) + "\n")
    return record
