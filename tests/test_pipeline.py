"""pipeline: the whole pipeline on params/test.yaml through the CLI (the run contract, the book), and what keeps a
run from presenting stale or mixed results (notebook keys, resuming, interrupting, failing). The finished run is
conftest's `finished_run`, shared with the other tests that read one; a test that changes a run changes a copy."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from backfill import pipeline, rundir

ROOT = Path(__file__).resolve().parents[1]
TEST_PARAMS = ROOT / "params" / "test.yaml"


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "backfill", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def book(finished_run, tmp_path_factory):
    """A copy of the finished run with its book built, with a page comparing it with another run and a sweep's
    chapter: (the run directory, the `backfill book` result, the other run)."""
    root = tmp_path_factory.mktemp("book")
    run_dir = root / "test"
    shutil.copytree(finished_run, run_dir)
    other = root / "other"                        # a second run to compare with: same results, another seed recorded
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("_build", "checkpoints", "backfill", "notebooks"))
    rec = yaml.safe_load((other / "params.yaml").read_text())
    (other / "params.yaml").write_text(yaml.safe_dump({**rec, "seed": 7}))
    sweep_dir = root / "sweep"                      # a sweep's chapter (unexecuted here: the book executes nothing)
    sweep_dir.mkdir()
    shutil.copy2(ROOT / "notebooks" / "10_sweep.ipynb", sweep_dir / "10_sweep.ipynb")
    return run_dir, cli("book", run_dir, "--compare", other, "--sweep", sweep_dir), other


@pytest.mark.slow
def test_run_leaves_the_contract(finished_run):
    run_dir = finished_run
    m = json.loads((run_dir / "metrics.json").read_text())
    names = pipeline.available_notebooks()
    assert m["profile"] == "test" and m["run_state"] == "ok"
    assert {n: s["state"] for n, s in m["status"].items()} == {n: "ok" for n in names}
    for n in names:
        assert (run_dir / "notebooks" / f"{n}.ipynb").exists()
    d = m["data"]
    assert d["days"] == 5030 and d["grid"] == [5, 5] and d["date_range"] == ["1999-01-05", "2018-12-31"]
    assert d["vix_corr"] >= 0.8 and d["arbitrage_free_share"] >= 0.99
    assert set(m["autocorrelation"]) >= {"20", "60", "90"}
    if "05_phase4_ar_h90" in names:
        assert set(m["phases"]) == {"phase1", "phase2", "phase3", "phase4"}
        for n in (1, 2, 3, 4):
            assert (run_dir / "checkpoints" / f"phase{n}.pt").exists()
            assert (run_dir / "logs" / f"phase{n}.csv").exists()
        assert (run_dir / "checkpoints" / "last.pt").exists()
        assert list((run_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"))
        assert m["phases"]["phase2"]["criteria"]["decision"] in ("PASS", "MARGINAL", "FAIL")
        for n in (1, 2, 3, 4):                       # the plan's "KL < 10" beside every phase's criteria
            ph = m["phases"][f"phase{n}"]
            assert ph["val_kl"] >= 0 and "KL to the prior (validation)" in [c["criterion"] for c in ph["criteria"]["checks"]]
    if "09_evaluation" in names:
        roll = m["rolling"]
        methods = {"vae_o9", "vae_o5", "econometric", "random_walk", "har", "backbone"}
        assert methods | {m + "_cal" for m in methods} <= set(roll)
        for k in ("pinball_p05", "pinball_mean", "interval_score", "coverage_p05", "coverage_p95"):
            assert roll["vae_o9"][k] is not None and roll["vae_o9_cal"][k] is not None
        for meth in methods:                         # the calibration never moves the median
            assert roll[meth + "_cal"]["rmse"] == roll[meth]["rmse"]
            assert 0 <= roll[meth + "_cal"]["rv_outside_calibration"] <= 1
        assert roll["vae_o9"]["crps"] > 0 and roll["econometric"]["crps"] > 0 and roll["random_walk"]["crps"] is None
        assert roll["har"]["crps"] > 0 and roll["backbone"]["crps"] > 0
        assert set(m["mcs"]) == {"pinball", "squared"} and set(m["mcs"]["pinball"]["methods"]) >= methods
        cal = m["calibration"]["vae_o9"]
        assert cal["windows"] >= 1 and cal["lead_bins"] == [1, 6, 13] and len(cal["lower"]) == 3 and cal["empty_bins"] == []
        dm = m["dm_tests"]["rolling_by_day"]
        assert set(dm) >= {f"vae_o9 vs {b}" for b in ("econometric", "random_walk", "har", "backbone")}
        assert not any(k.endswith("_cal") for k in dm)    # squared loss: the calibrated rows share their medians
        # each calendar day once: the union of the rolling origins' 25 days (spread over the test split; the
        # overlapping case is test_evaluate's)
        starts = sorted(int(w.removeprefix("rolling_")) for w in m["backfill"] if w.startswith("rolling_"))
        assert len(starts) == 2 and dm["vae_o9 vs econometric"]["days"] == len(set().union(*(range(t, t + 25) for t in starts)))
        assert m["windows_split"]["crisis"] == "train (in-sample)" and m["windows_split"]["out_of_sample"] == "test"
    keys = pipeline._current_keys(run_dir)          # every result section carries the key of the notebook(s) that wrote it
    assert m["writers"]["data"] == {"01_data_autocorrelation": keys["01_data_autocorrelation"]}
    if "05_phase4_ar_h90" in names:
        assert set(m["writers"]["phases"]) == {n for n in names if n[:2] in ("02", "03", "04", "05")}
    assert set(m["writers"]) == set(m) - {"status", "run_state", "profile", "writers"}
    assert rundir.stale_sections(m, keys) == []
    rec = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert rec["model"]["context_len"] == 10
    prov = rec["provenance"]
    assert prov["packages"]["torch"].startswith("2.13.0") and "git_commit" in prov and prov["data_fingerprint"]


@pytest.mark.slow
def test_rerun_skips_finished_notebooks_and_same_params_give_identical_data(finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "rerun")
    res = cli("run", TEST_PARAMS, "--run-dir", run_dir)
    assert res.returncode == 0
    assert res.stdout.count("done before, skipped") == len(pipeline.available_notebooks())
    other = tmp_path / "again"
    res = cli("run", TEST_PARAMS, "--run-dir", other, "--only", "01")
    assert res.returncode == 0, res.stderr
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads((other / "metrics.json").read_text())
    assert a["data"] == b["data"] and a["autocorrelation"] == b["autocorrelation"]
    assert b["status"]["01_data_autocorrelation"]["state"] == "ok"


@pytest.mark.slow
def test_a_failing_notebook_marks_the_run_failed(finished_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / "checkpoints" / "phase1.pt").unlink()               # an unreadable checkpoint would retrain;
    (broken / "checkpoints" / "phase1.pt").mkdir()                 # one that is a directory fails notebook 02
    res = cli("run", TEST_PARAMS, "--run-dir", broken, "--from", "02", "--force")
    assert res.returncode == 1
    m = json.loads((broken / "metrics.json").read_text())
    st = m["status"]["02_phase1_teacher_forcing"]
    assert st["state"] == "failed" and isinstance(st["cell"], int) and st["error"]
    assert m["run_state"] == "failed"
    assert "02_phase1_teacher_forcing: FAILED in cell" in res.stdout
    assert (broken / "notebooks" / "02_phase1_teacher_forcing.failed.ipynb").exists()
    # the earlier outputs of that notebook and the ones after it are set aside, not mixed into a book
    nb = broken / "notebooks"
    assert not (nb / "02_phase1_teacher_forcing.ipynb").exists() and not (nb / "03_phase2_multihorizon.ipynb").exists()
    assert (nb / "stale" / "03_phase2_multihorizon.ipynb").exists() and (nb / "01_data_autocorrelation.ipynb").exists()
    assert m["status"]["03_phase2_multihorizon"]["state"] == "stale"
    res = cli("book", broken)
    assert res.returncode != 0 and "failed" in res.stderr and "02_phase1_teacher_forcing" in res.stderr


@pytest.mark.slow
def test_book_builds_with_glued_numbers(book, tmp_path):
    run_dir, res, other = book
    assert res.returncode == 0, res.stdout + res.stderr
    page = (run_dir / "_build" / "html" / "book" / "compare.html").read_text()
    assert "Comparison with other runs" in page and "seed: 0 -&gt; 7" in page and str(other) in page
    assert "configurations across seeds" in (run_dir / "_build" / "html" / "sweep" / "10_sweep.html").read_text()
    bad = cli("book", run_dir, "--sweep", tmp_path)
    assert bad.returncode != 0 and "has no executed sweep chapter" in bad.stderr
    assert (run_dir / "_build" / "html" / "sweep" / "10_sweep.html").exists()       # the built book is kept
    index = run_dir / "_build" / "html" / "index.html"
    assert index.exists() and str(index) in res.stdout
    log = (run_dir / "logs" / "book_build.log").read_text()
    assert "WARNING" not in log, [ln for ln in log.splitlines() if "WARNING" in ln][:5]
    html = (run_dir / "_build" / "html" / "book" / "summary.html").read_text() \
        if (run_dir / "_build" / "html" / "book" / "summary.html").exists() else index.read_text()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert "5030" in html and "1999-01-05 to 2018-12-31" in html
    assert f"{m['data']['vix_corr']:.3f}" in html
    r = m["rolling"]
    for v in (100 * r["vae_o9"]["ci_violation"], 100 * r["vae_o9_cal"]["ci_violation"]):
        assert f"{v:.1f}" in html
    assert f"{r['vae_o9']['interval_score']:.4f}" in html and f"{m['phases']['phase4']['val_kl']:.3g}" in html
    from backfill import report
    p_text = report.fmt_p(m["dm_tests"]["rolling_by_day"]["vae_o9 vs har"]["p_value"])
    assert p_text.replace("<", "&lt;") in html and "p = 0" not in html
    assert f"{r['har']['rmse']:.4f}" in html and f"{r['backbone']['rmse']:.4f}" in html
    assert "out_of_sample (test split)" in html                     # the headline window is out of sample
    nb01 = (run_dir / "_build" / "html" / "notebooks" / "01_data_autocorrelation.html").read_text()
    assert "plotly-graph-div" in nb01 and "Plotly.newPlot" in nb01
    assert (run_dir / "_build" / "html" / "_static" / "plotly.min.js").exists()


@pytest.mark.slow
def test_book_refuses_notebooks_of_other_code_or_params(finished_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("_build", "checkpoints", "backfill"))
    m = json.loads((copy / "metrics.json").read_text())
    assert all(s.get("key") for s in m["status"].values())
    m["status"]["03_phase2_multihorizon"]["key"] = "from-older-code"      # as if lib/ or the notebook changed since
    (copy / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(SystemExit, match="03_phase2_multihorizon in .* ran with other params or code"):
        pipeline.build_book(copy)


@pytest.mark.slow
def test_a_section_written_by_hand_is_not_current_until_the_notebooks_run_again(finished_run, tmp_path):
    """A notebook run by hand in a run directory (Jupyter, no `backfill run`) writes metrics.json sections that no
    key vouches for: the book refuses them, and the next run re-runs every notebook instead of skipping."""
    copy = tmp_path / "hand"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("_build"))
    rundir.update_metrics(copy, data={"days": -1})               # what a hand-run notebook 01 would do
    m = json.loads((copy / "metrics.json").read_text())
    assert m["writers"]["data"][rundir.BY_HAND] is None and rundir.stale_sections(m, pipeline._current_keys(copy)) == ["data"]
    with pytest.raises(SystemExit, match=r"sections \(data\) written by hand"):
        pipeline.build_book(copy)
    res = cli("run", TEST_PARAMS, "--run-dir", copy, "--only", "01")
    assert res.returncode == 0 and "written by a notebook run by hand (data)" in res.stdout
    assert "done before, skipped" not in res.stdout
    m = json.loads((copy / "metrics.json").read_text())
    assert m["data"]["days"] == 5030 and rundir.BY_HAND not in m["writers"]["data"]
    assert m["run_state"] == "partial" and m["status"]["02_phase1_teacher_forcing"]["state"] == "stale"


@pytest.mark.slow
def test_bad_params_leave_the_run_untouched(finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    p = yaml.safe_load(TEST_PARAMS.read_text())
    p["training"]["phase4_offsets"] = [5, 12]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(p))
    before = (run_dir / "metrics.json").read_bytes()
    res = cli("run", bad, "--run-dir", run_dir)
    assert res.returncode == 2
    assert res.stderr.strip() == "backfill: params: 'training.phase4_offsets' offset 12 must be in [1, horizon=9]"
    assert (run_dir / "metrics.json").read_bytes() == before


def _browser():
    """A headless Chromium driven by selenium, or a skip with the reason."""
    import shutil as _sh
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed")
    chromium, driver = _sh.which("chromium") or _sh.which("chromium-browser"), _sh.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium is not available (make test installs Debian's chromium + chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.slow
def test_book_in_a_browser(book):
    """The built book, served on localhost: glued numbers on the summary, rendered plotly figures, no JS errors."""
    import functools
    import http.server
    import threading
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir, res, _ = book
    assert res.returncode == 0, res.stdout + res.stderr
    html = run_dir / "_build" / "html"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass
    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    browser = _browser()
    m = json.loads((run_dir / "metrics.json").read_text())
    try:
        browser.get(f"{base}/book/summary.html")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "5030 trading days" in body and f"{m['data']['vix_corr']:.3f}" in body
        last = pipeline.available_notebooks()[-1]
        if last == "09_evaluation":
            assert f"{m['rolling']['econometric']['rmse']:.4f}" in body
            assert m["deployment"]["decision"] in body
        # the verdicts of the gates table read as words in the rendered page (no emoji font needed)
        browser.get(f"{base}/notebooks/06_gates.html")
        gates_text = browser.find_element(By.TAG_NAME, "body").text
        marks = [c["mark"] for g in m["gates"].values() for c in g["checks"]]
        assert {"pass", "near", "fail"} >= set(marks) and all(f" {mk}" in gates_text for mk in set(marks))
        assert not any(ch in gates_text for ch in "\u2705\u274c\u2b50\u26a0")
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('td')).filter(td => td.textContent.trim() === 'fail')"
            ".map(td => getComputedStyle(td).backgroundColor)")
        assert all(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in cells)   # styled: colour plus text
        pages = ["notebooks/01_data_autocorrelation.html", f"notebooks/{last}.html"]
        for page in pages:
            browser.get(f"{base}/{page}")
            WebDriverWait(browser, 30).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".plotly-graph-div .main-svg"))
            n = browser.execute_script("return document.querySelectorAll('.plotly-graph-div .main-svg').length")
            assert n >= 1, page
        # uncaught JavaScript exceptions and failed loads (the browser's own favicon probe aside)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and (
            e.get("source") == "javascript" or (e.get("source") == "network" and "favicon.ico" not in e["message"]))]
        assert not errors, errors[:3]
    finally:
        browser.quit()
        server.shutdown()


# --- keys, resuming, interrupting: a run is never stale or mixed --------------------------------

def _copy_notebooks(tmp_path) -> Path:
    d = tmp_path / "nb"
    shutil.copytree(ROOT / "notebooks", d)
    return d


def _edit(path: Path, kind: str, text: str) -> None:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == kind and "parameters" not in c.metadata.get("tags", []))
    cell.source += text
    nbformat.write(nb, path)


def test_editing_a_notebook_changes_its_key_and_every_later_one(tmp_path):
    d = _copy_notebooks(tmp_path)
    before = pipeline.notebook_keys("p", nb_dir=d, lib_fp="lib")
    assert list(before) == pipeline.NOTEBOOKS and len(set(before.values())) == len(before)
    _edit(d / "04_phase3_ar_h60.ipynb", "markdown", "\nprose changes nothing")
    assert pipeline.notebook_keys("p", nb_dir=d, lib_fp="lib") == before
    _edit(d / "04_phase3_ar_h60.ipynb", "code", "\nx = 1")
    after = pipeline.notebook_keys("p", nb_dir=d, lib_fp="lib")
    i = pipeline.NOTEBOOKS.index("04_phase3_ar_h60")
    for n in pipeline.NOTEBOOKS[:i]:
        assert after[n] == before[n]
    for n in pipeline.NOTEBOOKS[i:]:
        assert after[n] != before[n]
    # other params or another version of lib/ change every key
    assert set(pipeline.notebook_keys("q", nb_dir=d, lib_fp="lib").values()).isdisjoint(after.values())
    assert set(pipeline.notebook_keys("p", nb_dir=d, lib_fp="lib2").values()).isdisjoint(after.values())


@pytest.mark.slow
def test_a_run_restores_its_recorded_params_even_when_every_notebook_is_skipped(tmp_path):
    import yaml
    rd = tmp_path / "run"
    args = [sys.executable, "-m", "backfill", "run", ROOT / "params" / "test.yaml", "--run-dir", rd, "--only", "01",
            "--set", "model.kl_weight=0.5"]
    assert subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600).returncode == 0
    good = yaml.safe_load((rd / "params.yaml").read_text())
    clobbered = dict(good, provenance={**good["provenance"], "params_hash": "a notebook opened by hand"})
    (rd / "params.yaml").write_text(yaml.safe_dump(clobbered))
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "skipped" in res.stdout
    again = yaml.safe_load((rd / "params.yaml").read_text())
    assert again["provenance"]["params_hash"] == good["provenance"]["params_hash"]
    assert again["provenance"]["overrides"] == ["model.kl_weight=0.5"]


def test_a_kernel_that_dies_before_it_starts_is_started_again(monkeypatch, tmp_path):
    """Kernels launched at the same moment by several trials can race for ports (the loser dies before replying to
    kernel_info) or, on a loaded machine, not reply in time; no cell ran: execute_notebook retries those, and only
    those."""
    import papermill
    calls = []

    def flaky(src, dest, **kw):
        calls.append((kw["cwd"], kw["start_timeout"]))
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        if len(calls) == 2:                                  # jupyter_client's words when a start times out
            raise RuntimeError("Kernel didn't respond in 180 seconds")
    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    monkeypatch.setattr(pipeline.time, "sleep", lambda s: None)
    pipeline.execute_notebook(ROOT / "notebooks" / "01_data_autocorrelation.ipynb", tmp_path / "out.ipynb", {})
    assert calls == [(str(ROOT / "notebooks"), pipeline.KERNEL_START_TIMEOUT)] * 3 and pipeline.KERNEL_START_TIMEOUT > 60

    def broken(src, dest, **kw):
        calls.append(1)
        raise RuntimeError("something else")
    monkeypatch.setattr(papermill, "execute_notebook", broken)
    calls.clear()
    with pytest.raises(RuntimeError, match="something else"):
        pipeline.execute_notebook(ROOT / "notebooks" / "01_data_autocorrelation.ipynb", tmp_path / "out.ipynb", {})
    assert calls == [1]


@pytest.mark.slow
def test_ctrl_c_during_a_notebook_leaves_an_interrupted_run_that_resumes(tmp_path):
    """SIGINT (Ctrl-C) while notebook 02 trains: exit 130 with one line, the run and the notebook read `interrupted`
    (not failed: no .failed copy, no temp copy), `book` says how to resume, and the same command finishes it."""
    import signal
    import time
    rd = tmp_path / "run"
    args = [sys.executable, "-m", "backfill", "run", ROOT / "params" / "test.yaml", "--run-dir", rd, "--only", "02",
            "--set", "seed=1"]
    # Ctrl-C as at a terminal: a shell without job control starts background jobs (make, pytest) with SIGINT
    # ignored, and a child inherits that, so the run would never see the signal
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while time.time() - t0 < 60 and proc.poll() is None:
        time.sleep(0.2)
        try:
            if json.loads((rd / "metrics.json").read_text())["status"]["02_phase1_teacher_forcing"]["state"] == "running":
                break
        except (OSError, ValueError, KeyError):
            pass
    time.sleep(3)                                                 # inside the notebook: its kernel runs cells
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "[IPKernelApp]" not in err and err.strip().splitlines()[-1] == (
        "backfill: interrupted; run the same command again to resume (finished notebooks and checkpoints are kept)")
    assert "02_phase1_teacher_forcing: interrupted" in out
    m = json.loads((rd / "metrics.json").read_text())
    assert m["run_state"] == "interrupted" and m["status"]["02_phase1_teacher_forcing"]["state"] == "interrupted"
    assert rundir.run_state(rd) == "interrupted"
    assert sorted(p.name for p in (rd / "notebooks").iterdir()) == []    # no .failed copy, no .running temp file
    with pytest.raises(SystemExit) as ei:
        pipeline.build_book(rd)
    msg = str(ei.value)
    assert "is interrupted; re-run it to resume" in msg and "\n" not in msg
    assert msg.endswith(f"python -m backfill run params/test.yaml --run-dir {rd.resolve()} --set seed=1")
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and json.loads((rd / "metrics.json").read_text())["status"][
        "02_phase1_teacher_forcing"]["state"] == "ok", res.stdout + res.stderr


@pytest.mark.slow
def test_a_successful_rerun_clears_failed_set_aside_and_temp_copies(tmp_path, monkeypatch):
    """A notebook's .failed copy and its copy set aside in notebooks/stale/ go when it then succeeds (stale/ too, once
    empty); the .running temp files a killed run left go at the start of the next run."""
    monkeypatch.setenv("BACKFILL_BATCH", "1")
    rd = tmp_path / "run"
    nb = rd / "notebooks"
    (nb / "stale").mkdir(parents=True)
    for f in (nb / "01_data_autocorrelation.failed.ipynb", nb / "stale" / "01_data_autocorrelation.ipynb",
              nb / ".01_data_autocorrelation.running.ipynb", nb / ".05_phase4_ar_h90.running.ipynb"):
        f.write_text("{}")
    assert pipeline.run(ROOT / "params" / "test.yaml", only="01", run_dir=rd, log=lambda s: None) == 0
    assert sorted(p.name for p in nb.iterdir()) == ["01_data_autocorrelation.ipynb"]
    # a set-aside copy of a notebook that has not run again is still the last word on it: it stays
    (nb / "stale").mkdir()
    (nb / "stale" / "05_phase4_ar_h90.ipynb").write_text("{}")
    (nb / "05_phase4_ar_h90.failed.ipynb").write_text("{}")
    pipeline._clear_superseded("01_data_autocorrelation", rd)
    assert (nb / "stale" / "05_phase4_ar_h90.ipynb").exists() and (nb / "05_phase4_ar_h90.failed.ipynb").exists()
    pipeline._clear_superseded("05_phase4_ar_h90", rd)
    assert sorted(p.name for p in nb.iterdir()) == ["01_data_autocorrelation.ipynb"]


def test_ctrl_c_leaves_no_traceback_of_the_dead_kernel_task(caplog):
    """Under load, asyncio logged "Task exception was never retrieved" with nbclient's DeadKernelError (a traceback
    on stderr after Ctrl-C, before the one-line message); the filter drops that record and no other."""
    import asyncio
    import gc
    import logging
    from nbclient.exceptions import DeadKernelError

    def orphan(exc) -> None:                 # a task that fails and is never awaited, then collected
        async def fail():
            raise exc
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(fail())
            loop.run_until_complete(asyncio.sleep(0.01))
        finally:
            loop.close()
        del task
        gc.collect()

    log = logging.getLogger("asyncio")
    for f in [f for f in log.filters if isinstance(f, pipeline.QuietDeadKernel)]:   # by notebooks run in-process
        log.removeFilter(f)
    caplog.set_level(logging.ERROR, logger="asyncio")
    orphan(DeadKernelError("Kernel died"))
    assert [type(r.exc_info[1]).__name__ for r in caplog.records if r.name == "asyncio"] == ["DeadKernelError"]
    caplog.clear()
    pipeline.quiet_dead_kernels()
    pipeline.quiet_dead_kernels()                    # once is enough: no second filter
    assert sum(isinstance(f, pipeline.QuietDeadKernel) for f in logging.getLogger("asyncio").filters) == 1
    orphan(DeadKernelError("Kernel died"))
    orphan(ValueError("something else"))
    assert [type(r.exc_info[1]).__name__ for r in caplog.records if r.name == "asyncio"] == ["ValueError"]
