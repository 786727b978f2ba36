"""The conditional VAE with LSTM memory and a quantile decoder (docs/design.md §4-5; the equations are on the book's
method page, book/method.md).

Per day t: surface x_t (n_mat x n_mon) and features a_t = [return, skew, slope, log RV_h1, ...] (data.FEATURES).
  posterior   Encoder: dense(x_t) || a_t -> LSTM -> q(z_t | x_<=t) = N(mu_t, diag sigma_t^2)       (causal in t)
  context     Encoder, same structure, own weights, context days only -> embedding c_t (zeros on future days)
  decoder     h_t = LSTM(h_{t-1}, [c_t || z_t || e_t]) -> monotone quantiles of y_t, and a_t
  prior       p(z_t | h_{t-1}, e_t): N(0, I) (`standard`, the plan) or a learned normal (`conditional`)
  backbone    the working model only (change target, known RV): a linear path and an error-correction level that the
              decoder's quantiles are added to, and interval widths that follow realised vol
  scaler      the standardisation of the inputs, fitted on the training split and stored (buffers), so that a
              checkpoint is self-contained
where e_t are the inputs a backfill knows on every day from the underlying's returns (the return and its
realised-vol features; only with `known_future`).

Targets: `level`, y_t = standardised vol (the plan); `change`, y_t = (log x_t - log x_anchor) / c with x_anchor the
last context day, so that the random walk is the zero point and a forecast can leave the training range.
Training draws z from the posterior (reparameterised); a forecast uses the posterior mean on context days and draws
future days' z from the prior, day by day: `forward` and `forecast` share one encoding of the days they see in full
(`_encode`) and one decoder step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import FEATURES, RET, RV
from .params import PRIORS, TARGETS

CLIP = 4.0      # change target: standardised inputs of the networks are clipped to +-4 sd of the training split;
                # the backbone reads them unclipped, so forecasts still extrapolate along it
WIDTH_CLAMP = 4.0               # the width path's log scale stays within +-4 (a factor of e^4 ~ 55 either way)
LOGVAR_CLAMP = (-12.0, 8.0)     # of the posterior's and the learned prior's log variances
CHANGE_SCALE_DAYS = 20          # change target: c is the training split's sd of 20-day log changes


@dataclass
class ModelConfig:
    """What a model is built from: `from_params` takes every field but the grid from the params' `model` section."""
    n_maturity: int
    n_moneyness: int
    latent_dim: int = 5
    mem_hidden: int = 100
    mem_layers: int = 2
    mem_dropout: float = 0.3
    surface_hidden: tuple = (5, 5, 5)
    quantiles: tuple = (0.05, 0.5, 0.95)
    context_len: int = 60           # C: days of context the model was trained with
    prior: str = "standard"         # one of params.PRIORS
    target: str = "level"           # one of params.TARGETS
    known_future: bool = False      # the decoder and prior see e_t (return, RV features) on future days
    rv_halflives: tuple = ()        # half-lives (days) of the log-RV features, in feature order

    def __post_init__(self):
        if self.prior not in PRIORS or self.target not in TARGETS:
            raise ValueError(f"prior must be one of {PRIORS} and target one of {TARGETS}, got {self.prior!r}, "
                             f"{self.target!r}")

    @classmethod
    def from_params(cls, p: dict, grid: tuple[int, int]) -> "ModelConfig":
        m = p["model"]
        tup = lambda v: tuple(v) if isinstance(v, list) else v        # noqa: E731
        return cls(n_maturity=grid[0], n_moneyness=grid[1], latent_dim=m["latent_dim"], mem_hidden=m["mem_hidden"],
                   mem_layers=m["mem_layers"], mem_dropout=m["mem_dropout"], surface_hidden=tup(m["surface_hidden"]),
                   quantiles=tup(m["quantiles"]), context_len=m["context_len"], prior=m["prior"], target=m["target"],
                   known_future=m["known_future"], rv_halflives=tup(m["rv_halflives"]))

    def to_dict(self) -> dict:
        return asdict(self)

    # --- derived, never stored ---
    @property
    def n_feat(self) -> int:
        """F: the columns of data.Dataset.features: return, skew, slope, one log RV per half-life."""
        return len(FEATURES) + len(self.rv_halflives)

    @property
    def n_grid(self) -> int:
        """G: grid points per surface."""
        return self.n_maturity * self.n_moneyness

    @property
    def mid(self) -> int:
        """Index of the median among the quantiles."""
        return list(self.quantiles).index(0.5)

    @property
    def rv_cols(self) -> list[int]:
        """The log-RV feature columns."""
        return list(range(RV, self.n_feat))

    @property
    def exo_cols(self) -> list[int]:
        """The columns of e_t, known on every day of a backfill (with `known_future`): the return and RV features."""
        return [RET, *self.rv_cols] if self.known_future else []

    @property
    def has_backbone(self) -> bool:
        """The working model: a change target with known realised vol gets the linear backbone."""
        return self.known_future and self.target == "change" and bool(self.rv_halflives)

    @property
    def clip(self) -> float:
        """Where the networks' standardised inputs are clipped: the plan's level model is unclipped."""
        return CLIP if self.target == "change" else float("inf")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers)


