"""Running sweeps (backfill.sweep.runner): the schedulers as Tune sees them; a 2-trial Ray Tune sweep on the test
profile that is interrupted after phase 2, resumed from its checkpoints, and rerun without re-executing, with its
results table and chapter; then the claims sweep of the test profile (params/sweeps/test_claims.yaml, reusing two of
those trials) into its chapter. Every test that runs a sweep or starts a Ray is marked slow."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from backfill import pipeline
from backfill.sweep import analysis, claims, results, runner, spec

from conftest import write_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "params" / "sweeps"




def test_schedulers_map_to_tune(tmp_path):
    sw = spec.load(write_sweep(tmp_path, space={"seed": [0]}, scheduler={"type": "asha", "reduction_factor": 3}))
    sched, stop = runner._scheduler(sw)
    assert stop is None and sched._time_attr == "phase" and sched.metric == "val_rmse" and sched._max_t == 4
    sw = spec.load(write_sweep(tmp_path, space={"seed": [0]}, scheduler={"type": "gates"}))
    sched, stop = runner._scheduler(sw)
    assert sched is None and stop("t", {"phase": 1, "gate": "FAIL"}) and not stop("t", {"phase": 1, "gate": "MARGINAL"})


# --- a real sweep with a local Ray: interrupted after phase 2, resumed, rerun ---------------------------------

def statuses(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())["status"]


def launch(out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backfill", "sweep", str(SWEEPS / "test.yaml"), "--out", str(out)],
                            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The test sweep interrupted (SIGINT, as Ctrl-C) once both trials finished phase 2, then run again to the end."""
    out = tmp_path_factory.mktemp("sweep") / "test"
    sw = spec.load(SWEEPS / "test.yaml")
    dirs = [out / t.name for t in sw.trials]
    t0 = time.time()
    proc = launch(out, out.parent / "first.log")
    phase2 = "03_phase2_multihorizon"
    while time.time() - t0 < 600 and proc.poll() is None:
        time.sleep(1)
        try:
            if all(statuses(d).get(phase2, {}).get("state") == "ok" for d in dirs):
                break
        except (OSError, ValueError, KeyError):
            pass
    proc.send_signal(signal.SIGINT)
    first_rc = proc.wait(timeout=300)
    interrupted = {"rc": first_rc, "chapter": (out / "10_sweep.ipynb").exists(),
                   "status": {d.name: statuses(d) for d in dirs},
                   "trial": {d.name: results.read_trial(d) for d in dirs},
                   "launches": json.loads((out / "sweep.json").read_text())["launches"],
                   "table": pd.read_parquet(out / "results.parquet"),
                   "mtimes": {d.name: {f.name: f.stat().st_mtime for f in (d / "checkpoints").glob("phase*.pt")}
                              for d in dirs}}
    t1 = time.time()
    proc = launch(out, out.parent / "second.log")
    rc = proc.wait(timeout=900)
    return {"out": out, "dirs": dirs, "sw": sw, "interrupted": interrupted, "rc": rc,
            "log": (out.parent / "second.log").read_text(), "seconds": (t1 - t0, time.time() - t1)}


@pytest.mark.slow
def test_an_interrupted_sweep_leaves_interrupted_trials(swept):
    it = swept["interrupted"]
    assert it["rc"] == 1
    for d in swept["dirs"]:
        assert it["trial"][d.name]["state"] == "running"                   # the trial never finished
        assert {"phase1.pt", "phase2.pt"} <= set(it["mtimes"][d.name])
        assert it["status"][d.name]["03_phase2_multihorizon"]["state"] == "ok"
    assert set(it["table"]["state"]) == {"interrupted"} and not it["chapter"]     # no chapter for an unfinished sweep
    assert len(it["launches"]) == 1 and it["launches"][0]["ended"] and it["launches"][0]["wall_seconds"] > 0


