"""Training the 4-phase curriculum (docs/design.md §2; the phases themselves are in `phases`).

`train_phase(run, n)` trains phase n, resuming from checkpoints/last.pt when it was interrupted and
skipping when checkpoints/phase{n}.pt already exists for the same params. Every epoch logs train and
validation loss, validation RMSE by horizon and CI violations to logs/phase{n}.csv and TensorBoard.
A phase given no epochs (its cumulative mark equals the one before; phase 1: 0) is skipped: its checkpoint is
the model it starts from, under its own key, measured on the phase's windows, and its summary says `skipped`.
"""
from __future__ import annotations

import csv
import io
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, rundir
from .data import window_starts
from .model import CVAE, LossWeights, ModelConfig
from .phases import Series, batch_loss, eval_starts, phase_specs, validate


class TrainingError(RuntimeError):
    pass


def pick_device(p: dict) -> torch.device:
    want = p["model"]["device"]
    if want == "cuda" and not torch.cuda.is_available():
        raise TrainingError("model.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def kernels(device: torch.device) -> dict:
    """The kernel path a phase trained on. Seeded training repeats to the bit on one machine at one thread count,
    but not across instruction sets (on test.yaml the phase-4 weights differ between ATen's AVX2 and AVX-512
    kernels, and between MKL's dispatch paths) nor, at smoke's sizes, across thread counts (phase 1 with one thread
    and with two; test.yaml's small matrices agree): docs/design.md §10. Two runs whose `kernels` differ can be as
    far apart as two seeds; the environment variables that pin a path are recorded where set."""
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"device": "cpu", "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu,
            "threads": torch.get_num_threads(), "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}


def build_model(p: dict, ds, train_span) -> CVAE:
    """A fresh model whose standardisation (and, in the working model, the backbone's level) comes from the training
    split."""
    model = CVAE(ModelConfig.from_params(p, ds.grid))
    i0, i1 = train_span
    s = torch.as_tensor(ds.surface[i0:i1], dtype=torch.float32)
    f = torch.as_tensor(ds.features(p["model"]["rv_halflives"])[i0:i1], dtype=torch.float32)
    model.fit_standardisation(s, f)
    if model.backbone is not None:
        model.backbone.fit(s, f)
    return model


# --- one phase ---------------------------------------------------------------------------------

CSV_FIELDS = ["phase", "epoch", "global_epoch", "train_loss", "val_loss", "val_kl", "val_rmse",
              "val_ci_violation", "seconds", "rmse_by"]


def phase_key(p: dict, ds, number: int) -> str:
    """The key of phase `number`'s checkpoint: the training params and data, the training code
    (rundir.TRAINING_CODE) and the phase. Phase n starts only from a phase n-1 checkpoint with phase_key(n-1),
    so a phase never continues a model trained under other params or code."""
    import hashlib
    from .data import fingerprint
    base = rundir.params_hash(p, rundir.TRAINING_SECTIONS, fingerprint(ds))
    code = rundir.code_fingerprint(rundir.TRAINING_CODE)
    return hashlib.sha256(f"{base}:{code}:{number}".encode()).hexdigest()[:16]


def train_phase(run, number: int, stop_after: int | None = None, progress: bool | None = None) -> dict:
    """Train curriculum phase `number` (1..4) of a run; returns its summary (also in metrics.json).

    Resumes from checkpoints/last.pt when it belongs to this phase and its key (params, data, training code);
    starts from checkpoints/phase{number-1}.pt otherwise, which must carry phase number-1's key. `stop_after` ends after that many epochs of the phase
    (for tests of resuming), without writing the phase checkpoint. A phase with no epochs (`is_skipped`) trains
    nothing: its checkpoint is the model it starts from (phase 1: the seeded fresh model) with its own key, and
    its summary (`skipped: True`, epochs 0) measures that model on the phase's windows."""
    from tqdm.auto import tqdm
    from torch.utils.tensorboard import SummaryWriter

    p, ds, run_dir = run.params, run.data, Path(run.run_dir)
    spec = phase_specs(p)[number - 1]
    h = phase_key(p, ds, number)
    ck_dir, log_dir = run_dir / "checkpoints", run_dir / "logs"
    ck_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    final = ck_dir / f"phase{number}.pt"
    ck = checkpoint.load_if_safe(final)
    if ck is not None and ck.get("params_hash") == h:
        return ck["summary"]

    device = pick_device(p)
    C, t = p["model"]["context_len"], p["training"]
    w = LossWeights.from_params(p)
    series = Series.from_dataset(ds, device, p["model"]["rv_halflives"])
    grid = (ds.maturities, ds.moneyness)
    train_st = window_starts(run.splits["train"], spec.window)
    val_st = eval_starts(run.splits["val"], spec.window, t["max_val_windows"])
    if len(train_st) == 0 or len(val_st) == 0:
        raise TrainingError(f"phase {number}: no {spec.window}-day window fits the "
                            f"{'training' if len(train_st) == 0 else 'validation'} split")

    rundir.seed_everything(p["seed"] * 1000 + number)     # independent of what ran before
    model = build_model(p, ds, run.splits["train"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t["learning_rate"])
    start_epoch, history = 0, []
    last = ck_dir / "last.pt"
    resumed = False
    ck = checkpoint.load_if_safe(last, device)
    if ck is not None and ck.get("params_hash") == h and ck.get("phase") == number:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history = ck["epoch"], ck["history"]
        checkpoint.set_rng_state(ck["rng"])
        resumed = True
    if not resumed and number > 1:
        prev = ck_dir / f"phase{number - 1}.pt"
        if not prev.exists():
            raise TrainingError(f"phase {number} needs {prev}: run phase {number - 1} first")
        ck = checkpoint.load(prev, device)
        if ck.get("params_hash") != phase_key(p, ds, number - 1):
            raise TrainingError(f"phase {number} needs {prev} trained under these params and this code, but it was "
                                f"trained under others: run phase {number - 1} again first")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    base_epoch = [0, t["phase1_epochs"], t["phase2_epochs"], t["phase3_epochs"]][number - 1]

    csv_path = log_dir / f"phase{number}.csv"
    skipped = spec.epochs == 0
    if skipped:                                        # an empty log, not an earlier configuration's
        _write_csv(csv_path, [])
    writer = SummaryWriter(str(log_dir / "tensorboard")) if not skipped else None
    progress = rundir.show_progress() if progress is None else progress
    bar = tqdm(range(start_epoch, spec.epochs), desc=f"phase {number} ({spec.name})", disable=not progress,
               initial=start_epoch, total=spec.epochs)
    use_bf16 = t["bf16"] and device.type == "cuda"
    t_phase = time.time() - sum(r["seconds"] for r in history)
    every = t["validate_every"]
    for epoch in bar:
        t0 = time.time()
        model.train()
        g = np.random.default_rng([p["seed"], number, epoch])
        starts = g.permutation(train_st)
        if t["max_train_windows"] is not None:
            starts = starts[:t["max_train_windows"]]
        losses = train_epoch(model, opt, spec, series, starts, g, C, w, grid, t, use_bf16)    # (batches, 2)
        bad = np.flatnonzero(~np.isfinite(losses).all(1))
        if bad.size:
            what = "loss" if not np.isfinite(losses[bad[0], 0]) else "gradient norm"
            raise TrainingError(f"phase {number}, epoch {epoch + 1}, batch {bad[0] + 1}: {what} is "
                                f"{losses[bad[0], 0 if what == 'loss' else 1]}; stopped, last good checkpoint kept at {last}")
        row = {"phase": number, "epoch": epoch + 1, "global_epoch": base_epoch + epoch + 1,
               "train_loss": float(np.mean(losses[:, 0]))}
        if (epoch + 1) % every == 0 or epoch + 1 == spec.epochs:      # validation every k epochs, and the last
            ev = validate(model, spec, series, val_st, p)
            row.update({"val_loss": ev["loss"], "val_kl": ev["kl"],
                        "val_rmse": ev["rmse_by_horizon"][spec.horizons[-1]] if spec.kind != "ar" else ev["rmse"],
                        "val_ci_violation": (ev["ci_by_horizon"][spec.horizons[-1]] if spec.kind != "ar"
                                             else ev["ci_violation"]),
                        "rmse_by": ev["rmse_by_horizon"] if spec.kind != "ar" else
                        {o: ev[f"offset_{o}"]["rmse_by_pass"] for o in spec.offsets}})
        else:
            row.update({k: float("nan") for k in ("val_loss", "val_kl", "val_rmse", "val_ci_violation")}, rmse_by={})
        row["seconds"] = time.time() - t0
        history.append(row)
        for k in ("train_loss", "val_loss", "val_kl", "val_rmse", "val_ci_violation"):
            if np.isfinite(row[k]):
                writer.add_scalar(f"phase{number}/{k}", row[k], row["global_epoch"])
        _write_csv(csv_path, history)
        checkpoint.save(last, {"phase": number, "epoch": epoch + 1, "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "rng": checkpoint.rng_state(), "history": history,
                     "params_hash": h, "model_config": model.cfg.to_dict()})
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}",
                        rmse=f"{row['val_rmse']:.4f}")
        if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
            writer.close()
            return {"stopped_after": epoch + 1}
    if writer is not None:
        writer.close()
    seconds = time.time() - t_phase

    train_eval_st = eval_starts(run.splits["train"], spec.window, t["max_val_windows"])
    ev_train = validate(model, spec, series, train_eval_st, p)
    ev_val = validate(model, spec, series, val_st, p)
    summary = {"name": spec.name, "epochs": spec.epochs, "seconds": round(seconds, 2), "device": str(device),
               "final_train_loss": history[-1]["train_loss"] if history else None,
               "final_val_loss": history[-1]["val_loss"] if history else None,
               "train_eval": ev_train, "val_eval": ev_val, "skipped": skipped, "kernels": kernels(device)}
    checkpoint.save(final, {"phase": number, "model": model.state_dict(), "optimizer": opt.state_dict(),
                  "params_hash": h, "model_config": model.cfg.to_dict(), "summary": summary,
                  "history": history})
    return summary


