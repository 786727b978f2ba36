"""Curriculum training: resume equals an uninterrupted run, NaN stops with the checkpoint intact,
the loss goes down, phases chain through their checkpoints."""
import copy
import dataclasses
import random

import numpy as np
import pytest
import torch

from backfill import checkpoint, data, params, rundir, train


@pytest.fixture(scope="module")
def base(test_params, test_dataset):
    p = copy.deepcopy(test_params)
    p["training"].update(phase1_epochs=3, phase2_epochs=4, phase3_epochs=5, phase4_epochs=6,
                         max_train_windows=48, max_val_windows=16)
    return p, test_dataset


def _run(base, tmp_path, name, ds=None, **training):
    p, d = copy.deepcopy(base[0]), ds or base[1]
    p["training"].update(training)
    rd = tmp_path / name
    return rundir.Run(p, d, rd, data.splits(d, p))


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(base, tmp_path):
    straight = _run(base, tmp_path, "straight")
    train.train_phase(straight, 1, progress=False)
    broken = _run(base, tmp_path, "broken")
    assert train.train_phase(broken, 1, stop_after=1, progress=False) == {"stopped_after": 1}
    assert not (broken.run_dir / "checkpoints" / "phase1.pt").exists()
    torch.manual_seed(12345)                      # a resumed process starts from another RNG state
    np.random.seed(999)
    train.train_phase(broken, 1, progress=False)
    a = checkpoint.load(straight.run_dir / "checkpoints" / "phase1.pt")["model"]
    b = checkpoint.load(broken.run_dir / "checkpoints" / "phase1.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = train.read_history(broken.run_dir, 1)
    assert list(hist["epoch"]) == [1, 2, 3]


@pytest.mark.slow
def test_nan_stops_training_and_keeps_the_last_checkpoint(base, tmp_path):
    run = _run(base, tmp_path, "nan")
    train.train_phase(run, 1, stop_after=1, progress=False)
    last = run.run_dir / "checkpoints" / "last.pt"
    before = last.read_bytes()
    poisoned = dataclasses.replace(run.data, surface=run.data.surface.copy())
    i0, i1 = run.splits["train"]
    poisoned.surface[i0:i1, 2, 2] = np.nan
    bad = rundir.Run(run.params, poisoned, run.run_dir, run.splits)
    with pytest.raises(train.TrainingError, match=r"phase 1, epoch \d+, batch 1: loss is nan.*last good checkpoint"):
        train.train_phase(bad, 1, progress=False)
    assert last.read_bytes() == before
    assert not (run.run_dir / "checkpoints" / "phase1.pt").exists()
    # the intact checkpoint still resumes on clean data
    train.train_phase(run, 1, progress=False)
    assert (run.run_dir / "checkpoints" / "phase1.pt").exists()


@pytest.mark.slow
def test_loss_decreases_and_phases_chain(base, tmp_path):
    run = _run(base, tmp_path, "chain", phase1_epochs=6, phase2_epochs=7, phase3_epochs=8, phase4_epochs=9,
               max_train_windows=128)
    s1 = train.train_phase(run, 1, progress=False)
    h = train.read_history(run.run_dir, 1)
    assert h["train_loss"].iloc[-1] < 0.85 * h["train_loss"].iloc[0]   # the change target starts near its optimum
    assert (h["val_kl"] >= 0).all() and np.isfinite(h["val_kl"]).all()
    with pytest.raises(train.TrainingError, match="run phase 3 first"):
        train.train_phase(run, 4, progress=False)
    for n in (2, 3, 4):
        s = train.train_phase(run, n, progress=False)
    assert set(s["val_eval"]) >= {"offset_5", "offset_9", "rmse", "ci_violation", "context_beta", "context_beta_truth"}
    assert len(s["val_eval"]["offset_9"]["persistence_rmse_by_pass"]) == 3
    assert len(s["val_eval"]["offset_9"]["rmse_by_pass"]) == 3
    rec = train.phase_record(s1)
    assert set(rec["val_rmse_by_horizon"]) == {1}
    assert rec["val_kl"] == s1["val_eval"]["kl"] and rec["val_kl"] >= 0       # the plan's table 6.1 KL
    assert rec["kernels"] == train.kernels(torch.device("cpu"))                # the path it trained on
    # a finished phase returns its stored summary without training again
    again = train.train_phase(run, 1, progress=False)
    assert again["val_eval"] == s1["val_eval"]


@pytest.mark.slow
def test_same_params_and_seed_give_identical_metrics(base, tmp_path):
    a = train.train_phase(_run(base, tmp_path, "a"), 1, progress=False)
    b = train.train_phase(_run(base, tmp_path, "b"), 1, progress=False)
    assert a["val_eval"] == b["val_eval"] and a["final_train_loss"] == b["final_train_loss"]


def test_kernels_name_the_cpu_path_and_the_variables_that_pin_it(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    k = train.kernels(torch.device("cpu"))
    assert k["device"] == "cpu" and k["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert k["threads"] == torch.get_num_threads() and k["cpu"]
    assert k["env"] == {"MKL_CBWR": "AVX2"}


def test_full_plan_flag(base):
    assert train.is_full_plan(params.load(params.profile_path("full")))
    assert not train.is_full_plan(params.load(params.profile_path("smoke")))


def test_checkpoints_depend_only_on_training_params(base):
    p = copy.deepcopy(base[0])
    h = rundir.params_hash(p, rundir.TRAINING_SECTIONS)
    p["gates"]["gate1_h90_rmse_val"] = 0.5
    p["generation"]["n_samples"] = 99
    assert rundir.params_hash(p, rundir.TRAINING_SECTIONS) == h      # no retraining for a threshold
    assert rundir.params_hash(p) != rundir.params_hash(base[0])       # but the notebooks re-run
    p["training"]["learning_rate"] = 1e-4
    assert rundir.params_hash(p, rundir.TRAINING_SECTIONS) != h


def test_build_model_fits_the_backbone_and_the_change_scale_on_the_training_split(base):
    p, ds = base
    i0, i1 = data.splits(ds, p)["train"]
    model = train.build_model(p, ds, (i0, i1))
    rv = np.exp(ds.features(p["model"]["rv_halflives"])[i0:i1, data.RV:].astype(float))  # (T, R) RV in vol
    X = np.column_stack([np.ones(len(rv)), rv])
    coef, *_ = np.linalg.lstsq(X, ds.surface[i0:i1].reshape(i1 - i0, -1), rcond=None)     # the econometric fit
    bb = model.backbone
    np.testing.assert_allclose(bb.ecm_a.numpy(), coef[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bb.ecm_b.numpy(), coef[1:], rtol=1e-3, atol=1e-4)
    assert (bb.ecm_b.sum(0) > 0).all()               # vols rise with realised vol at every grid point
    s = ds.surface[i0:i1]
    want = (np.log(s[20:]) - np.log(s[:-20])).std(0)                                       # 20-day log changes
    np.testing.assert_allclose(model.scaler.c_std.numpy(), want, rtol=1e-3)


@pytest.mark.slow
def test_checkpoints_load_as_weights_only(base, tmp_path):
    run = _run(base, tmp_path, "safe", phase1_epochs=2)
    s = train.train_phase(run, 1, progress=False)
    ck_dir = run.run_dir / "checkpoints"
    for name in ("last.pt", "phase1.pt"):
        ck = torch.load(ck_dir / name, map_location="cpu", weights_only=True)     # no pickled objects
        assert ck["model_config"]["quantiles"] == tuple(run.params["model"]["quantiles"])
        assert [r["epoch"] for r in ck["history"]] == [1, 2]
    assert ck["summary"]["val_eval"] == s["val_eval"]
    st = torch.load(ck_dir / "last.pt", weights_only=True)["rng"]
    assert st["torch"].dtype == torch.uint8 and st["numpy"]["key"].dtype == torch.uint32
    # the stored states restore the generators exactly
    checkpoint.set_rng_state(st)
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    checkpoint.set_rng_state(st)
    assert torch.equal(torch.rand(3), want[0]) and (np.random.rand(3) == want[1]).all() and random.random() == want[2]


@pytest.mark.slow
def test_a_phase_never_starts_from_a_checkpoint_of_other_params_or_code(base, tmp_path, monkeypatch):
    run = _run(base, tmp_path, "chain_key", max_train_windows=16)
    train.train_phase(run, 1, progress=False)
    changed = _run(base, tmp_path, "chain_key", max_train_windows=16, learning_rate=1e-3)   # same directory
    with pytest.raises(train.TrainingError, match="phase 2 needs .*phase1.pt trained under these params"):
        train.train_phase(changed, 2, progress=False)
    # editing the training code changes every phase's key: the finished phase 1 trains again
    key = train.phase_key(run.params, run.data, 1)
    monkeypatch.setattr(rundir, "code_fingerprint", lambda files=None: "edited-model")
    assert train.phase_key(run.params, run.data, 1) != key
    before = (run.run_dir / "checkpoints" / "phase1.pt").stat().st_mtime_ns
    train.train_phase(run, 1, progress=False)
    assert (run.run_dir / "checkpoints" / "phase1.pt").stat().st_mtime_ns != before
    assert checkpoint.load(run.run_dir / "checkpoints" / "phase1.pt")["params_hash"] == \
        train.phase_key(run.params, run.data, 1)


@pytest.mark.slow
def test_a_checkpoint_of_older_code_is_retrained_not_fatal(base, tmp_path):
    """A phase checkpoint that does not load under weights_only (older code stored numpy objects) cannot carry
    today's key: the phase trains again; a later phase still refuses to start from it."""
    run = _run(base, tmp_path, "old_ck", max_train_windows=16)
    ck = run.run_dir / "checkpoints"
    ck.mkdir(parents=True)
    torch.save({"params_hash": "old", "rng": np.random.get_state()}, ck / "phase1.pt")
    with pytest.raises(checkpoint.CheckpointError, match="refused checkpoint"):
        train.train_phase(run, 2, progress=False)
    torch.save({"params_hash": "old", "rng": np.random.get_state()}, ck / "last.pt")
    s = train.train_phase(run, 1, progress=False)
    assert s["epochs"] == 3 and checkpoint.load(ck / "phase1.pt")["params_hash"] == \
        train.phase_key(run.params, run.data, 1)


@pytest.mark.slow
def test_a_refused_checkpoint_is_retrained_with_one_line_saying_why(base, tmp_path, capsys):
    run = _run(base, tmp_path, "old_ck_said", max_train_windows=16)
    ck = run.run_dir / "checkpoints"
    ck.mkdir(parents=True)
    for name in ("phase1.pt", "last.pt"):
        torch.save({"params_hash": "old", "rng": np.random.get_state()}, ck / name)
    train.train_phase(run, 1, progress=False)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "refused checkpoint" in ln]
    assert [ln.split(": ")[0] for ln in lines] == [f"refused checkpoint {ck / 'phase1.pt'}",
                                                   f"refused checkpoint {ck / 'last.pt'}"]
    assert all("more than tensors and plain data" in ln and ln.endswith("not reused, the phase trains again")
               for ln in lines)


def test_a_skipped_phase_is_the_model_it_starts_from_and_its_criteria_read_skipped(tmp_path):
    from backfill import gates
    """A phase whose epoch mark equals the one before trains nothing: its checkpoint is the model it starts from,
    under its own key, its log is empty, and its criteria read SKIPPED (phase 1 at 0 epochs: a fresh model)."""
    p = params.load(params.profile_path("test"), [
        "training.phase1_epochs=0", "training.phase2_epochs=1", "training.phase3_epochs=1", "training.phase4_epochs=1",
        "training.max_train_windows=16", "training.max_val_windows=8"])
    ds = data.load_for(p)
    run = rundir.Run(p, ds, tmp_path / "r", data.splits(ds, p))
    s1 = train.train_phase(run, 1, progress=False)
    assert s1["skipped"] and s1["epochs"] == 0 and s1["final_train_loss"] is None and "val_eval" in s1
    assert train.read_history(run.run_dir, 1).empty
    s2 = train.train_phase(run, 2, progress=False)            # starts from the skipped phase's checkpoint
    assert not s2["skipped"] and s2["epochs"] == 1
    s3 = train.train_phase(run, 3, progress=False)
    assert s3["skipped"]
    a = checkpoint.load(run.run_dir / "checkpoints" / "phase2.pt")["model"]
    b = checkpoint.load(run.run_dir / "checkpoints" / "phase3.pt")
    assert b["params_hash"] == train.phase_key(p, ds, 3)
    assert all(np.array_equal(a[k].numpy(), b["model"][k].numpy()) for k in a)   # phase 3 = the model phase 2 ended
    res = gates.phase_criteria(3, s3, p)
    assert res["decision"] == "SKIPPED" and {c["mark"] for c in res["checks"]} == {"skipped"}
    assert gates.phase_criteria(2, s2, p)["decision"] in ("PASS", "MARGINAL", "FAIL")
    assert "Phase 1 is skipped" in train.skip_note(p, 1) and train.skip_note(p, 2) is None
    assert train.phase_record(s3)["skipped"] and not train.phase_record(s2)["skipped"]


def test_a_sync_free_epoch_takes_the_steps_a_step_by_step_loop_takes(base):
    """train.train_epoch keeps every step's loss on the device until the epoch ends and gathers its batches there by
    index (no host sync inside the epoch, for a GPU); on the CPU it must take exactly the steps of the plain loop
    (loss checked and read after every step), with the same weights after them."""
    from backfill import phases
    from backfill.model import LossWeights
    p, ds = base
    spec = phases.phase_specs(p)[3]                            # autoregressive: offsets drawn per batch
    series = phases.Series.from_dataset(ds, torch.device("cpu"), p["model"]["rv_halflives"])
    starts = data.window_starts(data.splits(ds, p)["train"], spec.window)[:40]
    C, w, grid, t = p["model"]["context_len"], LossWeights.from_params(p), (ds.maturities, ds.moneyness), p["training"]

    def fresh():
        rundir.seed_everything(7)
        m = train.build_model(p, ds, data.splits(ds, p)["train"])
        return m, torch.optim.Adam(m.parameters(), lr=t["learning_rate"])
    m1, o1 = fresh()
    got = train.train_epoch(m1, o1, spec, series, starts, np.random.default_rng(3), C, w, grid, t, False)
    m2, o2 = fresh()
    g, want = np.random.default_rng(3), []
    for b0 in range(0, len(starts), t["batch_size"]):
        x, a = series.windows(starts[b0:b0 + t["batch_size"]], spec.window)
        offset = int(g.choice(spec.offsets))
        loss = phases.batch_loss(m2, spec, x, a, C, w, offset, grid, t["returns"])
        assert torch.isfinite(loss)
        o2.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m2.parameters(), t["grad_clip"])
        o2.step()
        want.append((loss.item(), gn.item()))
    np.testing.assert_array_equal(got, np.array(want))
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_validation_every_k_epochs_and_after_the_last(base, tmp_path):
    run = _run(base, tmp_path, "every", validate_every=2)          # phase 1: 3 epochs -> validated after 2 and 3
    summary = train.train_phase(run, 1, progress=False)
    hist = train.read_history(run.run_dir, 1)
    assert list(hist["epoch"]) == [1, 2, 3]
    assert np.isnan(hist["val_rmse"][0]) and np.isfinite(hist["val_rmse"][1]) and np.isfinite(hist["val_rmse"][2])
    assert np.isfinite(hist["train_loss"]).all() and summary["val_eval"]["rmse_by_horizon"]