def _lstm(n_in: int, cfg: ModelConfig) -> nn.LSTM:
    return nn.LSTM(n_in, cfg.mem_hidden, cfg.mem_layers, batch_first=True,
                   dropout=cfg.mem_dropout if cfg.mem_layers > 1 else 0.0)


class Encoder(nn.Module):
    """dense(surface) || features -> LSTM -> a linear head: the structure of both encoders (posterior and context)."""

    def __init__(self, cfg: ModelConfig, n_out: int):
        super().__init__()
        self.dense = _mlp([cfg.n_grid, *cfg.surface_hidden])
        self.lstm = _lstm(cfg.surface_hidden[-1] + cfg.n_feat, cfg)
        self.head = nn.Linear(cfg.mem_hidden, n_out)

    def forward(self, x, a):                       # x (B, T, G), a (B, T, F) standardised
        h, _ = self.lstm(torch.cat([self.dense(x), a], -1))
        return self.head(h)                        # (B, T, n_out)


class Decoder(nn.Module):
    """h_t = LSTM(h_{t-1}, [c_t || z_t || e_t]); from h_t the quantiles of y_t (monotone by construction) and a_t."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        M, L, E, Q = cfg.mem_hidden, cfg.latent_dim, len(cfg.exo_cols), len(cfg.quantiles)
        self.mid, self.n_quantiles = cfg.mid, Q
        self.lstm = _lstm(M + L + E, cfg)
        self.dense = _mlp([M, *reversed(cfg.surface_hidden)])
        self.surface_head = nn.Linear(cfg.surface_hidden[0], Q * cfg.n_grid)
        self.feat_head = nn.Linear(M, cfg.n_feat)

    def step(self, ctx, z, exo, state=None):
        """ctx (B, T, M), z (B, T, L), exo (B, T, E) -> h (B, T, M) and the LSTM state after day T."""
        return self.lstm(torch.cat([ctx, z, exo], -1), state)

    def quantiles(self, h):
        """h (B, T, M) -> (B, T, Q, G) in the target space: the median, and the other quantiles at cumulated softplus
        distances from it, so that they never cross."""
        B, T = h.shape[:2]
        raw = self.surface_head(self.dense(h)).view(B, T, self.n_quantiles, -1)          # (B, T, Q, G)
        mid = raw[:, :, self.mid:self.mid + 1]
        up = mid + torch.cumsum(F.softplus(raw[:, :, self.mid + 1:]), dim=2)
        down = mid - torch.cumsum(F.softplus(raw[:, :, :self.mid].flip(2)), dim=2).flip(2)
        return torch.cat([down, mid, up], dim=2)

    def features(self, h):
        """h (B, T, M) -> the standardised features (B, T, F)."""
        return self.feat_head(h)


class Prior(nn.Module):
    """p(z_t | h_{t-1}, e_t) = N(m, diag s^2). `standard`: N(0, I), no parameters (the plan). `conditional`: a small
    network of the decoder's previous state (which carries the context and the days already generated) and of what is
    known about day t: it sees nothing a forecast could not see."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.net = None
        if cfg.prior == "conditional":
            M, E = cfg.mem_hidden, len(cfg.exo_cols)
            self.net = nn.Sequential(_mlp([M + E, M]), nn.Linear(M, 2 * cfg.latent_dim))

    def forward(self, h_prev, exo):
        """h_prev (B, T, M) the decoder state before day t, exo (B, T, E) -> mu, logvar (B, T, L)."""
        if self.net is None:
            z = h_prev.new_zeros(*h_prev.shape[:2], self.latent_dim)
            return z, z
        mu, logvar = self.net(torch.cat([h_prev, exo], -1)).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_CLAMP)


