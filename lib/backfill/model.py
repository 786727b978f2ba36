"""The conditional VAE with LSTM memory and a quantile decoder (SPEC section 4, amended by issue 8).

Per day t: surface x_t (n_mat x n_mon) and features a_t = [return, skew, slope, log RV_h1, ...].
  posterior encoder: dense(x_t) || a_t -> LSTM -> q(z_t | x_<=t) = N(mu_t, diag sigma_t^2)   (causal in t)
  context encoder:   same structure, own weights, context days only -> embedding c_t
  decoder:           h_t = LSTM(h_{t-1}, [c_t (zeros on future days) || z_t || e_t]) -> quantiles of y_t, a_t
where e_t are the inputs a backfill knows on every day from the underlying's returns (the return and
its realised-volatility features; only with `known_future`).

Two priors (`prior`):
  standard     p(z_t) = N(0, I): the seed as written. Forecasts draw future z from it.
  conditional  p(z_t | h_{t-1}, e_t) = N(m(h_{t-1}, e_t), diag s^2(...)): a learned prior that sees only what a
               forecast may see (the decoder state carries the context and the days already generated). Training
               minimises KL(q || p) on every day, forecasts draw z_t from the same p day by day, so training and
               generation draw z from matched distributions and latent paths are coherent in time (VRNN-style).

Two targets (`target`):
  level   y_t = standardised vol x_t (the seed as written).
  change  y_t = (log x_t - log x_anchor) / c, x_anchor the last context day: the random walk is the zero point
          and a forecast can leave the range of the training surfaces.
Training draws z from the posterior (reparameterised); forecasts use the posterior mean on context days. Inputs are
standardised with statistics of the training split stored in the model (buffers), so a checkpoint is self-contained.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIORS = ("standard", "conditional")
CLIP = 4.0      # change target: standardised inputs of the networks are clipped to +-4 sd of the training split;
                # the linear backbone reads them unclipped, so forecasts still extrapolate along it
TARGETS = ("level", "change")
WIDTH_CLAMP = 4.0


@dataclass
class ModelConfig:
    n_maturity: int
    n_moneyness: int
    n_feat: int = 3                 # [return, skew, slope] + one log-RV feature per half-life
    latent_dim: int = 5
    mem_hidden: int = 100
    mem_layers: int = 2
    mem_dropout: float = 0.3
    surface_hidden: tuple = (5, 5, 5)
    quantiles: tuple = (0.05, 0.5, 0.95)
    context_len: int = 60           # C: days of context the model was trained with
    prior: str = "standard"
    target: str = "level"
    known_future: bool = False      # the decoder and prior see e_t (return, RV features) on future days
    rv_halflives: tuple = ()        # half-lives (days) of the log-RV features, in feature order

    @classmethod
    def from_params(cls, p: dict, grid: tuple[int, int]) -> "ModelConfig":
        m = p["model"]
        return cls(grid[0], grid[1], 3 + len(m["rv_halflives"]), m["latent_dim"], m["mem_hidden"],
                   m["mem_layers"], m["mem_dropout"], tuple(m["surface_hidden"]), tuple(m["quantiles"]),
                   m["context_len"], m["prior"], m["target"], m["known_future"], tuple(m["rv_halflives"]))

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
        if cfg.n_feat != 3 + len(cfg.rv_halflives):
            raise ValueError(f"n_feat {cfg.n_feat} != 3 + {len(cfg.rv_halflives)} RV features")
        if cfg.prior not in PRIORS or cfg.target not in TARGETS:
            raise ValueError(f"prior must be one of {PRIORS} and target one of {TARGETS}, got {cfg.prior!r}, "
                             f"{cfg.target!r}")
        self.cfg = cfg
        g, q, M, L = cfg.n_maturity * cfg.n_moneyness, len(cfg.quantiles), cfg.mem_hidden, cfg.latent_dim
        self.mid = list(cfg.quantiles).index(0.5)
        self.clip = CLIP if cfg.target == "change" else float("inf")          # the seed's model: unclipped
        # e_t: the return (column 0) and the RV features (columns 3..), known on every day of a backfill
        self.exo_idx = [0, *range(3, cfg.n_feat)] if cfg.known_future else []
        E = len(self.exo_idx)
        self.posterior = _SeqEncoder(cfg)
        self.to_latent = nn.Linear(M, 2 * L)
        self.context = _SeqEncoder(cfg)
        self.ctx_proj = nn.Linear(M, M)
        self.dec_lstm = nn.LSTM(M + L + E, M, cfg.mem_layers, batch_first=True,
                                dropout=cfg.mem_dropout if cfg.mem_layers > 1 else 0.0)
        self.dec_dense = _mlp([M, *reversed(cfg.surface_hidden)])
        self.surface_head = nn.Linear(cfg.surface_hidden[0], q * g)
        self.feat_head = nn.Linear(M, cfg.n_feat)
        if cfg.prior == "conditional":
            self.prior_net = nn.Sequential(_mlp([M + E, M]), nn.Linear(M, 2 * L))
        # change target with known RV: a linear path from the RV features' change since the anchor day to the
        # log-vol change of every grid point, so that a forecast can follow realised stress beyond the training range
        # and an error-correction backbone: log x_t reverts from the anchor at a learned daily rate rho towards the
        # level L_t = a + b RV_t of the econometric regression of vol on RV (fitted on the training split by
        # train.build_model, then fixed), after k days log x_t - log x_a ~ (1 - rho^k) (log L_t - log x_a)
        self.rv_idx = list(range(3, cfg.n_feat)) if cfg.known_future and cfg.target == "change" else []
        if self.rv_idx:
            self.rv_link = nn.Linear(len(self.rv_idx), g, bias=False)
            nn.init.zeros_(self.rv_link.weight)
            self.register_buffer("ecm_a", torch.full((g,), 0.2))                 # vol
            self.register_buffer("ecm_b", torch.zeros(len(self.rv_idx), g))      # vol per unit of RV (vol)
            self.ecm_rate = nn.Parameter(torch.full((g,), -4.0))     # rho = 1 - sigmoid(rate): half-life ~ 38 days
            # interval widths that follow the market: the half-widths of the quantiles around the median are scaled
            # by exp(width path), linear in the *unclipped* standardised log-RV levels and in log(1 + lead), so that
            # a crisis beyond the training range widens the band as the linear RV path moves the median; zero at
            # initialisation (the network's own widths)
            self.width_link = nn.Linear(len(self.rv_idx), g)
            nn.init.zeros_(self.width_link.weight)
            nn.init.zeros_(self.width_link.bias)
            self.width_lead = nn.Parameter(torch.zeros(g))
        # standardisation (set from the training split by train.build_model)
        self.register_buffer("s_mean", torch.zeros(cfg.n_maturity, cfg.n_moneyness))
        self.register_buffer("s_std", torch.ones(cfg.n_maturity, cfg.n_moneyness))
        self.register_buffer("f_mean", torch.zeros(cfg.n_feat))
        self.register_buffer("f_std", torch.ones(cfg.n_feat))
        self.register_buffer("c_std", torch.ones(cfg.n_maturity, cfg.n_moneyness))   # scale of log changes

    @property
    def context_len(self) -> int:
        return self.cfg.context_len

    # --- normalisation and the target space ---
    def norm_s(self, x):
        return (x - self.s_mean) / self.s_std

    def norm_f(self, a):
        return (a - self.f_mean) / self.f_std

    def to_feat(self, f_norm):
        return f_norm * self.f_std + self.f_mean

    def to_target(self, surface, anchor):
        """Vols (B, T, n_mat, n_mon) -> the decoder's target space, given the anchor (B, n_mat, n_mon)."""
        if self.cfg.target == "level":
            return self.norm_s(surface)
        return (torch.log(surface) - torch.log(anchor).unsqueeze(1)) / self.c_std

    def to_vol(self, q, anchor):
        """Decoder outputs (B, T, Q, n_mat, n_mon) in the target space -> implied vols."""
        if self.cfg.target == "level":
            return q * self.s_std + self.s_mean
        return anchor[:, None, None] * torch.exp(q * self.c_std)

    # --- pieces ---
    def _quantiles(self, raw):                     # raw (B, T, Q, G) -> monotone in Q
        mid = raw[:, :, self.mid:self.mid + 1]
        up = mid + torch.cumsum(F.softplus(raw[:, :, self.mid + 1:]), dim=2)
        down = mid - torch.cumsum(F.softplus(raw[:, :, :self.mid].flip(2)), dim=2).flip(2)
        return torch.cat([down, mid, up], dim=2)

    def _heads(self, h, fs, C: int, anchor) -> tuple:
        """h (B, T, M) decoder states, fs (B, T, F) standardised features (unclipped), anchor (B, n_mat, n_mon)
        vols -> q (B, T, Q, n_mat, n_mon) in the target space, feat (B, T, F)."""
        cfg, (B, T) = self.cfg, h.shape[:2]
        raw = self.surface_head(self.dec_dense(h)).view(B, T, len(cfg.quantiles), -1)
        q = self._quantiles(raw)                                                # (B, T, Q, G)
        if self.rv_idx:
            mid = q[:, :, self.mid:self.mid + 1]
            q = mid + (q - mid) * torch.exp(self.width_path(fs, C)).unsqueeze(2)
            q = q + self.linear_path(fs, C, anchor).unsqueeze(2)
        return q.view(B, T, len(cfg.quantiles), cfg.n_maturity, cfg.n_moneyness), self.feat_head(h)

    def _lead(self, T: int, C: int, device, dtype):
        """(T,) days since the anchor (day C - 1): 0 on context days."""
        return (torch.arange(T, device=device) - (C - 1)).clamp_min(0).to(dtype)

    def linear_path(self, fs, C: int, anchor):
        """The linear backbone of the change target, in target units (B, T, G): a path from the RV features'
        change since the anchor to every grid point's log-vol change, plus error correction: log x reverts from the
        anchor at the learned daily rate rho towards the level L_t = a + b RV_t of the regression of vol on RV (fitted
        on the training split, fixed): after k days (1 - rho^k)(log L_t - log x_anchor). fs (B, T, F) standardised
        features (unclipped), the anchor day at index C - 1; anchor (B, n_mat, n_mon) vols. The network's output is
        added to this; alone, it is the `backbone` baseline."""
        rv = fs[..., self.rv_idx]                                               # (B, T, R)
        k = self._lead(fs.shape[1], C, fs.device, fs.dtype)
        keep = torch.exp(k[:, None] * F.logsigmoid(-self.ecm_rate))            # rho^k, (T, G)
        log_a = torch.log(anchor).flatten(1)[:, None]                           # (B, 1, G)
        rv_vol = torch.exp(rv * self.f_std[self.rv_idx] + self.f_mean[self.rv_idx])   # RV in vol units
        level = (self.ecm_a + rv_vol @ self.ecm_b).clamp_min(1e-3)              # (B, T, G), linear in RV
        ecm = (1 - keep) * (torch.log(level) - log_a)                           # (B, T, G) in log vol
        return self.rv_link(rv - rv[:, C - 1:C]) + ecm / self.c_std.flatten()

    def width_path(self, fs, C: int):
        """Log scale (B, T, G) of the quantiles' half-widths: linear in the unclipped standardised log-RV levels and
        in log(1 + days since the anchor), clamped to +-WIDTH_CLAMP (a factor of e^4 ~ 55 either way)."""
        k = self._lead(fs.shape[1], C, fs.device, fs.dtype)
        log_w = self.width_link(fs[..., self.rv_idx]) + torch.log1p(k)[:, None] * self.width_lead
        return log_w.clamp(-WIDTH_CLAMP, WIDTH_CLAMP)

    def _inputs(self, surface, feats):
        """Standardised inputs: the surface (B, T, G) clipped to +-clip, the features (B, T, F) unclipped."""
        return self.norm_s(surface).flatten(2).clamp(-self.clip, self.clip), self.norm_f(feats)

    def _posterior(self, xs, fs):                  # (B, T, G), (B, T, F) -> mu, logvar (B, T, L)
        mu, logvar = self.to_latent(self.posterior(xs, fs)).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def _context(self, xs, fs):                    # context days only -> (B, C, M)
        return self.ctx_proj(self.context(xs, fs))

    def prior(self, h_prev, exo):
        """p(z_t | h_{t-1}, e_t): h_prev (B, T, M) the decoder state before day t, exo (B, T, E) -> mu, logvar."""
        if self.cfg.prior == "standard":
            z = h_prev.new_zeros(*h_prev.shape[:2], self.cfg.latent_dim)
            return z, z
        mu, logvar = self.prior_net(torch.cat([h_prev, exo], -1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    # --- training ---
    def forward(self, surface, feats, context_len: int, sample_posterior: bool = True) -> dict:
        """Training pass: surface (B, T, n_mat, n_mon) in vols and feats (B, T, F) raw, every day real; the
        first `context_len` days are the context. z comes from the posterior on every day (its mean with
        `sample_posterior=False`). Returns 'q' (B, T, Q, n_mat, n_mon) in the target space, 'feat' (B, T, F)
        standardised, 'mu'/'logvar' the posterior and 'prior_mu'/'prior_logvar' the prior (B, T, L), and
        'anchor' (B, n_mat, n_mon) the last context day in vols."""
        C, (B, T) = context_len, surface.shape[:2]
        xs, fs_all = self._inputs(surface, feats)                               # (B, T, G), (B, T, F)
        fs = fs_all.clamp(-self.clip, self.clip)
        mu, logvar = self._posterior(xs, fs)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample_posterior else mu
        ctx = self._context(xs[:, :C], fs[:, :C])
        ctx = torch.cat([ctx, ctx.new_zeros(B, T - C, ctx.shape[-1])], dim=1)  # zeros on future days
        exo = fs[..., self.exo_idx]                                             # (B, T, E)
        h, _ = self.dec_lstm(torch.cat([ctx, z, exo], dim=-1))                  # (B, T, M)
        h_prev = torch.cat([h.new_zeros(B, 1, h.shape[-1]), h[:, :-1]], dim=1)
        pmu, plogvar = self.prior(h_prev, exo)
        q, feat = self._heads(h, fs_all, C, surface[:, C - 1])
        return {"q": q, "feat": feat, "mu": mu, "logvar": logvar, "prior_mu": pmu, "prior_logvar": plogvar,
                "anchor": surface[:, C - 1]}

    # --- generation ---
    def forecast(self, ctx_surface, ctx_feats, horizon: int, future_feats=None, *,
                 generator: torch.Generator | None = None, prior_scale: float = 1.0) -> dict:
        """Forecast `horizon` days after a context: ctx_surface (B, C, n_mat, n_mon) vols, ctx_feats (B, C, F) raw,
        future_feats (B, horizon, F) raw (only e_t is read, and only with known_future). The context days use
        the posterior mean; each future day draws z_t from the prior (`prior_scale` 0: the prior mean, a
        deterministic point forecast). Returns the keys of `forward` for the C + horizon days (no posterior on
        future days: 'mu'/'logvar' cover the context)."""
        cfg, (B, C), H = self.cfg, ctx_surface.shape[:2], int(horizon)
        xs, fs_ctx = self._inputs(ctx_surface, ctx_feats)
        fs = fs_ctx.clamp(-self.clip, self.clip)
        mu, logvar = self._posterior(xs, fs)
        exo_c = fs[..., self.exo_idx]
        if self.exo_idx:
            if future_feats is None or future_feats.shape[1] < H:
                raise ValueError(f"known_future: forecast needs future_feats for {H} days")
            exo_f = self.norm_f(future_feats[:, :H])[..., self.exo_idx].clamp(-self.clip, self.clip)   # (B, H, E)
        else:
            exo_f = fs.new_zeros(B, H, 0)
        ctx = self._context(xs, fs)
        h_c, state = self.dec_lstm(torch.cat([ctx, mu, exo_c], -1))            # (B, C, M)
        eps = torch.randn(B, H, cfg.latent_dim, generator=generator, device=xs.device).to(mu.dtype)
        zeros = ctx.new_zeros(B, H, ctx.shape[-1])
        if cfg.prior == "standard":                                             # z independent of the path
            pmu = plogvar = torch.zeros_like(eps)
            h_f, _ = self.dec_lstm(torch.cat([zeros, prior_scale * eps, exo_f], -1), state)
        else:                                                                   # day by day, z_t ~ p(. | h_{t-1})
            h_prev, hs, pms, plvs = h_c[:, -1:], [], [], []
            for t in range(H):
                pm, plv = self.prior(h_prev, exo_f[:, t:t + 1])
                z = pm + prior_scale * torch.exp(0.5 * plv) * eps[:, t:t + 1]
                h_prev, state = self.dec_lstm(torch.cat([zeros[:, :1], z, exo_f[:, t:t + 1]], -1), state)
                hs.append(h_prev), pms.append(pm), plvs.append(plv)
            h_f, pmu, plogvar = torch.cat(hs, 1), torch.cat(pms, 1), torch.cat(plvs, 1)
        fs_all = torch.cat([fs_ctx, self.norm_f(future_feats[:, :H]) if self.exo_idx else fs.new_zeros(B, H, fs.shape[-1])], 1)
        q, feat = self._heads(torch.cat([h_c, h_f], 1), fs_all, C, ctx_surface[:, C - 1])
        return {"q": q, "feat": feat, "mu": mu, "logvar": logvar, "prior_mu": pmu, "prior_logvar": plogvar,
                "anchor": ctx_surface[:, C - 1]}


def pinball(q_pred, target, quantiles, weights) -> torch.Tensor:
    """Weighted pinball loss. q_pred (..., Q, n_mat, n_mon), target (..., n_mat, n_mon) -> scalar
    sum_q w_q * mean(max(q u, (q - 1) u)), u = target - prediction."""
    qs = torch.as_tensor(quantiles, dtype=q_pred.dtype, device=q_pred.device).view(-1, 1, 1)
    w = torch.as_tensor(weights, dtype=q_pred.dtype, device=q_pred.device)
    u = target.unsqueeze(-3) - q_pred
    per_q = torch.maximum(qs * u, (qs - 1) * u)                  # (..., Q, n_mat, n_mon)
    return (per_q.movedim(-3, 0).reshape(len(w), -1).mean(1) * w).sum()


def kl_divergence(mu, logvar, prior_mu=None, prior_logvar=None) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) (diagonal; the prior defaults to N(0, I)), summed
    over latent dims, averaged over batch and days."""
    if prior_mu is None:
        prior_mu, prior_logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
    kl = 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1)
    return kl.sum(-1).mean()


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
    """Loss on the given days of one training pass (targets in vols/raw features, compared in the target space):
    pinball(surface quantiles) + feat_weight * L2(return [or all features]) + kl_weight * KL, the KL to the
    model's prior over every day up to the last loss day (the posteriors those predictions were decoded from)."""
    tgt_s = model.to_target(surface[:, days], out["anchor"])
    tgt_f = model.norm_f(feats[:, days])
    rec = pinball(out["q"][:, days], tgt_s, w.quantiles, w.quantile_weights)
    diff = out["feat"][:, days] - tgt_f
    if w.ret_only:
        diff = diff[..., :1]
    feat = diff.pow(2).mean() if w.feat_loss == "l2" else diff.abs().mean()
    upto = slice(0, days.stop)
    kl = kl_divergence(out["mu"][:, upto], out["logvar"][:, upto], out["prior_mu"][:, upto],
                       out["prior_logvar"][:, upto])
    total = rec + w.feat_weight * feat + w.kl_weight * kl
    return {"loss": total, "pinball": rec.detach(), "feat": feat.detach(), "kl": kl.detach()}
