"""Rollout context assembly, model causality, the multi-horizon loss and gradient flow."""
import numpy as np
import pytest
import torch

from backfill.data import REFERENCE_MATURITIES as MAT, REFERENCE_MONEYNESS as MON, skew_slope
from backfill.model import CVAE, LossWeights, ModelConfig, day_loss
from backfill.rollout import RolloutError, check_rollout, context_sources, rollout, rollout_loss
from backfill.phases import multihorizon_loss

C = 60


def _expand(segments):
    """Hand tables are runs: ('real', d0, d1) or ('step', s, k0, k1), inclusive."""
    out = []
    for seg in segments:
        if seg[0] == "real":
            out += [("real", d) for d in range(seg[1], seg[2] + 1)]
        else:
            out += [("step", seg[1], k) for k in range(seg[2], seg[3] + 1)]
    return out


# Window-day arithmetic: step s predicts window days [C+sO, C+sO+H); its day k is window day C+sO+k.
HAND = {
    # H90/O90, the plan's deployment target: step 2 context = pred[90:150] (step 0's days 30..89),
    # step 3 context = pred[180:240] (step 1's days 30..89).
    (90, 90): [[("real", 0, 59)],
               [("step", 0, 30, 89)],
               [("step", 1, 30, 89)]],
    # H90/O45: step 2 context = real[45:60] + pred[60:105]; step 3 context = days 90..149: days 90..104
    # only step 0 covers, days 105..149 the more recent step 1 covers.
    (90, 45): [[("real", 0, 59)],
               [("real", 45, 59), ("step", 0, 0, 44)],
               [("step", 0, 30, 44), ("step", 1, 0, 44)]],
    # H60/O60: non-overlapping, each step reads the whole previous prediction.
    (60, 60): [[("real", 0, 59)],
               [("step", 0, 0, 59)],
               [("step", 1, 0, 59)]],
    # H60/O30: step 2 context = real[30:60] + pred[60:90]; step 3 context = days 60..119: 60..89 from
    # step 0 only, 90..119 from step 1 (more recent than step 0's days 30..59).
    (60, 30): [[("real", 0, 59)],
               [("real", 30, 59), ("step", 0, 0, 29)],
               [("step", 0, 0, 29), ("step", 1, 0, 29)]],
}


@pytest.mark.parametrize("H,O", list(HAND))
@pytest.mark.parametrize("step", [0, 1, 2])
def test_context_sources_match_hand_tables(H, O, step):
    assert context_sources(C, H, O, step) == _expand(HAND[(H, O)][step])


@pytest.mark.parametrize("H,O,length", [(90, 90, 330), (90, 45, 240), (60, 60, 240), (60, 30, 180)])
def test_window_lengths(H, O, length):
    assert check_rollout(C, H, O, 3) == length


def test_offset_larger_than_horizon_raises():
    with pytest.raises(RolloutError, match="offset 120 must be in"):
        check_rollout(C, 90, 120, 3)
    with pytest.raises(RolloutError, match="offset"):
        context_sources(C, 60, 61, 1)


def test_too_short_window_raises():
    with pytest.raises(RolloutError, match="too short.*needs 330"):
        check_rollout(C, 90, 90, 3, length=329)
    model = _model()
    x, a = _data(2, 20)
    with pytest.raises(RolloutError, match="too short"):
        rollout(model, x, a, 5, 6, 6, 3, maturities=MAT, moneyness=MON)


def test_context_below_one_raises():
    with pytest.raises(RolloutError, match="context length"):
        check_rollout(0, 90, 90, 3)


# --- model -------------------------------------------------------------------------------------

def _model(seed=0, grid=(5, 5)):
    torch.manual_seed(seed)
    m = CVAE(ModelConfig(grid[0], grid[1], latent_dim=3, mem_hidden=16, mem_layers=2, mem_dropout=0.3,
                         surface_hidden=(5, 5)))
    return m.eval()


