"""generate: backfill generation (passes, overlap averaging, shapes, reproducibility) and its origins (named
windows and rolling origins; the calibration origins in the validation split)."""
import numpy as np
import pytest
import torch

from backfill import data, generate, train
from backfill.data import Dataset
from backfill.rollout import rollout

MAT = np.array([0.5, 1.0])
MON = np.array([0.9, 1.0, 1.1])
GRID = (2, 3)


@pytest.fixture(scope="module")
def setup(test_params, test_dataset):
    p, ds = test_params, test_dataset
    torch.manual_seed(0)
    model = train.build_model(p, ds, data.splits(ds, p)["train"]).eval()
    return p, ds, model


def test_passes_and_days_covered_match_the_plan():
    assert generate.n_passes(252, 90) == 3 and generate.days_covered(90, 90, 3) == 270
    assert generate.n_passes(252, 45) == 6 and generate.days_covered(90, 45, 6) == 315
    assert generate.n_passes(180, 90) == 2 and generate.days_covered(90, 90, 2) == 180


def test_offset45_overlap_weights_are_exact():
    w = generate.overlap_weights(90, 45, 6, 315)                # (passes, days)
    assert w.shape == (6, 315)
    np.testing.assert_allclose(w.sum(0), 1.0)
    assert (w[0, :45] == 1).all() and (w[1:, :45] == 0).all()  # days 0..44: pass 1 alone
    assert (w[0, 45:90] == 0.5).all() and (w[1, 45:90] == 0.5).all()   # pass 1 and 2 overlap
    assert (w[5, 270:] == 1).all()                               # the tail: pass 6 alone
    w90 = generate.overlap_weights(90, 90, 3, 270)
    assert set(np.unique(w90)) == {0.0, 1.0} and (w90.sum(0) == 1).all()
    with pytest.raises(ValueError):
        generate.overlap_weights(5, 10, 2, 20)                   # offset > horizon leaves gaps


def test_overlapping_days_are_the_mean_of_the_covering_passes(setup):
    p, ds, model = setup
    C, H, O, days, start = model.context_len, 6, 3, 12, 4000
    bf = generate.backfill(model, ds, start, days, H, O, 1, seed=7)
    # the same rollout by hand, with the same generator seed
    ctx = torch.as_tensor(ds.surface[start - C:start], dtype=torch.float32)[None]
    feats = torch.as_tensor(ds.features(model.cfg.rv_halflives)[start - C:start + 3 * O + H], dtype=torch.float32)[None]
    with torch.no_grad():
        steps = rollout(model, ctx, feats, C, H, O, generate.n_passes(days, O), maturities=ds.maturities,
                        moneyness=ds.moneyness, generate=True, generator=torch.Generator().manual_seed(7))
    med = [s["q"][0, :, model.mid].numpy() for s in steps]       # pass s covers days 3s..3s+5
    np.testing.assert_allclose(bf.p50[0], med[0][0], rtol=1e-5)                       # day 0: pass 1 only
    np.testing.assert_allclose(bf.p50[4], (med[0][4] + med[1][1]) / 2, rtol=1e-5)    # day 4: passes 1, 2
    np.testing.assert_allclose(bf.p50[7], (med[1][4] + med[2][1]) / 2, rtol=1e-5)    # day 7: passes 2, 3
    np.testing.assert_allclose(bf.p50[11], (med[2][5] + med[3][2]) / 2, rtol=1e-5)   # day 11: passes 3, 4


def test_backfill_shapes_dates_and_file(setup, tmp_path):
    p, ds, model = setup
    start, days = ds.index_of("2016-03-01"), 25
    bf = generate.backfill(model, ds, start, days, 9, 9, 6, seed=1, chunk=4, name="oos")
    assert bf.passes == 3
    for a in (bf.p05, bf.p50, bf.p95, bf.spread05, bf.spread95, bf.truth):
        assert a.shape == (days, 5, 5)
    assert bf.sample_p50.shape == (6, days, 5, 5)
    assert list(bf.dates) == list(ds.day_labels()[start:start + days]) and bf.dates[0] == "2016-03-01"
    assert (bf.p05 <= bf.p50).all() and (bf.p50 <= bf.p95).all()
    assert list(bf.segment[:10]) == [0] * 9 + [1]
    path = bf.save(tmp_path / "oos_o9.npz", ds.maturities, ds.moneyness)
    z = np.load(path)
    assert {"dates", "maturities", "moneyness", "quantiles", "p05", "p50", "p95", "truth"} <= set(z.files)
    assert z["dates"][0] == "2016-03-01" and z["p50"].shape == (days, 5, 5)


