"""Backfill generation (docs/design.md §6): N latent samples per start date, each rolling out its own path.

A backfill of `days` days starting at day index `start` reads the C real days before it as context and
runs P = ceil(days / O) passes of H days with offset O through `rollout.rollout` (the same context
assembly as training). Days covered by several passes (O < H) are the mean of those passes' quantiles.
Samples are batched (chunked to fit memory); the per-sample p05/p50/p95 paths are summarised across
samples by quantile averaging: forecast = mean of p50, interval = [mean p05, mean p95], and the
5th-95th percentile of the sample p50 paths as the sampling-spread interval.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import crps_ensemble
from .rollout import check_rollout, rollout


def n_passes(days: int, offset: int) -> int:
    """Passes needed to backfill `days` days with a given offset: 3 for 252 at O90, 6 at O45."""
    return math.ceil(days / offset)


def days_covered(horizon: int, offset: int, passes: int) -> int:
    """Days covered by `passes` passes: (P-1)O + H (270 for 3 x O90, 315 for 6 x O45)."""
    return (passes - 1) * offset + horizon


def overlap_weights(horizon: int, offset: int, passes: int, days: int) -> np.ndarray:
    """(passes, days) weights: day d takes the mean over the passes that cover it."""
    w = np.zeros((passes, days))
    for s in range(passes):
        a = s * offset
        w[s, a:min(a + horizon, days)] = 1.0
    if (w.sum(0) == 0).any():
        raise ValueError("some days are covered by no pass")
    return w / w.sum(0, keepdims=True)


@dataclass
class Backfill:
    """One backfill window. Arrays are (days, n_mat, n_mon) unless noted."""
    name: str
    start: int                       # day index of the first backfilled day
    days: int
    horizon: int
    offset: int
    passes: int
    n_samples: int
    dates: np.ndarray                # (days,) ISO dates or day indices
    p05: np.ndarray                  # mean over samples of each sample's p05
    p50: np.ndarray                  # mean over samples of each sample's p50: the point forecast
    p95: np.ndarray
    spread05: np.ndarray             # 5th / 95th percentile over samples of the p50 paths
    spread95: np.ndarray
    sample_p50: np.ndarray           # (n_keep, days, n_mat, n_mon) a few sample p50 paths, for plots
    truth: np.ndarray | None         # (days_known, n_mat, n_mon) the real surfaces, where known
    segment: np.ndarray = field(default=None)   # (days,) 0-based H-day segment ("pass") of each day
    seconds: float = 0.0
    crps: np.ndarray | None = None   # (days_known, n_mat, n_mon) ensemble CRPS of predictive draws, where known
    arbitrage_raw: float | None = None   # share of days with static arbitrage in p50 before the repair

    def save(self, path, maturities, moneyness) -> Path:
        """Atomically write an .npz with dates, grid and quantiles."""
        from .rundir import atomic_write_bytes
        import io
        buf = io.BytesIO()
        np.savez_compressed(
            buf, name=self.name, start=self.start, days=self.days, horizon=self.horizon, offset=self.offset,
            passes=self.passes, n_samples=self.n_samples, dates=np.asarray(self.dates).astype(str),
            maturities=maturities, moneyness=moneyness, quantiles=np.array([0.05, 0.5, 0.95]),
            p05=self.p05, p50=self.p50, p95=self.p95, spread05=self.spread05, spread95=self.spread95,
            sample_p50=self.sample_p50, truth=self.truth if self.truth is not None else np.zeros((0,)),
            segment=self.segment, crps=self.crps if self.crps is not None else np.zeros((0,)),
            arbitrage_raw=np.nan if self.arbitrage_raw is None else self.arbitrage_raw)
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)


def predictive_draws(q, levels, generator: np.random.Generator) -> np.ndarray:
    """One draw per latent sample from that sample's predictive distribution: q (N, Q, ...) quantiles with levels
    0.05 < 0.5 < 0.95 -> (N, ...). The draw is p50 + z * (p50 - p05) / 1.645 for z < 0 and p50 + z * (p95 - p50) /
    1.645 for z > 0, z ~ N(0, 1): a monotone map of a normal whose 5%, 50% and 95% quantiles are exactly the
    sample's three. The ensemble over samples is then the VAE's whole predictive distribution (latent mixture and
    decoder quantiles), which is what a CRPS should score."""
    lv = list(levels)
    lo, mid, hi = q[:, lv.index(0.05)], q[:, lv.index(0.5)], q[:, lv.index(0.95)]
    z = generator.standard_normal(mid.shape)
    return mid + z * np.where(z < 0, mid - lo, hi - mid) / 1.6448536269514722


def backfill(model, ds, start: int, days: int, horizon: int, offset: int, n_samples: int, *, seed: int,
             chunk: int = 250, returns: str = "realized", name: str = "", keep_samples: int = 50,
             repair: bool = False, device=None, progress: bool | None = None) -> Backfill:
    """Generate a backfill of `days` days from day index `start` (needs `start >= C`). With `repair`, each day's
    p05, p50 and p95 surface is projected onto the arbitrage-free set (`arbitrage.repair`); the share of days
    with arbitrage before it is kept in `arbitrage_raw`."""
    from tqdm.auto import tqdm
    from .rundir import show_progress
    progress = show_progress() if progress is None else progress
    C = model.context_len
    device = device or next(model.parameters()).device
    if start < C:
        raise ValueError(f"backfill start {start} leaves fewer than {C} context days")
    passes = n_passes(days, offset)
    check_rollout(C, horizon, offset, passes)
    span = days_covered(horizon, offset, passes)
    known = min(span, ds.n_days - start)
    ctx = torch.as_tensor(ds.surface[start - C:start], dtype=torch.float32, device=device)   # (C, n_mat, n_mon)
    feats = torch.as_tensor(ds.features(model.cfg.rv_halflives)[start - C:start + known], dtype=torch.float32,
                            device=device)
    w = torch.as_tensor(overlap_weights(horizon, offset, passes, span), dtype=torch.float32, device=device)
    model.eval()
    t0 = time.perf_counter()
    outs = []
    gen = torch.Generator(device=device).manual_seed(int(seed))
    with torch.no_grad():
        for b0 in tqdm(range(0, n_samples, chunk), desc=f"backfill {name}".strip(), disable=not progress):
            B = min(chunk, n_samples - b0)
            steps = rollout(model, ctx.expand(B, *ctx.shape), feats.expand(B, *feats.shape), C, horizon, offset,
                            passes, maturities=ds.maturities, moneyness=ds.moneyness, returns=returns,
                            generate=True, generator=gen)
            q = torch.zeros(B, span, *steps[0]["q"].shape[2:], device=device)          # (B, span, Q, n_mat, n_mon)
            for s, st in enumerate(steps):
                a = s * offset
                q[:, a:a + horizon] += w[s, a:a + horizon, None, None, None] * st["q"]
            outs.append(q[:, :days].cpu().numpy())
    q = np.concatenate(outs)                                                           # (N, days, Q, n_mat, n_mon)
    mid = model.mid
    p50s = q[:, :, mid]
    labels = ds.day_labels()
    dates = np.array([labels[start + d] if start + d < ds.n_days else "" for d in range(days)])
    truth = ds.surface[start:start + min(days, ds.n_days - start)]
    n = len(truth)
    draws = predictive_draws(q[:, :n].swapaxes(1, 2), model.cfg.quantiles, np.random.default_rng([int(seed), 1]))
    p05, p50, p95 = q[:, :, 0].mean(0), p50s.mean(0), q[:, :, -1].mean(0)
    arb_raw = None
    if repair:
        from . import arbitrage
        from .metrics import arbitrage_share
        arb_raw = arbitrage_share(p50, ds.maturities, ds.moneyness)["any"]
        p05, p50, p95 = arbitrage.repair_quantiles(p05, p50, p95, ds.maturities, ds.moneyness)
    return Backfill(name=name, start=start, days=days, horizon=horizon, offset=offset, passes=passes,
                    n_samples=n_samples, dates=dates, p05=p05, p50=p50, p95=p95,
                    spread05=np.percentile(p50s, 5, axis=0), spread95=np.percentile(p50s, 95, axis=0),
                    sample_p50=p50s[:keep_samples].astype(np.float32), truth=truth,
                    segment=np.arange(days) // horizon, seconds=time.perf_counter() - t0,
                    crps=crps_ensemble(draws, truth) if n else None, arbitrage_raw=arb_raw)


def backfill_for(model, ds, p: dict, start: int, days: int, offset: int, name: str = "") -> Backfill:
    """`backfill` with the run's generation params: its samples, chunk, horizon, returns, arbitrage repair, and a
    seed from the run's seed and the start day (the same window gets the same draws in every notebook)."""
    g = p["generation"]
    return backfill(model, ds, start, days, g["horizon"], offset, g["n_samples"], seed=p["seed"] + start,
                    chunk=g["sample_chunk"], returns=p["training"]["returns"], name=name,
                    repair=g["repair_arbitrage"])