def train_epoch(model, opt, spec, series, starts, g, C: int, w, grid, t: dict, use_bf16: bool) -> np.ndarray:
    """One epoch of optimiser steps over the windows starting at `starts` (batches of the params' size), without a
    host sync inside it: the start days go to the device once and each batch is gathered there by index, and each
    step's loss and gradient norm stay on the device until the epoch ends (a GPU step at this model size is bound by
    launches and syncs, not by arithmetic). `g` draws each batch's offset, as a step-by-step loop would, so the steps
    and their results are the same. Returns (batches, 2): loss and gradient norm per step, float64; a non-finite
    value there means the epoch's later steps must not be trusted (the caller stops and keeps the last checkpoint)."""
    dev = series.surface.device
    idx = torch.as_tensor(np.asarray(starts), device=dev)
    out = []
    for b0 in range(0, len(starts), t["batch_size"]):
        x, a = series.windows(idx[b0:b0 + t["batch_size"]], spec.window)
        offset = int(g.choice(spec.offsets)) if spec.offsets else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = batch_loss(model, spec, x, a, C, w, offset, grid, t["returns"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        opt.step()
        out.append(torch.stack([loss.detach().float(), gnorm.detach().float()]))
    return torch.stack(out).double().cpu().numpy() if out else np.zeros((0, 2))


def _write_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    wr.writeheader()
    for r in history:
        wr.writerow({k: (r[k] if k != "rmse_by" else repr(r[k])) for k in CSV_FIELDS})
    rundir.atomic_write_text(path, buf.getvalue())


def read_history(run_dir, number: int):
    """The per-epoch log of a phase as a DataFrame."""
    import pandas as pd
    path = Path(run_dir) / "logs" / f"phase{number}.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=CSV_FIELDS)


def phase_record(summary: dict) -> dict:
    """The `phases` entry of metrics.json for one phase summary."""
    va, tr = summary["val_eval"], summary["train_eval"]
    rec = {k: summary[k] for k in ("name", "epochs", "seconds", "device", "final_train_loss", "final_val_loss")}
    rec["skipped"] = bool(summary.get("skipped"))
    rec["kernels"] = summary.get("kernels")          # None: a checkpoint written before it was recorded
    rec["val_kl"], rec["train_kl"] = va.get("kl"), tr.get("kl")
    rec["val_context_beta"] = va.get("context_beta")
    rec["val_context_beta_truth"] = va.get("context_beta_truth")
    if "rmse_by_horizon" in va:
        rec.update(val_rmse_by_horizon=va["rmse_by_horizon"], val_ci_violation_by_horizon=va["ci_by_horizon"],
                   val_persistence_rmse_by_horizon=va["persistence_rmse_by_horizon"],
                   train_rmse_by_horizon=tr["rmse_by_horizon"], train_ci_violation_by_horizon=tr["ci_by_horizon"])
    else:
        rec.update(val_rmse=va["rmse"], val_ci_violation=va["ci_violation"], train_rmse=tr["rmse"],
                   val_by_offset={k: v for k, v in va.items() if k.startswith("offset_")})
    return rec


def is_skipped(p: dict, number: int) -> bool:
    """Whether curriculum phase `number` (1..4) trains no epoch: its cumulative mark equals the one before it (phase 1:
    phase1_epochs is 0). Its checkpoint is then the model it starts from."""
    return phase_specs(p)[number - 1].epochs == 0


def skip_note(p: dict, number: int) -> str | None:
    """A line saying that phase `number` is skipped and what stands in for it, or None when it trains."""
    if not is_skipped(p, number):
        return None
    t = p["training"]
    marks = ", ".join(str(t[f"phase{n}_epochs"]) for n in range(1, 5))
    start = "the freshly initialised model (seeded as phase 1 would be)" if number == 1 else \
        f"the model phase {number - 1} ended with"
    return (f"Phase {number} is skipped: the epoch marks ({marks}, cumulative) give it no epoch. Its checkpoint is "
            f"{start}, measured below on this phase's windows; its criteria read SKIPPED.")


def is_full_plan(p: dict) -> bool:
    """True when the params train to the full plan (params.FULL_PLAN): its epochs, learning rate, batch
    size, context, all windows."""
    from .params import FULL_PLAN
    for key, want in FULL_PLAN.items():
        section, name = key.split(".")
        if p[section][name] != want:
            return False
    return True
