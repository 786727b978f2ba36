"""The learned conditional prior, the change target and known-future inputs (issue 8)."""
import numpy as np
import pytest
import torch

from backfill.data import REFERENCE_MATURITIES as MAT, REFERENCE_MONEYNESS as MON, FEATURES, RET, RV, skew_slope
from backfill.model import CVAE, LossWeights, ModelConfig, day_loss, kl_divergence

CONFIGS = {"plan": dict(prior="standard", target="level"),
           "conditional": dict(prior="conditional", target="change", known_future=True, rv_halflives=(5, 21))}


def _model(kind, seed=0):
    torch.manual_seed(seed)
    return CVAE(ModelConfig(5, 5, latent_dim=3, mem_hidden=16, mem_layers=2, mem_dropout=0.3, surface_hidden=(5, 5),
                            **CONFIGS[kind])).eval()


def _data(B, T, n_feat, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.05 * torch.rand(B, T, 5, 5, generator=g)
    r = 0.01 * torch.randn(B, T, generator=g)
    sk, sl = skew_slope(x, MAT, MON)
    rv = [torch.log(0.15 + 0.05 * torch.rand(B, T, generator=g)) for _ in range(n_feat - 3)]
    return x, torch.stack([r, sk, sl, *rv], -1)


def test_the_config_is_built_by_keyword_and_derives_its_sizes():
    cfg = ModelConfig(5, 5, **CONFIGS["conditional"])
    assert cfg.n_feat == len(FEATURES) + 2 and cfg.rv_cols == [RV, RV + 1] and cfg.exo_cols == [RET, RV, RV + 1]
    assert cfg.has_backbone and cfg.clip == 4.0 and cfg.mid == 1 and "n_feat" not in cfg.to_dict()
    plan = ModelConfig(5, 5, **CONFIGS["plan"])
    assert plan.n_feat == 3 and plan.exo_cols == [] and not plan.has_backbone and plan.clip == float("inf")
    with pytest.raises(ValueError, match="prior must be one of"):
        ModelConfig(5, 5, prior="gaussian")


def test_every_parameter_is_listed_once_the_backbone_rates_first():
    # the order of the model before it had named parts: gradient clipping sums the norms in this order
    model = _model("conditional")
    ps = list(model.parameters())
    assert len(ps) == len({id(p) for p in ps}) == len(dict(model.named_parameters()))
    assert ps[0] is model.backbone.ecm_rate and ps[1] is model.backbone.width_lead
    assert ps[2] is model.posterior.dense[0].weight and ps[-1] is model.backbone.width_link.bias
    plan = _model("plan")                                    # no backbone: the modules' own order
    assert [id(p) for p in plan.parameters()] == [id(p) for _, p in plan.named_parameters()]


def test_kl_to_a_learned_prior_hand_cases():
    mu, lv = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    assert kl_divergence(mu, lv, mu, lv).item() == pytest.approx(0.0, abs=1e-6)     # posterior = prior
    assert kl_divergence(mu, lv, mu + 0.5, lv).item() > 0
    # KL(N(1, 1) || N(0, 4)) = 0.5 (log 4 + (1 + 1) / 4 - 1), one latent dim
    one = torch.ones(1, 1, 1)
    assert kl_divergence(one, 0 * one, 0 * one, np.log(4.0) * one).item() == pytest.approx(
        0.5 * (np.log(4) + 0.5 - 1), rel=1e-5)
    # the default prior is N(0, I): KL(N(1, 1) || N(0, 1)) = 0.5
    assert kl_divergence(one, 0 * one).item() == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_forecast_shapes_and_seeded_determinism(kind):
    model = _model(kind)
    F = model.cfg.n_feat
    x, a = _data(3, 10 + 12, F)
    run = lambda seed, scale=1.0: model.forecast(x[:, :10], a[:, :10], 12, a[:, 10:],  # noqa: E731
                                                 generator=torch.Generator().manual_seed(seed), prior_scale=scale)
    o1, o2, o3 = run(7), run(7), run(8)
    assert o1["q"].shape == (3, 22, 3, 5, 5) and o1["feat"].shape == (3, 22, F)
    assert o1["prior_mu"].shape == (3, 12, 3)
    assert torch.equal(o1["q"], o2["q"])                         # same seed, same draws
    assert not torch.allclose(o1["q"][:, 10:], o3["q"][:, 10:])  # another seed, other draws
    assert torch.equal(run(7, 0.0)["q"], run(8, 0.0)["q"])     # prior mean: deterministic


def test_conditional_prior_is_the_same_in_training_and_generation():
    """The prior of the first future day depends only on the context: forward (training) and forecast must agree."""
    model = _model("conditional")
    x, a = _data(2, 16, 5)
    tr = model(x, a, 10, sample_posterior=False)
    fc = model.forecast(x[:, :10], a[:, :10], 6, a[:, 10:], prior_scale=0.0)
    torch.testing.assert_close(tr["prior_mu"][:, 10], fc["prior_mu"][:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tr["prior_logvar"][:, 10], fc["prior_logvar"][:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tr["q"][:, :10], fc["q"][:, :10], atol=1e-5, rtol=1e-5)   # context days


def test_conditional_latent_path_is_coherent():
    """With the conditional prior, day t's prior moves with the latent drawn on day t-1 (it is not N(0, I))."""
    model = _model("conditional")
    with torch.no_grad():
        for prm in model.prior.net.parameters():
            prm.add_(0.3 * torch.randn_like(prm))
    x, a = _data(1, 16, 5)
    a2 = torch.cat([a[:, :10], a[:, 10:]], 1)
    f1 = model.forecast(x[:, :10], a[:, :10], 6, a2[:, 10:], generator=torch.Generator().manual_seed(1))
    f2 = model.forecast(x[:, :10], a[:, :10], 6, a2[:, 10:], generator=torch.Generator().manual_seed(2))
    assert torch.allclose(f1["prior_mu"][:, 0], f2["prior_mu"][:, 0])          # day 1: same past
    assert not torch.allclose(f1["prior_mu"][:, 1], f2["prior_mu"][:, 1])      # day 2: depends on z_1


def test_known_future_inputs_move_the_forecast_only_when_enabled():
    for kind, moves in (("plan", False), ("conditional", True)):
        model = _model(kind)
        x, a = _data(2, 16, model.cfg.n_feat)
        a2 = a.clone()
        a2[:, 10:, RET] -= 0.05                   # a crash in the known future returns
        if a.shape[-1] > RV:
            a2[:, 10:, RV:] += 1.0                # and higher realised vol
        f1 = model.forecast(x[:, :10], a[:, :10], 6, a[:, 10:], prior_scale=0.0)["q"]
        f2 = model.forecast(x[:, :10], a[:, :10], 6, a2[:, 10:], prior_scale=0.0)["q"]
        assert torch.allclose(f1[:, :10], f2[:, :10])                       # context days unchanged
        assert (not torch.allclose(f1[:, 10:], f2[:, 10:])) == moves


def test_change_target_round_trip_and_random_walk_zero_point():
    model = _model("conditional")
    model.scaler.c_std.fill_(0.07)
    x, _ = _data(2, 8, 5)
    anchor = x[:, 3]
    y = model.to_target(x, anchor)
    torch.testing.assert_close(model.to_vol(y.unsqueeze(2), anchor)[:, :, 0], x)
    zero = torch.zeros(2, 4, 3, 5, 5)
    torch.testing.assert_close(model.to_vol(zero, anchor), anchor[:, None, None].expand(2, 4, 3, 5, 5))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_loss_trains_the_prior_towards_the_posterior(kind):
    model = _model(kind).train()
    x, a = _data(4, 14, model.cfg.n_feat)
    w = LossWeights((0.05, 0.5, 0.95), (5.0, 1.0, 5.0), kl_weight=1.0, feat_weight=1.0)
    out = model(x, a, 10)
    d = day_loss(model, out, x, a, slice(10, 14), w)
    d["loss"].backward()
    if kind == "conditional":
        assert any(prm.grad is not None and prm.grad.abs().sum() > 0 for prm in model.prior.net.parameters())
    assert torch.isfinite(d["loss"]) and d["kl"] >= 0


def test_error_correction_backbone_follows_realised_vol_beyond_the_training_range():
    """With the change target and known RV, the median is anchor * exp((1 - rho^k)(log L_t - log anchor)) times the
    network's residual, L_t = a + b RV_t linear in RV (in vol) as in the econometric baseline: with the
    residual zeroed and rho -> 0 it is L_t, however far RV_t lies outside the training range (the networks see
    their inputs clipped; the backbone does not)."""
    model = _model("conditional")
    with torch.no_grad():
        model.decoder.surface_head.weight.zero_()
        model.decoder.surface_head.bias.zero_()
        bb = model.backbone
        bb.rv_link.weight.zero_()
        bb.ecm_rate.fill_(30.0)                             # rho = 1 - sigmoid(30): full reversion after a day
        bb.ecm_b.zero_()
        bb.ecm_b[0] = 0.8
        bb.ecm_a.fill_(0.02)
    x, a = _data(1, 16, 5)
    a[:, 10:, RV] = np.log(1.5)                             # realised vol of 150% on the future days
    out = model.forecast(x[:, :10], a[:, :10], 6, a[:, 10:], prior_scale=0.0)
    vols = model.to_vol(out["q"][:, 10:], out["anchor"])[:, :, model.mid]
    want = 0.02 + 0.8 * 1.5
    torch.testing.assert_close(vols, torch.full_like(vols, float(want)), rtol=1e-4, atol=1e-6)
    assert vols.min() > 4 * x.max()                         # far above every surface the model saw


def test_interval_widths_follow_realised_vol_beyond_the_training_range():
    """The half-widths around the median are scaled by exp(width path), linear in the *unclipped* standardised
    log-RV levels and in log(1 + lead): with a positive RV weight the band widens without bound as RV leaves the
    training range (the network's inputs are clipped at +-4 sd and could not do it), and at initialisation the path
    is zero (the network's own widths)."""
    model = _model("conditional")
    x, a = _data(1, 16, 5)
    zero = model.forecast(x[:, :10], a[:, :10], 6, a[:, 10:], prior_scale=0.0)["q"]
    bb, scaler = model.backbone, model.scaler
    assert bb.width_path(scaler.norm_f(a), 10).abs().max() == 0                      # zero at initialisation
    with torch.no_grad():
        bb.width_link.weight.zero_()
        bb.width_link.weight[:, 0] = 0.2                 # +0.2 log width per sd of the 5-day log RV
    def half_width(rv_sd):
        b = a.clone()
        b[:, 10:, RV] = scaler.f_mean[RV] + rv_sd * scaler.f_std[RV]
        q = model.forecast(x[:, :10], b[:, :10], 6, b[:, 10:], prior_scale=0.0)["q"][:, 10:]
        return (q[:, :, -1] - q[:, :, model.mid])                                     # (1, 6, 5, 5)
    h0, h6, h12 = half_width(0.0), half_width(6.0), half_width(12.0)
    # the decoder sees the RV clipped at 4 sd in both cases, so its own widths are the same at 6 and 12 sd: the ratio
    # is the path's exp(0.2 * 6) exactly, the same as from 0 to 6 up to what the (clipped) network adds below 4 sd
    torch.testing.assert_close(h12 / h6, torch.full_like(h6, float(np.exp(0.2 * 6))), rtol=1e-4, atol=1e-6)
    assert (h6 / h0).min() > 2.0
    assert not torch.equal(zero, model.forecast(x[:, :10], a[:, :10], 6, a[:, 10:], prior_scale=0.0)["q"])
    # the lead path: widths grow as (1 + k)^w_lead
    with torch.no_grad():
        bb.width_link.weight.zero_()
        bb.width_lead.fill_(0.5)
    lw = bb.width_path(scaler.norm_f(a), 10)[0, :, 0]
    torch.testing.assert_close(lw[9:], 0.5 * torch.log1p(torch.arange(7.0)))