def origins(span, context_len: int, days: int, every: int, max_n: int | None = None, spread: bool = False) -> list[int]:
    """The one rule for backfill origins in a split: every `every` days from the first day with a whole context
    before it to the last whose first `days` days lie inside the span (half-open); at most `max_n` of them, the first
    ones, or (`spread`) spread evenly over all of them."""
    a, b = span
    out = list(range(max(a, context_len), b - days + 1, every))
    if max_n is not None and len(out) > max_n:
        out = [out[i] for i in np.unique(np.round(np.linspace(0, len(out) - 1, max_n)).astype(int))] if spread \
            else out[:max_n]
    return out


def backfill_starts(ds, p: dict, split_span, days: int) -> dict[str, int]:
    """The first backfilled day of every test backfill: the named windows of the params (`generation.windows`,
    checked at load: each has its context and its whole backfill) plus rolling origins every `rolling_every` days over
    the split, at most `max_rolling` of them spread evenly over the whole split (the first few would be one regime:
    the first 12 of smoke's test split all started in its first year), {name: day index}. (data.window_starts gives
    the training windows' start days instead.)"""
    g, C = p["generation"], p["model"]["context_len"]
    out = {name: ds.index_of(when) for name, when in g["windows"].items()}
    for t in origins(split_span, C, days, g["rolling_every"], g["max_rolling"], spread=True):
        out[f"rolling_{t}"] = t
    return out