def test_generation_with_a_fixed_seed_is_reproducible(setup):
    p, ds, model = setup
    a = generate.backfill(model, ds, 3000, 18, 9, 9, 8, seed=3, chunk=3)
    b = generate.backfill(model, ds, 3000, 18, 9, 9, 8, seed=3, chunk=3)
    c = generate.backfill(model, ds, 3000, 18, 9, 9, 8, seed=4, chunk=3)
    np.testing.assert_array_equal(a.p50, b.p50)
    np.testing.assert_array_equal(a.sample_p50, b.sample_p50)
    assert not np.array_equal(a.sample_p50, c.sample_p50)


def test_backfill_needs_context(setup):
    p, ds, model = setup
    with pytest.raises(ValueError, match="context"):
        generate.backfill(model, ds, 5, 18, 9, 9, 2, seed=0)


def test_backfill_starts_named_and_rolling(setup):
    p, ds, model = setup
    w = generate.backfill_starts(ds, p, data.splits(ds, p)["test"], 25)
    assert w["crisis"] == ds.index_of("2008-06-02") and w["out_of_sample"] == ds.index_of("2016-03-01")
    rolling = sorted(v for k, v in w.items() if k.startswith("rolling_"))
    every = generate.origins(data.splits(ds, p)["test"], p["model"]["context_len"], 25, 21)
    assert len(every) > len(rolling) == p["generation"]["max_rolling"]
    assert rolling[0] == every[0] and rolling[-1] == every[-1] and set(rolling) <= set(every)   # spread over the split


def test_calibration_starts_spread_evenly_and_stop_at_the_split_end(test_params):
    import copy
    p = copy.deepcopy(test_params)
    p["model"]["context_len"] = 10
    p["generation"].update(calibration_every=10, max_calibration=4, calibration_lead_bins=[1, 6])
    ds = Dataset(np.full((400, *GRID), 0.2), np.zeros(400), None, MAT, MON)
    out = generate.calibration_starts(ds, p, (100, 200), 25)
    # candidates 100, 110, ..., 190 (the last one fills the first 5-day bin); 4 spread over all ten
    assert [s for s, _ in out.values()] == [100, 130, 160, 190]
    assert [k for _, k in out.values()] == [25, 25, 25, 10]                  # truth stops at the split's end
    assert list(out) == ["calib_100", "calib_130", "calib_160", "calib_190"]


def test_one_origin_rule_for_test_calibration_and_gate3_backfills():
    import numpy as np
    from backfill import generate
    # every 10 days from the first with 5 context days (max(3, 5) = 5) to the last whose 20 days fit in [3, 60)
    assert generate.origins((3, 60), 5, 20, 10) == [5, 15, 25, 35]
    assert generate.origins((3, 60), 5, 20, 10, max_n=2) == [5, 15]                   # the first ones
    assert generate.origins((3, 60), 5, 20, 10, max_n=2, spread=True) == [5, 35]      # spread over all
    assert generate.origins((3, 20), 5, 20, 10) == []
    p = {"model": {"context_len": 5},
         "generation": {"days_6month": 20, "rolling_every": 10, "max_rolling": 3}}
    crisis = np.zeros(100, bool)
    crisis[18:22] = True                                       # touches the backfills from 5 and 15 only
    starts, regime = generate.gate3_starts(None, p, (3, 80), crisis)
    assert starts == [25, 35, 45] and regime == "normal"
    crisis[:] = True
    starts, regime = generate.gate3_starts(None, p, (3, 80), crisis)
    assert starts == [5, 15, 25] and regime.startswith("all")
