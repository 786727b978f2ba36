"""Autoregressive rollout: the one place that assembles contexts, for training and for generation (docs/design.md §2).

With context C, horizon H, offset O <= H and S steps, step s predicts days [C+sO, C+sO+H) of the
window, from the context window [sO, sO+C). A context day d < C is real; a day d >= C is taken from
the most recent earlier step whose prediction covers d (its median quantile). Generated days get
features recomputed from the generated surface (skew, slope); their return is the realised one or
the model's own prediction. Gradients flow through the generated context.
"""
from __future__ import annotations

import torch

from .data import RET, RV, skew_slope
from .model import CVAE, LossWeights, day_loss


class RolloutError(ValueError):
    pass


def check_rollout(C: int, H: int, O: int, S: int, length: int | None = None) -> int:
    """Validate (C, H, O, S); return the window length C + (S-1)O + H it needs."""
    if C < 1:
        raise RolloutError(f"context length must be >= 1, got {C}")
    if H < 1 or S < 1:
        raise RolloutError(f"horizon and steps must be >= 1, got H={H}, S={S}")
    if not 1 <= O <= H:
        raise RolloutError(f"offset {O} must be in [1, horizon={H}]: a larger offset leaves days no step predicts")
    need = C + (S - 1) * O + H
    if length is not None and length < need:
        raise RolloutError(f"window of {length} days is too short for C={C}, H={H}, O={O}, S={S} "
                           f"(needs {need})")
    return need


def context_sources(C: int, H: int, O: int, step: int) -> list[tuple]:
    """Where each of step `step`'s C context days comes from: ('real', d) for a real window day d,
    or ('step', s, k) for day k of the prediction of an earlier step s (window day C + sO + k)."""
    check_rollout(C, H, O, step + 1)
    out = []
    for d in range(step * O, step * O + C):
        if d < C:
            out.append(("real", d))
            continue
        s = max(s for s in range(step) if C + s * O <= d < C + s * O + H)
        out.append(("step", s, d - C - s * O))
    return out


def _bank_index(C: int, H: int, O: int, step: int) -> list[int]:
    """Indices into the bank [real days 0..C-1 | step 0's H days | step 1's H days | ...]."""
    return [src[1] if src[0] == "real" else C + src[1] * H + src[2] for src in context_sources(C, H, O, step)]


def _known_features(future, last, H: int, returns: str):
    """What a forecast knows of H future days from the underlying alone: with realised returns, their return
    and RV features (skew/slope columns are placeholders, recomputed from the generated surface); beyond the
    known history, or with `returns: predicted`, a zero return and the last context day's RV held flat (the
    context bank then takes the model's own predicted return)."""
    held = last.clone()                                         # (B, F)
    held[:, RET] = 0.0
    if returns != "realized":
        return held[:, None].expand(-1, H, -1)
    if future.shape[1] < H:
        future = torch.cat([future, held[:, None].expand(-1, H - future.shape[1], -1)], 1)
    return future


def rollout(model: CVAE, surface, feats, C: int, H: int, O: int, S: int, *, maturities, moneyness,
            returns: str = "realized", generate: bool = False, generator=None,
            prior_scale: float = 1.0) -> list[dict]:
    """Run S autoregressive steps over windows starting at day 0.

    surface (B, L, n_mat, n_mon) vols and feats (B, L, F) raw, real days. In training
    (generate=False) L >= C + (S-1)O + H: step s sees its assembled context plus the real target days
    (posterior z). In generation only the first C days of `surface` are read (plus the realised returns
    and RV features of later days when returns == 'realized'; pass them in feats).
    Returns per step: dict(out=model output (standardised, C+H days), q=(B, H, Q, n_mat, n_mon) vols,
    feat=(B, H, F) raw, start=first window day predicted, ctx_surface/ctx_feats=the assembled context)."""
    L = surface.shape[1]
    check_rollout(C, H, O, S, None if generate else L)
    if returns not in ("realized", "predicted"):
        raise RolloutError(f"returns must be 'realized' or 'predicted', got {returns!r}")
    bank_s = [surface[:, :C]]                                   # list of (B, n, n_mat, n_mon)
    bank_f = [feats[:, :C]]
    steps = []
    for s in range(S):
        idx = torch.as_tensor(_bank_index(C, H, O, s), device=surface.device)
        ctx_s = torch.cat(bank_s, 1).index_select(1, idx)       # (B, C, n_mat, n_mon)
        ctx_f = torch.cat(bank_f, 1).index_select(1, idx)       # (B, C, F)
        t0 = C + s * O
        known = _known_features(feats[:, t0:t0 + H], ctx_f[:, -1], H, returns)   # (B, H, F) return, RV
        if generate:
            out = model.forecast(ctx_s, ctx_f, H, known, generator=generator, prior_scale=prior_scale)
        else:
            x = torch.cat([ctx_s, surface[:, t0:t0 + H]], 1)
            a = torch.cat([ctx_f, feats[:, t0:t0 + H]], 1)
            out = model(x, a, C)
        q = model.to_vol(out["q"][:, C:], out["anchor"])        # (B, H, Q, n_mat, n_mon)
        f = model.scaler.to_feat(out["feat"][:, C:])            # (B, H, F)
        med = q[:, :, model.mid]                                # (B, H, n_mat, n_mon)
        skew, slope = skew_slope(med, maturities, moneyness)
        n_real = feats[:, t0:t0 + H].shape[1] if returns == "realized" else 0   # days of known history
        ret = torch.cat([known[:, :n_real, RET], f[:, n_real:, RET]], 1)        # then the model's own
        bank_s.append(med)
        feats_new = [ret[..., None], skew[..., None], slope[..., None], known[..., RV:]]   # data.FEATURES' order
        bank_f.append(torch.cat(feats_new, -1))
        steps.append({"out": out, "q": q, "feat": f, "start": t0, "ctx_surface": ctx_s, "ctx_feats": ctx_f})
    return steps


def rollout_loss(model: CVAE, surface, feats, C, H, O, S, w: LossWeights, **kw) -> tuple[torch.Tensor, list]:
    """Mean over steps of each step's loss on its H predicted days (teacher-forced targets)."""
    steps = rollout(model, surface, feats, C, H, O, S, **kw)
    losses = []
    for st in steps:
        t0 = st["start"]
        # day_loss reads days C..C+H of these windows: the real target days t0..t0+H
        losses.append(day_loss(model, st["out"], surface[:, t0 - C:t0 + H], feats[:, t0 - C:t0 + H],
                               slice(C, C + H), w))
    total = torch.stack([l["loss"] for l in losses]).mean()
    return total, steps