def _data(B, T, grid=(5, 5), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.05 * torch.rand(B, T, *grid, generator=g)
    r = 0.01 * torch.randn(B, T, generator=g)
    sk, sl = skew_slope(x, MAT, MON) if grid == (5, 5) else (torch.zeros(B, T), torch.zeros(B, T))
    return x, torch.stack([r, sk, sl], -1)


W = LossWeights((0.05, 0.5, 0.95), (5.0, 1.0, 5.0), kl_weight=1e-2, feat_weight=1.0)


def test_decoder_is_causal():
    model = _model()
    x, a = _data(3, 30)
    t = 17
    x2, a2 = x.clone(), a.clone()
    x2[:, t + 1:] += 0.3
    a2[:, t + 1:] -= 0.05
    o1 = model(x, a, 10, sample_posterior=False)
    o2 = model(x2, a2, 10, sample_posterior=False)
    assert torch.allclose(o1["q"][:, :t + 1], o2["q"][:, :t + 1], atol=1e-6)
    assert torch.allclose(o1["feat"][:, :t + 1], o2["feat"][:, :t + 1], atol=1e-6)
    assert not torch.allclose(o1["q"][:, t + 1:], o2["q"][:, t + 1:])   # later days do change


def test_generation_reads_only_the_context():
    model = _model()
    x, a = _data(2, 25)
    x2 = x.clone()
    x2[:, 10:] = 3.0                                     # future days are not inputs in generation
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    o1 = model.forecast(x[:, :10], a[:, :10], 15, a[:, 10:], generator=g1)
    o2 = model.forecast(x2[:, :10], a[:, :10], 15, a[:, 10:], generator=g2)
    assert o1["q"].shape == (2, 25, 3, 5, 5)
    assert torch.equal(o1["q"], o2["q"])


def test_quantiles_never_cross():
    model = _model()
    x, a = _data(4, 20)
    q = model(x, a, 10)["q"]
    assert (q[:, :, 0] <= q[:, :, 1]).all() and (q[:, :, 1] <= q[:, :, 2]).all()


def test_any_grid_size():
    model = _model(grid=(6, 7))
    x, a = _data(2, 15, grid=(6, 7))
    out = model(x, a, 10)
    assert out["q"].shape == (2, 15, 3, 6, 7)


def test_multihorizon_loss_equals_weighted_sum_horizon_by_horizon():
    """One forward pass over C+max(h) days == sum_h w_h * loss of a separate pass over C+h days."""
    model = _model()
    Cs, hs = 8, {1: 1.0, 3: 0.9, 5: 0.6, 9: 0.3}
    x, a = _data(3, Cs + 9)
    out = model(x, a, Cs, sample_posterior=False)
    one_pass = multihorizon_loss(model, out, x, a, Cs, hs, W)
    by_h = 0.0
    for h, wh in hs.items():
        o = model(x[:, :Cs + h], a[:, :Cs + h], Cs, sample_posterior=False)
        by_h = by_h + wh * day_loss(model, o, x[:, :Cs + h], a[:, :Cs + h], slice(Cs, Cs + h), W)["loss"]
    assert torch.allclose(one_pass, by_h, rtol=1e-5)
    # and the weights matter: dropping the longest horizon changes the loss
    assert not torch.allclose(one_pass, multihorizon_loss(model, out, x, a, Cs, {1: 1.0, 3: 0.9, 5: 0.6}, W))


def test_pinball_loss_hand_case():
    from backfill.model import pinball
    y = torch.zeros(1, 1, 1)                                    # (n_mat=1, n_mon=1) target 0
    qp = torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1)           # predictions for q=.05,.5,.95
    # u = y - pred = [1, -0.5, -2]; pinball = [0.05*1, 0.5*0.5, 0.05*2] = [0.05, 0.25, 0.10]
    got = pinball(qp, y, (0.05, 0.5, 0.95), (5.0, 1.0, 5.0))
    assert got.item() == pytest.approx(5 * 0.05 + 0.25 + 5 * 0.10)


def test_gradients_flow_through_generated_context():
    model = _model().train()
    Cs, H, O = 6, 4, 4
    x, a = _data(2, Cs + O + H)
    steps = rollout(model, x, a, Cs, H, O, 2, maturities=MAT, moneyness=MON)
    steps[0]["q"].retain_grad()
    # the loss of step 1 alone: it sees step 0 only through its generated context
    loss = day_loss(model, steps[1]["out"], x[:, O:O + Cs + H], a[:, O:O + Cs + H], slice(Cs, Cs + H), W)["loss"]
    loss.backward()
    g = steps[0]["q"].grad                                      # (B, H, Q, 5, 5)
    assert g is not None and g[:, :, model.mid].abs().sum() > 0  # the median feeds the next context
    assert g[:, :, 0].abs().sum() == 0                          # the other quantiles do not


def test_generated_context_features():
    """Generated days carry skew/slope of the generated median surface and the realised (or predicted) return."""
    model = _model()
    Cs, H, O = 6, 4, 2
    x, a = _data(2, Cs + 2 * O + H)
    for mode in ("realized", "predicted"):
        steps = rollout(model, x, a, Cs, H, O, 3, maturities=MAT, moneyness=MON, returns=mode, generate=True,
                        generator=torch.Generator().manual_seed(0))
        assert [s["start"] for s in steps] == [6, 8, 10]
        assert steps[0]["q"].shape == (2, H, 3, 5, 5)
        ctx_s, ctx_f = steps[1]["ctx_surface"], steps[1]["ctx_feats"]   # window days 2..7
        assert torch.equal(ctx_s[:, :4], x[:, 2:6])                      # real days 2..5
        med0 = steps[0]["q"][:, :2, model.mid]                           # step 0's days 0, 1 = window 6, 7
        assert torch.equal(ctx_s[:, 4:], med0)
        sk, sl = skew_slope(med0, MAT, MON)
        assert torch.allclose(ctx_f[:, 4:, 1], sk) and torch.allclose(ctx_f[:, 4:, 2], sl)
        want_ret = a[:, 6:8, 0] if mode == "realized" else steps[0]["feat"][:, :2, 0]
        assert torch.allclose(ctx_f[:, 4:, 0], want_ret)
        assert torch.equal(ctx_f[:, :4], a[:, 2:6])


def test_rollout_loss_is_mean_over_steps():
    model = _model()
    Cs, H, O, S = 6, 4, 4, 3
    x, a = _data(2, Cs + (S - 1) * O + H)
    torch.manual_seed(0)
    total, steps = rollout_loss(model, x, a, Cs, H, O, S, W, maturities=MAT, moneyness=MON)
    per = [day_loss(model, s["out"], x[:, s["start"] - Cs:s["start"] + H], a[:, s["start"] - Cs:s["start"] + H],
                    slice(Cs, Cs + H), W)["loss"] for s in steps]
    assert total.item() == pytest.approx(float(np.mean([p.item() for p in per])), rel=1e-6)