class Standardisation(nn.Module):
    """The inputs' scales, fitted on the training split (`fit`) and kept in buffers, so that a checkpoint carries them:
    per grid point the mean and sd of vol (s_mean, s_std) and the sd of 20-day log changes (c_std: the unit c of the
    change target), per feature column the mean and sd (f_mean, f_std)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        grid = (cfg.n_maturity, cfg.n_moneyness)
        self.register_buffer("s_mean", torch.zeros(grid))
        self.register_buffer("s_std", torch.ones(grid))
        self.register_buffer("f_mean", torch.zeros(cfg.n_feat))
        self.register_buffer("f_std", torch.ones(cfg.n_feat))
        self.register_buffer("c_std", torch.ones(grid))

    @torch.no_grad()
    def fit(self, surface, feats) -> None:
        """surface (T, n_mat, n_mon) vols and feats (T, F) raw features of the training split."""
        s, f = surface, feats
        self.s_mean.copy_(s.mean(0))
        self.s_std.copy_(s.std(0).clamp_min(1e-4))
        self.f_mean.copy_(f.mean(0))
        self.f_std.copy_(f.std(0).clamp_min(1e-6))
        k = min(CHANGE_SCALE_DAYS, max(len(s) // 2, 1))
        self.c_std.copy_((s[k:].log() - s[:-k].log()).std(0).clamp_min(1e-4))

    def norm_s(self, x):                           # vols (..., n_mat, n_mon) -> standardised
        return (x - self.s_mean) / self.s_std

    def norm_f(self, a):                           # raw features (..., F) -> standardised
        return (a - self.f_mean) / self.f_std

    def to_feat(self, f_norm):                     # standardised features (..., F) -> raw
        return f_norm * self.f_std + self.f_mean


def _lead(T: int, C: int, device, dtype):
    """(T,) days since the anchor (day C - 1): 0 on context days."""
    return (torch.arange(T, device=device) - (C - 1)).clamp_min(0).to(dtype)


class Backbone(nn.Module):
    """The working model's linear part (change target with known realised vol), in target units: the decoder's
    quantiles are added to its linear path, and their half-widths around the median are scaled by its width path.

      linear path  W (z_t - z_a) + (1 - rho^k) (log L_t - log x_a) / c: z the standardised log-RV features (unclipped,
                   so that a forecast follows realised stress beyond the training range), L_t = a + b RV_t the level of
                   the regression of vol on RV per grid point (`fit` on the training split, then fixed), rho a learned
                   daily rate of reversion from the anchor x_a, k the days since the anchor;
      width path   log scale V z_t + v log(1 + k), clamped to +-WIDTH_CLAMP.

    W, V and v start at zero (the network's own medians and widths). Alone, the linear path is the `backbone`
    baseline (baselines.Backbone)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        G, R = cfg.n_grid, len(cfg.rv_cols)
        self.rv_cols, self.mid = cfg.rv_cols, cfg.mid
        self.rv_link = nn.Linear(R, G, bias=False)                             # W
        nn.init.zeros_(self.rv_link.weight)
        self.register_buffer("ecm_a", torch.full((G,), 0.2))                 # a: vol
        self.register_buffer("ecm_b", torch.zeros(R, G))                     # b: vol per unit of RV (vol)
        self.ecm_rate = nn.Parameter(torch.full((G,), -4.0))   # rho = 1 - sigmoid(rate): half-life ~ 38 days at first
        self.width_link = nn.Linear(R, G)                                      # V (and a bias)
        nn.init.zeros_(self.width_link.weight)
        nn.init.zeros_(self.width_link.bias)
        self.width_lead = nn.Parameter(torch.zeros(G))                         # v

    @torch.no_grad()
    def fit(self, surface, feats) -> None:
        """The level L = a + b RV: least squares of vol on RV (both in vol) per grid point, by the normal equations in
        float64. surface (T, n_mat, n_mon) vols and feats (T, F) raw features of the training split."""
        rv = torch.exp(feats[:, self.rv_cols]).double()                                  # (T, R)
        X = torch.cat([torch.ones(len(rv), 1, dtype=torch.float64), rv], 1)              # (T, 1 + R)
        coef = torch.linalg.solve(X.T @ X, X.T @ surface.flatten(1).double())            # (1 + R, G)
        self.ecm_a.copy_(coef[0])
        self.ecm_b.copy_(coef[1:])

    def linear_path(self, fs, C: int, anchor, scaler: Standardisation):
        """(B, T, G) in target units: fs (B, T, F) standardised features (unclipped), the anchor day at index C - 1;
        anchor (B, n_mat, n_mon) vols; `scaler` the model's standardisation."""
        rv = fs[..., self.rv_cols]                                              # (B, T, R)
        k = _lead(fs.shape[1], C, fs.device, fs.dtype)
        keep = torch.exp(k[:, None] * F.logsigmoid(-self.ecm_rate))            # rho^k, (T, G)
        log_a = torch.log(anchor).flatten(1)[:, None]                           # (B, 1, G)
        rv_vol = torch.exp(rv * scaler.f_std[self.rv_cols] + scaler.f_mean[self.rv_cols])   # RV in vol units
        level = (self.ecm_a + rv_vol @ self.ecm_b).clamp_min(1e-3)              # (B, T, G), linear in RV
        ecm = (1 - keep) * (torch.log(level) - log_a)                           # (B, T, G) in log vol
        return self.rv_link(rv - rv[:, C - 1:C]) + ecm / scaler.c_std.flatten()

    def width_path(self, fs, C: int):
        """Log scale (B, T, G) of the quantiles' half-widths; fs (B, T, F) standardised features (unclipped)."""
        k = _lead(fs.shape[1], C, fs.device, fs.dtype)
        log_w = self.width_link(fs[..., self.rv_cols]) + torch.log1p(k)[:, None] * self.width_lead
        return log_w.clamp(-WIDTH_CLAMP, WIDTH_CLAMP)

    def forward(self, q, fs, C: int, anchor, scaler: Standardisation):
        """The decoder's quantiles q (B, T, Q, G) in target units -> their widths scaled, the linear path added."""
        mid = q[:, :, self.mid:self.mid + 1]
        q = mid + (q - mid) * torch.exp(self.width_path(fs, C)).unsqueeze(2)
        return q + self.linear_path(fs, C, anchor, scaler).unsqueeze(2)


class CVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # built in this order, which is the order a seeded initialisation draws their weights in
        self.posterior = Encoder(cfg, 2 * cfg.latent_dim)     # -> mu, logvar of q(z_t | x_<=t)
        self.context = Encoder(cfg, cfg.mem_hidden)           # -> c_t
        self.decoder = Decoder(cfg)
        self.prior = Prior(cfg)
        self.backbone = Backbone(cfg) if cfg.has_backbone else None
        self.scaler = Standardisation(cfg)

    def parameters(self, recurse: bool = True):
        """Every parameter, the backbone's two rate vectors first: the order of the model before it was built from
        named parts. Gradient-norm clipping sums the parameters' norms in this order and the last bit of that sum can
        change a clipped step, so seeded runs stay bit-identical to those of the earlier code."""
        first = [self.backbone.ecm_rate, self.backbone.width_lead] if recurse and self.backbone is not None else []
        yield from first
        yield from (p for p in super().parameters(recurse) if not any(p is f for f in first))

    @property
    def context_len(self) -> int:
        return self.cfg.context_len

    @property
    def mid(self) -> int:
        return self.cfg.mid

    def fit_standardisation(self, surface, feats) -> None:
        """Fit the standardisation to the training split: surface (T, n_mat, n_mon) vols, feats (T, F) raw."""
        self.scaler.fit(surface, feats)

    # --- the target space ---
    def to_target(self, surface, anchor):
        """Vols (B, T, n_mat, n_mon) -> the decoder's target space, given the anchor (B, n_mat, n_mon)."""
        if self.cfg.target == "level":
            return self.scaler.norm_s(surface)
        return (torch.log(surface) - torch.log(anchor).unsqueeze(1)) / self.scaler.c_std

    def to_vol(self, q, anchor):
        """Decoder outputs (B, T, Q, n_mat, n_mon) in the target space -> implied vols."""
        if self.cfg.target == "level":
            return q * self.scaler.s_std + self.scaler.s_mean
        return anchor[:, None, None] * torch.exp(q * self.scaler.c_std)

    # --- shared by training and generation ---
    def _encode(self, surface, feats, C: int, sample_posterior: bool) -> dict:
        """The days seen in full (a training window; a forecast's context): surface (B, T, n_mat, n_mon) vols and
        feats (B, T, F) raw, the first C days the context. Returns 'fs' (B, T, F) the standardised features,
        unclipped (the backbone's input), the posterior 'mu'/'logvar' (B, T, L), 'z' (B, T, L) a draw from it (its
        mean without `sample_posterior`), 'ctx' (B, T, M) the context embedding (zeros after day C) and 'exo' (B, T, E)
        e_t, clipped (the networks' inputs are clipped to +-clip)."""
        cfg, (B, T) = self.cfg, surface.shape[:2]
        xs = self.scaler.norm_s(surface).flatten(2).clamp(-cfg.clip, cfg.clip)  # (B, T, G)
        fs = self.scaler.norm_f(feats)                                          # (B, T, F)
        fc = fs.clamp(-cfg.clip, cfg.clip)
        mu, logvar = self.posterior(xs, fc).chunk(2, dim=-1)
        logvar = logvar.clamp(*LOGVAR_CLAMP)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample_posterior else mu
        ctx = self.context(xs[:, :C], fc[:, :C])                               # (B, C, M)
        ctx = torch.cat([ctx, ctx.new_zeros(B, T - C, ctx.shape[-1])], dim=1)  # zeros on future days
        return {"fs": fs, "mu": mu, "logvar": logvar, "z": z, "ctx": ctx, "exo": fc[..., cfg.exo_cols]}

    def _output(self, h, fs, C: int, anchor, mu, logvar, prior_mu, prior_logvar) -> dict:
        """Decoder states h (B, T, M) and the standardised features fs (B, T, F, unclipped) -> the model's output."""
        cfg, (B, T) = self.cfg, h.shape[:2]
        q = self.decoder.quantiles(h)                                           # (B, T, Q, G)
        if self.backbone is not None:
            q = self.backbone(q, fs, C, anchor, self.scaler)
        q = q.view(B, T, len(cfg.quantiles), cfg.n_maturity, cfg.n_moneyness)
        return {"q": q, "feat": self.decoder.features(h), "mu": mu, "logvar": logvar, "prior_mu": prior_mu,
                "prior_logvar": prior_logvar, "anchor": anchor}

    # --- training ---
    def forward(self, surface, feats, context_len: int, sample_posterior: bool = True) -> dict:
        """Training pass: surface (B, T, n_mat, n_mon) in vols and feats (B, T, F) raw, every day real; the
        first `context_len` days are the context. z comes from the posterior on every day (its mean with
        `sample_posterior=False`). Returns 'q' (B, T, Q, n_mat, n_mon) in the target space, 'feat' (B, T, F)
        standardised, 'mu'/'logvar' the posterior and 'prior_mu'/'prior_logvar' the prior (B, T, L), and
        'anchor' (B, n_mat, n_mon) the last context day in vols."""
        C, B = context_len, surface.shape[0]
        e = self._encode(surface, feats, C, sample_posterior)
        h, _ = self.decoder.step(e["ctx"], e["z"], e["exo"])                    # (B, T, M)
        h_prev = torch.cat([h.new_zeros(B, 1, h.shape[-1]), h[:, :-1]], dim=1)  # the state before each day
        prior_mu, prior_logvar = self.prior(h_prev, e["exo"])
        return self._output(h, e["fs"], C, surface[:, C - 1], e["mu"], e["logvar"], prior_mu, prior_logvar)

    # --- generation ---
    def forecast(self, ctx_surface, ctx_feats, horizon: int, future_feats=None, *,
                 generator: torch.Generator | None = None, prior_scale: float = 1.0) -> dict:
        """Forecast `horizon` days after a context: ctx_surface (B, C, n_mat, n_mon) vols, ctx_feats (B, C, F) raw,
        future_feats (B, horizon, F) raw (only e_t is read, and only with known_future). The context days use
        the posterior mean; each future day draws z_t from the prior (`prior_scale` 0: the prior mean, a
        deterministic point forecast). Returns the keys of `forward` for the C + horizon days (no posterior on
        future days: 'mu'/'logvar' cover the context)."""
        cfg, (B, C), H = self.cfg, ctx_surface.shape[:2], int(horizon)
        e = self._encode(ctx_surface, ctx_feats, C, sample_posterior=False)
        if cfg.exo_cols:
            if future_feats is None or future_feats.shape[1] < H:
                raise ValueError(f"known_future: forecast needs future_feats for {H} days")
            fs_f = self.scaler.norm_f(future_feats[:, :H])                      # (B, H, F), unclipped
        else:
            fs_f = e["fs"].new_zeros(B, H, cfg.n_feat)
        exo_f = fs_f[..., cfg.exo_cols].clamp(-cfg.clip, cfg.clip)             # (B, H, E)
        h_c, state = self.decoder.step(e["ctx"], e["mu"], e["exo"])             # (B, C, M)
        eps = torch.randn(B, H, cfg.latent_dim, generator=generator, device=ctx_surface.device).to(e["mu"].dtype)
        zeros = e["ctx"].new_zeros(B, H, cfg.mem_hidden)                       # no context embedding after day C
        if cfg.prior == "standard":                                             # z independent of the path
            prior_mu = prior_logvar = torch.zeros_like(eps)
            h_f, _ = self.decoder.step(zeros, prior_scale * eps, exo_f, state)
        else:                                                                   # day by day, z_t ~ p(. | h_{t-1})
            h_prev, hs, pms, plvs = h_c[:, -1:], [], [], []
            for t in range(H):
                pm, plv = self.prior(h_prev, exo_f[:, t:t + 1])
                z = pm + prior_scale * torch.exp(0.5 * plv) * eps[:, t:t + 1]
                h_prev, state = self.decoder.step(zeros[:, :1], z, exo_f[:, t:t + 1], state)
                hs.append(h_prev), pms.append(pm), plvs.append(plv)
            h_f, prior_mu, prior_logvar = torch.cat(hs, 1), torch.cat(pms, 1), torch.cat(plvs, 1)
        return self._output(torch.cat([h_c, h_f], 1), torch.cat([e["fs"], fs_f], 1), C, ctx_surface[:, C - 1],
                            e["mu"], e["logvar"], prior_mu, prior_logvar)


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
    tgt_f = model.scaler.norm_f(feats[:, days])
    rec = pinball(out["q"][:, days], tgt_s, w.quantiles, w.quantile_weights)
    diff = out["feat"][:, days] - tgt_f
    if w.ret_only:
        diff = diff[..., RET:RET + 1]
    feat = diff.pow(2).mean() if w.feat_loss == "l2" else diff.abs().mean()
    upto = slice(0, days.stop)
    kl = kl_divergence(out["mu"][:, upto], out["logvar"][:, upto], out["prior_mu"][:, upto],
                       out["prior_logvar"][:, upto])
    total = rec + w.feat_weight * feat + w.kl_weight * kl
    return {"loss": total, "pinball": rec.detach(), "feat": feat.detach(), "kl": kl.detach()}
