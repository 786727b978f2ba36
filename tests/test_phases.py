"""phases: the curriculum's phase specs (windows, horizons, offsets, epochs from the params) and the validation
metrics' helpers."""
import numpy as np
import pytest

from backfill import params, phases


def test_phase_specs_follow_the_params():
    specs = phases.phase_specs(params.load(params.profile_path("full")))
    assert [s.epochs for s in specs] == [200, 150, 125, 125]
    assert [s.window for s in specs] == [61, 150, 240, 330]
    assert specs[1].weights == {1: 1.0, 7: 0.9, 14: 0.8, 30: 0.6, 60: 0.4, 90: 0.3}
    assert specs[3].offsets == [45, 90] and specs[3].steps == 3


def test_context_slope_hand_case():
    x = np.array([0.1, 0.2, 0.3, 0.4])
    assert phases._slope(x, 0.5 * x + 0.2) == pytest.approx(0.5)       # keeps half of a context shock
    assert phases._slope(x, np.full(4, 0.23)) == pytest.approx(0.0, abs=1e-12)   # context-blind
    assert np.isnan(phases._slope(np.full(4, 0.2), x))
