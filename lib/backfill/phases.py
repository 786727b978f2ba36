"""The curriculum's phases (docs/design.md §2): what each trains on (PhaseSpec), its loss on a batch of windows,
and its validation metrics (RMSE and CI violations by horizon or by AR pass, the pass ratio, KL).

`train` runs the epochs; `gates` judges the validation metrics against the plan's criteria.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .data import phase_window_lengths, window_starts
from .model import LossWeights, day_loss
from .rollout import rollout, rollout_loss


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
        """Windows of `length` days from each start (B,): day indices or a tensor of them already on the device (the
        training loop's, gathered there without a host transfer)."""
        dev = self.surface.device
        st = starts if torch.is_tensor(starts) else torch.as_tensor(np.asarray(starts), device=dev)
        idx = st.to(dev)[:, None] + torch.arange(length, device=dev)
        return self.surface[idx], self.feats[idx]            # (B, L, n_mat, n_mon), (B, L, F)


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


# --- validation (point forecast = median at the prior mean, intervals = p05..p95) ---------------

@torch.no_grad()
def validate(model, spec: PhaseSpec, series: Series, starts, p: dict, batch: int = 64) -> dict:
    """A phase's forecast metrics on windows: RMSE and CI violations by horizon (tf/mh) or by pass (ar)."""
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


def eval_starts(span, length, cap):
    """A fixed, evenly spaced subset of at most `cap` windows (stable metrics from epoch to epoch)."""
    st = window_starts(span, length)
    if cap is not None and len(st) > cap:
        st = st[np.linspace(0, len(st) - 1, cap).round().astype(int)]
    return st
