"""The conditional VAE with LSTM memory and a quantile decoder (SPEC section 4).

Per day t: surface x_t (n_mat x n_mon) and extra features a_t = [return, skew, slope].
  posterior encoder: dense(x_t) || a_t -> LSTM -> mu_t, logvar_t           (causal in t)
  context encoder:   same structure, own weights, context days only -> embedding c_t
  decoder:           LSTM over [c_t (zeros on future days) || z_t] -> quantiles of x_t, a_t
Training draws z from the posterior (reparameterised); generation uses the posterior mean on context
days and z ~ N(0, I) on future days. Inputs and outputs are standardised with statistics of the
training split stored in the model (buffers), so a checkpoint is self-contained.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    n_maturity: int
    n_moneyness: int
    n_feat: int = 3
    latent_dim: int = 5
    mem_hidden: int = 100
    mem_layers: int = 2
    mem_dropout: float = 0.3
    surface_hidden: tuple = (5, 5, 5)
    quantiles: tuple = (0.05, 0.5, 0.95)
    context_len: int = 60           # C: days of context the model was trained with

    @classmethod
    def from_params(cls, p: dict, grid: tuple[int, int]) -> "ModelConfig":
        m = p["model"]
        return cls(grid[0], grid[1], m["ex_feats_dim"], m["latent_dim"], m["mem_hidden"], m["mem_layers"],
                   m["mem_dropout"], tuple(m["surface_hidden"]), tuple(m["quantiles"]), m["context_len"])

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers)


class _SeqEncoder(nn.Module):
    """dense(surface) || features -> LSTM; the shared structure of both encoders."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        g = cfg.n_maturity * cfg.n_moneyness
        self.dense = _mlp([g, *cfg.surface_hidden])
        self.lstm = nn.LSTM(cfg.surface_hidden[-1] + cfg.n_feat, cfg.mem_hidden, cfg.mem_layers,
                            batch_first=True, dropout=cfg.mem_dropout if cfg.mem_layers > 1 else 0.0)

    def forward(self, x, a):                       # x (B, T, G), a (B, T, F)
        h, _ = self.lstm(torch.cat([self.dense(x), a], -1))
        return h                                   # (B, T, mem_hidden)


class CVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        g, q = cfg.n_maturity * cfg.n_moneyness, len(cfg.quantiles)
        self.mid = list(cfg.quantiles).index(0.5)
        self.posterior = _SeqEncoder(cfg)
        self.to_latent = nn.Linear(cfg.mem_hidden, 2 * cfg.latent_dim)
        self.context = _SeqEncoder(cfg)
        self.ctx_proj = nn.Linear(cfg.mem_hidden, cfg.mem_hidden)
        self.dec_lstm = nn.LSTM(cfg.mem_hidden + cfg.latent_dim, cfg.mem_hidden, cfg.mem_layers,
                                batch_first=True, dropout=cfg.mem_dropout if cfg.mem_layers > 1 else 0.0)
        self.dec_dense = _mlp([cfg.mem_hidden, *reversed(cfg.surface_hidden)])
        self.surface_head = nn.Linear(cfg.surface_hidden[0], q * g)
        self.feat_head = nn.Linear(cfg.mem_hidden, cfg.n_feat)
        # standardisation (set from the training split by train.fit_normaliser)
        self.register_buffer("s_mean", torch.zeros(cfg.n_maturity, cfg.n_moneyness))
        self.register_buffer("s_std", torch.ones(cfg.n_maturity, cfg.n_moneyness))
        self.register_buffer("f_mean", torch.zeros(cfg.n_feat))
        self.register_buffer("f_std", torch.ones(cfg.n_feat))

    @property
    def context_len(self) -> int:
        return self.cfg.context_len

    # --- normalisation helpers ---
    def norm_s(self, x):
        return (x - self.s_mean) / self.s_std

    def norm_f(self, a):
        return (a - self.f_mean) / self.f_std

    def _quantiles(self, raw):                     # raw (B, T, Q, G) -> monotone in Q
        mid = raw[:, :, self.mid:self.mid + 1]
        up = mid + torch.cumsum(F.softplus(raw[:, :, self.mid + 1:]), dim=2)
        down = mid - torch.cumsum(F.softplus(raw[:, :, :self.mid].flip(2)), dim=2).flip(2)
        return torch.cat([down, mid, up], dim=2)

    def forward(self, surface, feats, context_len: int, horizon: int | None = None,
                prior_future: bool = False, generator: torch.Generator | None = None,
                prior_scale: float = 1.0, sample_posterior: bool = True) -> dict:
        """surface (B, T_in, n_mat, n_mon) in vols, feats (B, T_in, F) raw.

        Training (prior_future=False): T = T_in days, z from the posterior on every day.
        Generation (prior_future=True): only the first `context_len` input days are read; the
        posterior mean is used on them and z ~ N(0, I) on the `horizon` future days
        (`prior_scale` 0 gives the prior mean, a deterministic point forecast).
        `sample_posterior=False` uses the posterior mean instead of a reparameterised draw.
        Returns standardised outputs: 'q' (B, T, Q, n_mat, n_mon), 'feat' (B, T, F), 'mu'/'logvar'
        (B, T_post, L) for the days whose posterior was used."""
        cfg, C = self.cfg, context_len
        B = surface.shape[0]
        xs = self.norm_s(surface).flatten(2)                      # (B, T_in, G)
        fs = self.norm_f(feats)                                   # (B, T_in, F)
        if prior_future:
            xs, fs = xs[:, :C], fs[:, :C]
            T = C + int(horizon)
        else:
            T = xs.shape[1]
        stats = self.to_latent(self.posterior(xs, fs))            # (B, T_post, 2L)
        mu, logvar = stats.chunk(2, dim=-1)
        logvar = logvar.clamp(-12.0, 8.0)
        if prior_future:
            z_fut = torch.randn(B, T - C, cfg.latent_dim, generator=generator, device=xs.device)
            z = torch.cat([mu, prior_scale * z_fut.to(mu.dtype)], dim=1)   # (B, T, L)
        elif not sample_posterior:
            z = mu
        else:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        ctx = self.ctx_proj(self.context(xs[:, :C], fs[:, :C]))   # (B, C, M)
        ctx = torch.cat([ctx, ctx.new_zeros(B, T - C, ctx.shape[-1])], dim=1)   # zeros on future days
        h, _ = self.dec_lstm(torch.cat([ctx, z], dim=-1))         # (B, T, M)
        raw = self.surface_head(self.dec_dense(h)).view(B, T, len(cfg.quantiles), -1)
        q = self._quantiles(raw).view(B, T, len(cfg.quantiles), cfg.n_maturity, cfg.n_moneyness)
        return {"q": q, "feat": self.feat_head(h), "mu": mu, "logvar": logvar}

    def to_vol(self, q_norm):
        """Standardised surface quantiles (..., n_mat, n_mon) -> implied vols."""
        return q_norm * self.s_std + self.s_mean

    def to_feat(self, f_norm):
        return f_norm * self.f_std + self.f_mean