@pytest.mark.slow
def test_the_rerun_resumes_and_finishes_every_trial(swept):
    assert swept["rc"] == 0, swept["log"][-3000:]
    it = swept["interrupted"]
    for t, d in zip(swept["sw"].trials, swept["dirs"]):
        st = statuses(d)
        # what had finished before the interrupt was not executed again, nor retrained
        for name, s in it["status"][d.name].items():
            if s["state"] == "ok":
                assert st[name] == s, name
        for f, mtime in it["mtimes"][d.name].items():
            assert (d / "checkpoints" / f).stat().st_mtime == mtime, f
        log = (d / "sweep.log").read_text()
        assert "02_phase1_teacher_forcing: done before, skipped" in log
        # and the trial is a normal, complete run directory with its overrides
        m = json.loads((d / "metrics.json").read_text())
        assert m["run_state"] == "ok" and all(s["state"] == "ok" for s in m["status"].values())
        rec = yaml.safe_load((d / "params.yaml").read_text())
        assert rec["provenance"]["overrides"] == t.overrides
        assert rec["model"]["prior"] == t.config["prior"] and rec["generation"]["max_calibration"] == 2
        for n in (1, 2, 3, 4):
            assert (d / "checkpoints" / f"phase{n}.pt").exists()
        assert (d / "notebooks" / "09_evaluation.ipynb").exists() and results.read_trial(d)["state"] == "ok"
    assert "[2/2]" in swept["log"] and "prior=conditional: ok, rmse" in swept["log"]
    launches = json.loads((swept["out"] / "sweep.json").read_text())["launches"]
    assert launches[0] == it["launches"][0] and len(launches) == 2 and launches[1]["ended"]   # one entry per launch