def calibration_starts(ds, p: dict, split_span, days: int) -> dict[str, tuple[int, int]]:
    """Origins inside the validation split for the conformal calibration, {name: (start, days)}: every
    `calibration_every` days from the first with a whole context to the last that still fills the first lead bin,
    at most `max_calibration` of them spread evenly over all of these (not the first few: one regime). Each
    backfills min(days, the days left in the split): the truth beyond the split is never used, and a validation
    span shorter than a backfill still fills the lead bins its origins reach."""
    g, C = p["generation"], p["model"]["context_len"]
    bins = g["calibration_lead_bins"]
    first = bins[1] - 1 if len(bins) > 1 else 1                 # days of the first lead bin
    b = split_span[1]
    return {f"calib_{t}": (t, min(days, b - t))
            for t in origins(split_span, C, first, g["calibration_every"], g["max_calibration"], spread=True)}


def gate3_starts(ds, p: dict, split_span, crisis) -> tuple[list[int], str]:
    """Origins of gate 3's 6-month backfills over the validation split: the rolling rule (every `rolling_every` days,
    at most `max_rolling`), keeping the normal-regime ones (no crisis day, `crisis` (N,) bool) where there are any.
    Returns (origins, the regime they come from)."""
    g, C, days = p["generation"], p["model"]["context_len"], p["generation"]["days_6month"]
    every = origins(split_span, C, days, g["rolling_every"])
    normal = [t for t in every if not crisis[t:t + days].any()]
    regime = "normal" if normal else "all (the validation split has no normal-regime window)"
    return (normal or every)[: g["max_rolling"] or None], regime


def bench(p: dict, ds, device, n_samples: int = 1000, days: int = 252) -> dict:
    """Seconds for an N-sample 3-pass (O90) 1-year backfill at the params' model size."""
    from .train import build_model
    from .data import splits
    model = build_model(p, ds, splits(ds, p)["train"]).to(device)
    g = p["generation"]
    start = ds.n_days - days - 1
    bf = backfill(model, ds, start, days, g["horizon"], g["offset_fast"], n_samples, seed=0,
                  chunk=g["sample_chunk"], device=device, progress=False)
    bf45 = backfill(model, ds, start, days, g["horizon"], g["offset_ensemble"], n_samples, seed=0,
                    chunk=g["sample_chunk"], device=device, progress=False)
    return {"samples": n_samples, "days": days, "offset_fast": {"passes": bf.passes, "seconds": bf.seconds},
            "offset_ensemble": {"passes": bf45.passes, "seconds": bf45.seconds},
            "chunk": g["sample_chunk"]}


def load_backfill(path) -> Backfill:
    """Read a backfill .npz written by `Backfill.save`."""
    z = np.load(path, allow_pickle=False)
    truth = z["truth"] if z["truth"].ndim == 3 else None
    crps = z["crps"] if "crps" in z.files and z["crps"].ndim == 3 else None
    arb = float(z["arbitrage_raw"]) if "arbitrage_raw" in z.files and np.isfinite(z["arbitrage_raw"]) else None
    return Backfill(name=str(z["name"]), start=int(z["start"]), days=int(z["days"]), horizon=int(z["horizon"]),
                    offset=int(z["offset"]), passes=int(z["passes"]), n_samples=int(z["n_samples"]),
                    dates=z["dates"], p05=z["p05"], p50=z["p50"], p95=z["p95"], spread05=z["spread05"],
                    spread95=z["spread95"], sample_p50=z["sample_p50"], truth=truth, segment=z["segment"],
                    crps=crps, arbitrage_raw=arb)
