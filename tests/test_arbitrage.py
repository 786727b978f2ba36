"""arbitrage: the projection of implied-vol surfaces onto the arbitrage-free set (arbitrage.repair), judged by
metrics' calendar and butterfly checks on hand-made surfaces."""
import numpy as np
import pytest

from backfill.arbitrage import VOL_MAX, VOL_MIN, repair
from backfill.metrics import arbitrage_share, butterfly_violations, calendar_violations

T5 = np.array([1 / 12, 1 / 4, 1 / 2, 1.0, 2.0])
K5 = np.array([0.7, 0.85, 1.0, 1.15, 1.3])


T6 = np.array([1 / 12, 1 / 6, 1 / 4, 1 / 2, 1.0, 2.0])
K7 = np.array([0.9, 0.933, 0.967, 1.0, 1.033, 1.067, 1.1])


def _free(s, T, K, tol=1e-7):
    """Both checks pass everywhere, at a tolerance ten times inside metrics' default."""
    return not calendar_violations(s, T, K, tol=tol).any() and not butterfly_violations(s, T, K, tol=tol).any()


def test_repair_calendar_inversion():
    s = np.full((5, 5), 0.2)
    s[3, :] = 0.2 * np.sqrt(0.4)            # 1y total variance below 6m
    r = repair(s, T5, K5)
    assert calendar_violations(s, T5, K5) and _free(r, T5, K5)
    np.testing.assert_array_equal(r[[0, 1, 4]], s[[0, 1, 4]])     # only the inverted pair moves
    w = r**2 * T5[:, None]
    assert np.all(np.diff(w, axis=0) >= -1e-12)
    s2 = np.full((5, 5), 0.2)
    s2[1, 2] = 0.1                           # one point: 3m ATM total variance below 1m
    assert _free(repair(s2, T5, K5), T5, K5)


def test_repair_butterfly_spike_and_dip():
    for v in (0.6, 0.05):
        s = np.full((5, 5), 0.2)
        s[2, 2] = v                          # ATM spike (not convex) or dip (slope out of order)
        r = repair(s, T5, K5)
        assert butterfly_violations(s, T5, K5) and _free(r, T5, K5)
        assert abs(r[2, 2] - 0.2) < abs(v - 0.2)                  # the outlier moves back
        np.testing.assert_array_equal(r[0], s[0])                 # (a dip also lowers 3m ATM: calendar)


def test_repair_both_on_6x7(ssvi):
    s = ssvi(T6, K7)
    s[4] *= 0.6                              # 1y below 6m: calendar
    s[1, 3] += 0.3                           # 2m ATM spike: butterfly
    assert calendar_violations(s, T6, K7) and butterfly_violations(s, T6, K7)
    r = repair(s, T6, K7)
    assert r.shape == (6, 7) and _free(r, T6, K7)
    assert not calendar_violations(r, T6, K7) and not butterfly_violations(r, T6, K7)


@pytest.mark.parametrize("T,K", [(T5, K5), (T6, K7)])
def test_repair_leaves_arbitrage_free_surfaces_alone(T, K, ssvi):
    free = np.stack([ssvi(T, K, atm=atm, rho=rho) for atm in (0.1, 0.3, 0.8) for rho in (-0.9, -0.5, 0.0)])
    assert _free(free, T, K)
    bad = free.copy()
    bad[:, 2, 2] *= 1.8
    both = np.stack([free, bad], axis=1)     # (9, 2, n_mat, n_mon): leading axes
    r = repair(both, T, K)
    assert r.shape == both.shape
    np.testing.assert_allclose(r[:, 0], free, rtol=0, atol=1e-6)
    assert _free(r, T, K)


def test_repair_leading_axes_and_5x5():
    rng = np.random.default_rng(0)
    s = 0.2 + 0.02 * rng.standard_normal((3, 4, 5, 5))          # (B, days, n_mat, n_mon)
    assert arbitrage_share(s, T5, K5)["any"] > 0.25
    r = repair(s, T5, K5)
    assert r.shape == s.shape and _free(r, T5, K5)
    assert arbitrage_share(r, T5, K5) == {"calendar": 0.0, "butterfly": 0.0, "any": 0.0}


def test_repair_noisy_surface_small_change(ssvi):
    # Measured with this seed: 99.98% of the noisy surfaces violate; the repair moves vols by an RMSE of
    # 0.29x the noise scale and lands closer to the clean surface (0.91x the noisy RMSE).
    rng = np.random.default_rng(1)
    clean = ssvi(T6, K7)
    noise = 0.005
    noisy = clean + noise * rng.standard_normal((2000, 6, 7))
    assert arbitrage_share(noisy, T6, K7)["any"] > 0.99
    r = repair(noisy, T6, K7)
    assert _free(r, T6, K7)
    change = np.sqrt(np.mean((r - noisy) ** 2))
    assert change < 0.4 * noise
    assert np.sqrt(np.mean((r - clean) ** 2)) < np.sqrt(np.mean((noisy - clean) ** 2))


def test_repair_wild_inputs_stay_in_range():
    rng = np.random.default_rng(2)
    s = rng.uniform(-0.1, 8.0, (500, 6, 7))                       # negative, zero-ish and huge vols
    r = repair(s, T6, K7)
    assert _free(r, T6, K7)
    assert r.min() >= VOL_MIN and r.max() <= VOL_MAX
