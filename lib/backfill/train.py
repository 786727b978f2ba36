"""The 4-phase curriculum (SPEC section 5): teacher forcing, multi-horizon, AR H60, AR H90.

`train_phase(run, n)` trains phase n, resuming from checkpoints/last.pt when it was interrupted and
skipping when checkpoints/phase{n}.pt already exists for the same params. Every epoch logs train and
validation loss, validation RMSE by horizon and CI violations to logs/phase{n}.csv and TensorBoard.
"""
from __future__ import annotations

import csv
import io
import pickle
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import pipeline
from .data import phase_window_lengths, window_starts
from .model import CVAE, LossWeights, ModelConfig, day_loss
from .rollout import rollout, rollout_loss


class TrainingError(RuntimeError):
    pass


@dataclass
class PhaseSpec:
    number: int
    name: str
    kind: str                   # "tf" (teacher forcing), "mh" (multi-horizon) or "ar" (autoregressive)
    epochs: int
    window: int                 # days per training window
    horizon: int
    horizons: list = field(default_factory=list)   # horizons evaluated (and weighted, for "mh")
    weights: dict = field(default_factory=dict)
    offsets: list = field(default_factory=list)
    steps: int = 1


def phase_specs(p: dict) -> list[PhaseSpec]:
    t = p["training"]
    marks = [0, t["phase1_epochs"], t["phase2_epochs"], t["phase3_epochs"], t["phase4_epochs"]]
    ep = [b - a for a, b in zip(marks, marks[1:])]
    lens = phase_window_lengths(p)
    hs = t["phase2_horizons"]
    return [
        PhaseSpec(1, "teacher forcing H=1", "tf", ep[0], lens["phase1"], 1, [1]),
        PhaseSpec(2, f"multi-horizon H<={max(hs)}", "mh", ep[1], lens["phase2"], max(hs), list(hs),
                  dict(t["phase2_weights"])),
        PhaseSpec(3, f"AR H={t['phase3_horizon']}", "ar", ep[2], lens["phase3"], t["phase3_horizon"],
                  offsets=list(t["phase3_offsets"]), steps=t["phase3_ar_steps"]),
        PhaseSpec(4, f"AR H={t['phase4_horizon']}", "ar", ep[3], lens["phase4"], t["phase4_horizon"],
                  offsets=list(t["phase4_offsets"]), steps=t["phase4_ar_steps"]),
    ]