def pinball(q_pred, target, quantiles, weights) -> torch.Tensor:
    """Weighted pinball loss. q_pred (..., Q, n_mat, n_mon), target (..., n_mat, n_mon) -> scalar
    sum_q w_q * mean(max(q u, (q - 1) u)), u = target - prediction."""
    qs = torch.as_tensor(quantiles, dtype=q_pred.dtype, device=q_pred.device).view(-1, 1, 1)
    w = torch.as_tensor(weights, dtype=q_pred.dtype, device=q_pred.device)
    u = target.unsqueeze(-3) - q_pred
    per_q = torch.maximum(qs * u, (qs - 1) * u)                  # (..., Q, n_mat, n_mon)
    return (per_q.movedim(-3, 0).reshape(len(w), -1).mean(1) * w).sum()


def kl_divergence(mu, logvar) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dims, averaged over batch and days."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()


@dataclass
class LossWeights:
    quantiles: tuple
    quantile_weights: tuple
    kl_weight: float
    feat_weight: float
    ret_only: bool = True
    feat_loss: str = "l2"

    @classmethod
    def from_params(cls, p: dict) -> "LossWeights":
        m = p["model"]
        return cls(tuple(m["quantiles"]), tuple(m["quantile_loss_weights"]), m["kl_weight"],
                   m["re_feat_weight"], m["ex_loss_on_ret_only"], m["ex_feats_loss_type"])


def day_loss(model: CVAE, out: dict, surface, feats, days: slice, w: LossWeights) -> dict:
    """Loss on the given days of one forward pass (targets in vols/raw features, compared standardised):
    pinball(surface quantiles) + feat_weight * L2(return [or all features]) + kl_weight * KL, the KL
    over every day up to the last loss day (the posteriors those predictions were decoded from)."""
    tgt_s = model.norm_s(surface[:, days])
    tgt_f = model.norm_f(feats[:, days])
    rec = pinball(out["q"][:, days], tgt_s, w.quantiles, w.quantile_weights)
    diff = out["feat"][:, days] - tgt_f
    if w.ret_only:
        diff = diff[..., :1]
    feat = diff.pow(2).mean() if w.feat_loss == "l2" else diff.abs().mean()
    kl = kl_divergence(out["mu"][:, :days.stop], out["logvar"][:, :days.stop])   # days the loss depends on
    total = rec + w.feat_weight * feat + w.kl_weight * kl
    return {"loss": total, "pinball": rec.detach(), "feat": feat.detach(), "kl": kl.detach()}