@pytest.mark.slow
def test_the_results_table_and_the_chapter(swept):
    out = swept["out"]
    df = results.load_results(out)
    assert list(df["trial"]) == ["prior=standard", "prior=conditional"] and set(df["state"]) == {"ok"}
    assert list(df["prior"]) == ["standard", "conditional"] and list(df["model.kl_weight"]) == [1e-5, 1.0]
    assert df["rmse"].gt(0).all() and df["cal rmse"].gt(0).all() and df["phase4.val_rmse"].gt(0).all()
    assert set(df["phase1"]) <= {"PASS", "MARGINAL", "FAIL"} and set(df["gate3"]) <= {"PASS", "MARGINAL", "FAIL"}
    assert df["seconds"].gt(0).all() and df.attrs["sweep"]["axes"] == ["prior"]
    assert df["trained on"].str.startswith("cpu ").all()         # the kernel path of each trial's training
    assert len(df.attrs["sweep"]["launches"]) == 2
    md = (out / "results.md").read_text()
    assert "## Mean +- sd across seeds per configuration" in md and "| prior=conditional |" in md
    assert "| trained on |" in md and f"| {df['trained on'].iloc[0]} |" in md
    # the seed-aware readings on the real backfills (one seed here: DM and MCS, no paired t)
    dm = analysis.dm_by_seed(df, "prior", "standard", "conditional")
    assert len(dm) == 1 and np.isfinite(dm["dm"].iloc[0]) and dm["seeds"].iloc[0] == 1
    mcs = analysis.config_mcs(df)
    assert set(mcs["group"]) == {"prior=standard", "prior=conditional"} and mcs["in set"].any()
    nb = json.loads((out / "10_sweep.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = json.dumps(outputs)
    assert "2 trials of test.yaml (2 finished)" in text and "Model Confidence Set" in text


@pytest.mark.slow
def test_the_sweep_chapter_builds_as_a_book(swept):
    """`backfill book runs/sweeps/<sweep>`: the executed chapter alone (the trials' own files are not pages)."""
    res = subprocess.run([sys.executable, "-m", "backfill", "book", str(swept["out"])], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    html = swept["out"] / "_build" / "html"
    page = (html / "10_sweep.html").read_text()
    assert "Mean +- sd across seeds per configuration" in page and "prior=conditional" in page
    assert not list(html.glob("prior=*"))
    assert "WARNING" not in (swept["out"] / "logs" / "book_build.log").read_text()


@pytest.mark.slow
def test_any_grid_runs_the_whole_pipeline_without_arbitrage_the_truth_lacks(swept):
    """The test sweep's trials run on the embedded data built on a dense 6x7 grid (params/sweeps/test.yaml `set`),
    through every notebook: generated days carry no more arbitrage than the truth, for either prior."""
    mons = [0.9, 0.933, 0.967, 1.0, 1.033, 1.067, 1.1]
    for d in swept["dirs"]:
        m = json.loads((d / "metrics.json").read_text())
        assert m["data"]["grid"] == [6, 7] and m["run_state"] == "ok"
        z = np.load(sorted((d / "backfill").glob("*.npz"))[0])
        assert z["p50"].shape[1:] == (6, 7) and np.allclose(z["moneyness"], mons)
        for window, methods in m["backfill"].items():
            for name in ("vae_o9", "vae_o5"):
                assert methods[name]["arbitrage_share"] <= methods["truth"]["arbitrage_share"] + 0.01, (d.name, window)
                assert methods[name]["arbitrage_share_raw"] >= methods[name]["arbitrage_share"]


@pytest.mark.slow
def test_a_local_ray_leaves_no_session_folder_behind(tmp_path):
    """Each launch of an embedded Ray left a /tmp/ray/session_* folder; it goes at shutdown, its logs kept in the
    sweep's scratch folder."""
    sw = spec.load(SWEEPS / "test.yaml")
    session = runner._init_ray(sw, None)
    try:
        assert session is not None and session.is_dir() and session.name.startswith("session_")
    finally:
        runner._shutdown_ray(session, tmp_path)
    assert not session.exists() and (tmp_path / "ray" / "logs").is_dir()
    latest = session.parent / "session_latest"
    assert not (latest.is_symlink() and Path(os.readlink(latest)).name == session.name)


def test_a_sweep_directory_over_the_sources_is_refused(tmp_path):
    """`--out notebooks` would have the sweep chapter executed over notebooks/10_sweep.ipynb; a name of '..' made
    runs/ the sweep directory."""
    from backfill.rundir import RunDirError
    sw = spec.load(SWEEPS / "test.yaml")
    before = (ROOT / "notebooks" / "10_sweep.ipynb").read_bytes()
    for out in (ROOT / "notebooks", ROOT):
        with pytest.raises(RunDirError, match="is or contains the repository's notebooks/"):
            runner.run(sw, out=out)
    assert (ROOT / "notebooks" / "10_sweep.ipynb").read_bytes() == before and not (ROOT / "sweep.json").exists()
    with pytest.raises(spec.SweepError, match="'name' must be a name of letters"):
        spec.load(write_sweep(tmp_path, name="..", space={"seed": [0]}))


# --- the claims sweep of the test profile ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def claims_swept(swept):
    """params/sweeps/test_claims.yaml: the reference and one level of each kind of claim, one seed. Its reference and
    prior=standard trials have the params of the test sweep's prior=conditional and prior=standard trials (the same
    `set`): copied in under their claims names they are found finished and not executed again, as in any rerun of a
    sweep, so three trials train (phase 4 alone, a single training offset, (C, H) = (5, 6)). (This is also the test
    that a finished trial reruns nothing: the same states, keys and seconds.)"""
    out = swept["out"].parent / "test_claims"
    before = {}
    for src, dst in (("prior=conditional", "reference,seed=0"), ("prior=standard", "prior=standard,seed=0")):
        shutil.copytree(swept["out"] / src, out / dst, ignore=shutil.ignore_patterns("_build", "sweep.log"))
        before[dst] = statuses(out / dst)
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "backfill", "sweep", str(SWEEPS / "test_claims.yaml"), "--out",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    return {"out": out, "res": res, "seconds": time.time() - t0, "before": before}


@pytest.mark.slow
def test_the_claims_sweep_runs_every_kind_of_level(claims_swept):
    out, res = claims_swept["out"], claims_swept["res"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = results.load_results(out)
    assert list(df["claim"]) == ["reference", "curriculum", "multi_offset", "horizon_context", "prior"]
    assert list(df["level"]) == ["reference", "phase4_only", "single_offset", "C5_H6", "standard"]
    assert set(df["state"]) == {"ok"} and df["rmse"].gt(0).all() and df["cal ci_violation"].notna().all()
    for reused in ("reference,seed=0", "prior=standard,seed=0"):
        log = (out / reused / "sweep.log").read_text().splitlines()
        assert len(log) == 9 and all("done before, skipped" in ln for ln in log), reused
        assert statuses(out / reused) == claims_swept["before"][reused]      # nothing executed, nothing rewritten
    p4 = df.set_index("level").loc["phase4_only"]
    assert (p4["phase1"], p4["gate1"], p4["gate2"]) == ("SKIPPED", "SKIPPED", "SKIPPED")
    assert np.isnan(p4["phase1.val_rmse"]) and p4["phase4"] in ("PASS", "MARGINAL", "FAIL")
    assert "| curriculum=phase4_only,seed=0 | curriculum | phase4_only |" in (out / "results.md").read_text()
    ens = claims.level_table(df, "multi_offset", "offset_ensemble").set_index("level")
    assert ens.loc["reference", "offset"] == "5" and ens["seeds"].tolist() == [1, 1]
    hc = claims.level_table(df, "horizon_context").set_index("level")
    assert hc.loc["C5_H6", "offset"] == "6" and hc.loc["reference", "offset"] == "9"
    assert claims.dm(df, "horizon_context")["days"].iloc[0] > 0        # other offsets, the same calendar days
    nb = json.loads((out / "11_plan_claims.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = json.dumps(outputs)
    for claim in ("curriculum", "multi_offset", "horizon_context", "prior"):
        assert f"Verdict on `{claim}`: inconclusive at this scale." in text, claim    # one seed: no t over seeds
    assert "one seed, no t over seeds" in text and "5 trials of test.yaml (5 finished)" in text
    assert not (out / "10_sweep.ipynb").exists()
    skipped = (out / "curriculum=phase4_only,seed=0" / "notebooks" / "02_phase1_teacher_forcing.ipynb").read_text()
    assert "Phase 1 is skipped" in skipped and "decision: SKIPPED" in skipped
    print(f"test_claims sweep: {claims_swept['seconds']:.0f} s")


@pytest.mark.slow
def test_the_claims_chapter_builds_alone_and_as_a_part_of_a_runs_book(claims_swept, monkeypatch):
    """`backfill book runs/sweeps/<claims sweep>` builds chapter 11 alone; `backfill book RUN --sweep <it>` adds it as
    the part "Does the plan's reasoning hold?" (its toc checked here, without a second Jupyter Book build)."""
    out = claims_swept["out"]
    assert claims_swept["res"].returncode == 0
    res = subprocess.run([sys.executable, "-m", "backfill", "book", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    page = (out / "_build" / "html" / "11_plan_claims.html").read_text()
    assert "Does the plan" in page and "The verdict rule" in page and "inconclusive at this scale" in page
    assert not (out / "_build" / "html" / "10_sweep.html").exists()
    assert "WARNING" not in (out / "logs" / "book_build.log").read_text()
    seen = {}
    monkeypatch.setattr(pipeline, "_build", lambda run_dir, toc, log, **kw: seen.update(toc=toc) or run_dir)
    run = out / "reference,seed=0"
    pipeline.build_book(run, log=lambda *a: None, sweep=out)
    assert seen["toc"]["parts"][-1] == {"caption": "Does the plan's reasoning hold?",
                                        "chapters": [{"file": "sweep/11_plan_claims"}]}
    assert (run / "sweep" / "11_plan_claims.ipynb").exists()