def pick_device(p: dict) -> torch.device:
    want = p["model"]["device"]
    if want == "cuda" and not torch.cuda.is_available():
        raise TrainingError("model.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


# --- data on device ----------------------------------------------------------------------------

@dataclass
class Series:
    """The whole dataset as tensors, gathered into windows by start index."""
    surface: torch.Tensor       # (N, n_mat, n_mon)
    feats: torch.Tensor         # (N, F)
    maturities: np.ndarray
    moneyness: np.ndarray

    @classmethod
    def from_dataset(cls, ds, device, rv_halflives=()) -> "Series":
        return cls(torch.as_tensor(ds.surface, dtype=torch.float32, device=device),
                   torch.as_tensor(ds.features(rv_halflives), dtype=torch.float32, device=device),
                   ds.maturities, ds.moneyness)

    def windows(self, starts, length: int):
        idx = torch.as_tensor(np.asarray(starts)[:, None] + np.arange(length), device=self.surface.device)
        return self.surface[idx], self.feats[idx]            # (B, L, n_mat, n_mon), (B, L, F)


CHANGE_SCALE_DAYS = 20      # the target space of `target: change` is log changes scaled by their 20-day std


def build_model(p: dict, ds, train_span) -> CVAE:
    """A fresh model whose standardisation comes from the training split."""
    model = CVAE(ModelConfig.from_params(p, ds.grid))
    i0, i1 = train_span
    s = torch.as_tensor(ds.surface[i0:i1], dtype=torch.float32)
    f = torch.as_tensor(ds.features(p["model"]["rv_halflives"])[i0:i1], dtype=torch.float32)
    model.s_mean.copy_(s.mean(0))
    model.s_std.copy_(s.std(0).clamp_min(1e-4))
    model.f_mean.copy_(f.mean(0))
    model.f_std.copy_(f.std(0).clamp_min(1e-6))
    k = min(CHANGE_SCALE_DAYS, max(len(s) // 2, 1))
    model.c_std.copy_((s[k:].log() - s[:-k].log()).std(0).clamp_min(1e-4))
    if model.rv_idx:                                   # the backbone's level: OLS of vol on RV (in vol) per grid point
        rv = torch.exp(f[:, model.rv_idx]).double()
        X = torch.cat([torch.ones(len(rv), 1, dtype=torch.float64), rv], 1)           # (T, 1 + R)
        coef = torch.linalg.solve(X.T @ X, X.T @ s.flatten(1).double())                # (1 + R, G), normal equations
        model.ecm_a.copy_(coef[0])
        model.ecm_b.copy_(coef[1:])
    return model


# --- losses per phase --------------------------------------------------------------------------

def multihorizon_loss(model, out, x, a, C: int, weights: dict, w: LossWeights) -> torch.Tensor:
    """sum_h w_h * loss(days C..C+h-1), all from ONE forward pass with the context fixed at C days."""
    return sum(wh * day_loss(model, out, x, a, slice(C, C + h), w)["loss"] for h, wh in weights.items())


def batch_loss(model, spec: PhaseSpec, x, a, C: int, w: LossWeights, offset: int | None, grid, returns: str,
               with_kl: bool = False):
    """The phase's training loss on a batch of windows x (B, L, n_mat, n_mon), a (B, L, F); with `with_kl`
    also the KL term (to the model's prior, per day, summed over latent dims) of the pass(es) it came from."""
    if spec.kind == "tf":
        out = model(x[:, :C + 1], a[:, :C + 1], C)
        d = day_loss(model, out, x, a, slice(C, C + 1), w)
        loss, kl = d["loss"], d["kl"]
    elif spec.kind == "mh":
        L = C + spec.horizon
        out = model(x[:, :L], a[:, :L], C)
        loss = multihorizon_loss(model, out, x[:, :L], a[:, :L], C, spec.weights, w)
        kl = day_loss(model, out, x[:, :L], a[:, :L], slice(C, L), w)["kl"]
    else:
        loss, steps = rollout_loss(model, x, a, C, spec.horizon, offset, spec.steps, w,
                                   maturities=grid[0], moneyness=grid[1], returns=returns)
        kl = torch.stack([day_loss(model, st["out"], x[:, st["start"] - C:st["start"] + spec.horizon],
                                   a[:, st["start"] - C:st["start"] + spec.horizon], slice(C, C + spec.horizon),
                                   w)["kl"] for st in steps]).mean()
    return (loss, float(kl)) if with_kl else loss


# --- evaluation (point forecast = median at the prior mean, intervals = p05..p95) ---------------

@torch.no_grad()
def evaluate(model, spec: PhaseSpec, series: Series, starts, p: dict, batch: int = 64) -> dict:
    """Forecast metrics on windows: RMSE and CI violations by horizon (tf/mh) or by pass (ar)."""
    from .metrics import ci_violation, rmse
    C, w = p["model"]["context_len"], LossWeights.from_params(p)
    grid, returns = (series.maturities, series.moneyness), p["training"]["returns"]
    was_training = model.training
    model.eval()
    res = {"loss": [], "kl": [], "n_windows": len(starts)}
    offsets = spec.offsets or [None]
    preds = {o: ([], [], [], []) for o in offsets}         # p50, lo, hi, truth per offset
    last_ctx = []                                          # (B, n_mat, n_mon) the last real context day
    for b0 in range(0, len(starts), batch):
        x, a = series.windows(starts[b0:b0 + batch], spec.window)
        last_ctx.append(x[:, C - 1].float().cpu().numpy())
        for o in offsets:
            loss, kl = batch_loss(model, spec, x, a, C, w, o, grid, returns, with_kl=True)
            res["loss"].append(float(loss))
            res["kl"].append(kl)
            if spec.kind == "ar":
                steps = rollout(model, x, a, C, spec.horizon, o, spec.steps, maturities=grid[0],
                                moneyness=grid[1], returns=returns, generate=True, prior_scale=0.0)
                q = torch.stack([s["q"] for s in steps], 1)             # (B, S, H, Q, n_mat, n_mon)
                tr = torch.stack([x[:, s["start"]:s["start"] + spec.horizon] for s in steps], 1)
            else:
                out = model.forecast(x[:, :C], a[:, :C], spec.horizon, a[:, C:C + spec.horizon], prior_scale=0.0)
                q = model.to_vol(out["q"][:, C:], out["anchor"])         # (B, H, Q, n_mat, n_mon)
                tr = x[:, C:C + spec.horizon]
            for lst, v in zip(preds[o], (q[..., model.mid, :, :], q[..., 0, :, :], q[..., -1, :, :], tr)):
                lst.append(v.float().cpu().numpy())
    model.train(was_training)
    res["loss"] = float(np.mean(res["loss"]))
    res["kl"] = float(np.mean(res["kl"]))
    last = np.concatenate(last_ctx)                                              # (N, n_mat, n_mon)
    for o in offsets:
        med, lo, hi, tr = (np.concatenate(v) for v in preds[o])
        # sanity: how much of the context's level does the forecast keep over its horizon? The slope of
        # the forecast's mean level on the last context day's level, across windows, beside the truth's
        lvl = last.mean((1, 2))
        res["context_beta"] = _slope(lvl, med.reshape(len(med), -1).mean(1))
        res["context_beta_truth"] = _slope(lvl, tr.reshape(len(tr), -1).mean(1))
        if spec.kind == "ar":
            naive = np.broadcast_to(last[:, None, None], tr.shape)               # persistence forecast
            by_pass = [rmse(med[:, s], tr[:, s]) for s in range(spec.steps)]
            res[f"offset_{o}"] = {"rmse": rmse(med, tr), "rmse_by_pass": by_pass,
                                  "pass_ratio": by_pass[-1] / by_pass[0] if by_pass[0] > 0 else float("nan"),
                                  "ci_violation": ci_violation(lo, hi, tr),
                                  "persistence_rmse_by_pass": [rmse(naive[:, s], tr[:, s]) for s in range(spec.steps)]}
        else:
            naive = np.broadcast_to(last[:, None], tr.shape)
            res["rmse_by_horizon"] = {h: rmse(med[:, :h], tr[:, :h]) for h in spec.horizons}
            res["ci_by_horizon"] = {h: ci_violation(lo[:, :h], hi[:, :h], tr[:, :h]) for h in spec.horizons}
            res["persistence_rmse_by_horizon"] = {h: rmse(naive[:, :h], tr[:, :h]) for h in spec.horizons}
    if spec.kind == "ar":
        res["rmse"] = float(np.mean([res[f"offset_{o}"]["rmse"] for o in offsets]))
        res["ci_violation"] = float(np.mean([res[f"offset_{o}"]["ci_violation"] for o in offsets]))
    return res


def _slope(x, y) -> float:
    """OLS slope of y on x (nan when x does not vary)."""
    return float(np.polyfit(x, y, 1)[0]) if np.std(x) > 0 else float("nan")


def _eval_starts(span, length, cap):
    """A fixed, evenly spaced subset of at most `cap` windows (stable metrics from epoch to epoch)."""
    st = window_starts(span, length)
    if cap is not None and len(st) > cap:
        st = st[np.linspace(0, len(st) - 1, cap).round().astype(int)]
    return st


# --- checkpoints -------------------------------------------------------------------------------

def _plain(x):
    """Numpy scalars and arrays inside history / summary / config as plain Python (lists for arrays):
    the only kinds besides tensors that torch.load(weights_only=True) accepts."""
    if isinstance(x, dict):
        return {_plain(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return x


def _save(path: Path, obj: dict) -> None:
    """Write a checkpoint atomically; everything but the state dicts is made plain data first."""
    obj = {k: v if k in ("model", "optimizer") else _plain(v) for k, v in obj.items()}
    buf = io.BytesIO()
    torch.save(obj, buf)
    pipeline.atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, device="cpu") -> dict:
    """Read a checkpoint as tensors and plain data only (weights_only): a foreign or tampered file
    cannot run code on load, it is refused."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed|\.\s|$)", str(e), re.M)
        raise TrainingError(f"refused checkpoint {path}: it holds more than tensors and plain data "
                            f"({m.group(1) if m else type(e).__name__}); delete it to retrain") from None


def model_from_checkpoint(path, device="cpu") -> CVAE:
    ck = load_checkpoint(path, device)
    model = CVAE(ModelConfig(**ck["model_config"])).to(device)
    model.load_state_dict(ck["model"])
    return model


def _rng_state() -> dict:
    """torch, numpy (legacy), python and CUDA generator states as tensors and plain data, so that the
    checkpoint loads with weights_only and a resumed run draws the same numbers."""
    kind, key, pos, has_gauss, cached = np.random.get_state()     # key: (624,) uint32
    version, internal, gauss_next = random.getstate()             # internal: 625 ints
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "key": torch.from_numpy(key.copy()), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None}


def _set_rng_state(st: dict) -> None:
    """Restore the states written by _rng_state."""
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state((n["kind"], n["key"].cpu().numpy(), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = st["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


# --- one phase ---------------------------------------------------------------------------------

CSV_FIELDS = ["phase", "epoch", "global_epoch", "train_loss", "val_loss", "val_kl", "val_rmse",
              "val_ci_violation", "seconds", "rmse_by"]


def _load_if_safe(path: Path, device="cpu") -> dict | None:
    """A checkpoint of this phase to reuse, or None: missing, or written by older code that stored more than
    tensors and plain data (it cannot carry today's key either, so the phase trains again)."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, device)
    except TrainingError:
        return None


def phase_key(p: dict, ds, number: int) -> str:
    """The key of phase `number`'s checkpoint: the training params and data, the training code
    (pipeline.TRAINING_CODE) and the phase. Phase n starts only from a phase n-1 checkpoint with phase_key(n-1),
    so a phase never continues a model trained under other params or code."""
    import hashlib
    from .data import fingerprint
    base = pipeline.params_hash(p, pipeline.TRAINING_SECTIONS, fingerprint(ds))
    code = pipeline.code_fingerprint(pipeline.TRAINING_CODE)
    return hashlib.sha256(f"{base}:{code}:{number}".encode()).hexdigest()[:16]


def train_phase(run, number: int, stop_after: int | None = None, progress: bool | None = None) -> dict:
    """Train curriculum phase `number` (1..4) of a run; returns its summary (also in metrics.json).

    Resumes from checkpoints/last.pt when it belongs to this phase and its key (params, data, training code);
    starts from checkpoints/phase{number-1}.pt otherwise, which must carry phase number-1's key. `stop_after` ends after that many epochs of the phase
    (for tests of resuming), without writing the phase checkpoint."""
    from tqdm.auto import tqdm
    from torch.utils.tensorboard import SummaryWriter

    p, ds, run_dir = run.params, run.data, Path(run.run_dir)
    spec = phase_specs(p)[number - 1]
    h = phase_key(p, ds, number)
    ck_dir, log_dir = run_dir / "checkpoints", run_dir / "logs"
    ck_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    final = ck_dir / f"phase{number}.pt"
    ck = _load_if_safe(final)
    if ck is not None and ck.get("params_hash") == h:
        return ck["summary"]

    device = pick_device(p)
    C, t = p["model"]["context_len"], p["training"]
    w = LossWeights.from_params(p)
    series = Series.from_dataset(ds, device, p["model"]["rv_halflives"])
    grid = (ds.maturities, ds.moneyness)
    train_st = window_starts(run.splits["train"], spec.window)
    val_st = _eval_starts(run.splits["val"], spec.window, t["max_val_windows"])
    if len(train_st) == 0 or len(val_st) == 0:
        raise TrainingError(f"phase {number}: no {spec.window}-day window fits the "
                            f"{'training' if len(train_st) == 0 else 'validation'} split")

    pipeline.seed_everything(p["seed"] * 1000 + number)     # independent of what ran before
    model = build_model(p, ds, run.splits["train"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t["learning_rate"])
    start_epoch, history = 0, []
    last = ck_dir / "last.pt"
    resumed = False
    ck = _load_if_safe(last, device)
    if ck is not None and ck.get("params_hash") == h and ck.get("phase") == number:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history = ck["epoch"], ck["history"]
        _set_rng_state(ck["rng"])
        resumed = True
    if not resumed and number > 1:
        prev = ck_dir / f"phase{number - 1}.pt"
        if not prev.exists():
            raise TrainingError(f"phase {number} needs {prev}: run phase {number - 1} first")
        ck = load_checkpoint(prev, device)
        if ck.get("params_hash") != phase_key(p, ds, number - 1):
            raise TrainingError(f"phase {number} needs {prev} trained under these params and this code, but it was "
                                f"trained under others: run phase {number - 1} again first")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    base_epoch = [0, t["phase1_epochs"], t["phase2_epochs"], t["phase3_epochs"]][number - 1]

    writer = SummaryWriter(str(log_dir / "tensorboard"))
    csv_path = log_dir / f"phase{number}.csv"
    progress = pipeline.show_progress() if progress is None else progress
    bar = tqdm(range(start_epoch, spec.epochs), desc=f"phase {number} ({spec.name})", disable=not progress,
               initial=start_epoch, total=spec.epochs)
    use_bf16 = t["bf16"] and device.type == "cuda"
    t_phase = time.time() - sum(r["seconds"] for r in history)
    for epoch in bar:
        t0 = time.time()
        model.train()
        g = np.random.default_rng([p["seed"], number, epoch])
        starts = g.permutation(train_st)
        if t["max_train_windows"] is not None:
            starts = starts[:t["max_train_windows"]]
        losses = []
        for bi, b0 in enumerate(range(0, len(starts), t["batch_size"])):
            x, a = series.windows(starts[b0:b0 + t["batch_size"]], spec.window)
            offset = int(g.choice(spec.offsets)) if spec.offsets else None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss = batch_loss(model, spec, x, a, C, w, offset, grid, t["returns"])
            if not torch.isfinite(loss):
                raise TrainingError(f"phase {number}, epoch {epoch + 1}, batch {bi + 1}: loss is {loss.item()}; "
                                    f"stopped, last good checkpoint kept at {last}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
            if not torch.isfinite(gnorm):
                raise TrainingError(f"phase {number}, epoch {epoch + 1}, batch {bi + 1}: gradient norm is "
                                    f"{gnorm.item()}; stopped, last good checkpoint kept at {last}")
            opt.step()
            losses.append(loss.item())
        ev = evaluate(model, spec, series, val_st, p)
        row = {"phase": number, "epoch": epoch + 1, "global_epoch": base_epoch + epoch + 1,
               "train_loss": float(np.mean(losses)), "val_loss": ev["loss"], "val_kl": ev["kl"],
               "val_rmse": ev["rmse_by_horizon"][spec.horizons[-1]] if spec.kind != "ar" else ev["rmse"],
               "val_ci_violation": (ev["ci_by_horizon"][spec.horizons[-1]] if spec.kind != "ar"
                                    else ev["ci_violation"]),
               "seconds": time.time() - t0,
               "rmse_by": ev["rmse_by_horizon"] if spec.kind != "ar" else
               {o: ev[f"offset_{o}"]["rmse_by_pass"] for o in spec.offsets}}
        history.append(row)
        for k in ("train_loss", "val_loss", "val_kl", "val_rmse", "val_ci_violation"):
            writer.add_scalar(f"phase{number}/{k}", row[k], row["global_epoch"])
        _write_csv(csv_path, history)
        _save(last, {"phase": number, "epoch": epoch + 1, "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "rng": _rng_state(), "history": history,
                     "params_hash": h, "model_config": model.cfg.to_dict()})
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}",
                        rmse=f"{row['val_rmse']:.4f}")
        if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
            writer.close()
            return {"stopped_after": epoch + 1}
    writer.close()
    seconds = time.time() - t_phase

    train_eval_st = _eval_starts(run.splits["train"], spec.window, t["max_val_windows"])
    ev_train = evaluate(model, spec, series, train_eval_st, p)
    ev_val = evaluate(model, spec, series, val_st, p)
    summary = {"name": spec.name, "epochs": spec.epochs, "seconds": round(seconds, 2), "device": str(device),
               "final_train_loss": history[-1]["train_loss"] if history else None,
               "final_val_loss": history[-1]["val_loss"] if history else None,
               "train_eval": ev_train, "val_eval": ev_val}
    _save(final, {"phase": number, "model": model.state_dict(), "optimizer": opt.state_dict(),
                  "params_hash": h, "model_config": model.cfg.to_dict(), "summary": summary,
                  "history": history})
    return summary


def _write_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    wr.writeheader()
    for r in history:
        wr.writerow({k: (r[k] if k != "rmse_by" else repr(r[k])) for k in CSV_FIELDS})
    pipeline.atomic_write_text(path, buf.getvalue())


def read_history(run_dir, number: int):
    """The per-epoch log of a phase as a DataFrame."""
    import pandas as pd
    path = Path(run_dir) / "logs" / f"phase{number}.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=CSV_FIELDS)


def phase_record(summary: dict) -> dict:
    """The `phases` entry of metrics.json for one phase summary."""
    va, tr = summary["val_eval"], summary["train_eval"]
    rec = {k: summary[k] for k in ("name", "epochs", "seconds", "device", "final_train_loss", "final_val_loss")}
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


def is_full_plan(p: dict) -> bool:
    """True when the params train to the seed's plan (params.SEED_PLAN): its epochs, learning rate, batch
    size, context, all windows."""
    from .params import SEED_PLAN
    for key, want in SEED_PLAN.items():
        section, name = key.split(".")
        if p[section][name] != want:
            return False
    return True
