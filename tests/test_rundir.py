"""A run never presents stale or mixed results: notebook keys over params, code and notebooks; the run lock;
interrupted runs."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from backfill import pipeline, rundir

ROOT = Path(__file__).resolve().parents[1]


def test_code_fingerprint_follows_the_source():
    fp, training = rundir.code_fingerprint(), rundir.code_fingerprint(rundir.TRAINING_CODE)
    assert fp != training and len(fp) == 16
    assert rundir.code_fingerprint(["model.py"]) != rundir.code_fingerprint(["rollout.py"])


def test_a_second_run_on_a_locked_directory_is_a_one_line_error(tmp_path):
    rd = tmp_path / "run"
    with rundir.locked(rd):
        assert rundir.is_locked(rd)
        with pytest.raises(rundir.RunLocked):
            with rundir.locked(rd):
                pass
        res = subprocess.run([sys.executable, "-m", "backfill", "run", ROOT / "params" / "test.yaml", "--run-dir", rd,
                              "--only", "01"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2
        err = res.stderr.strip()
        assert "\n" not in err and "is being written by pid" in err and str(rd) in err
        assert not (rd / "metrics.json").exists()                     # nothing written by the refused run
    assert not rundir.is_locked(rd)


def test_a_run_whose_process_died_is_interrupted_and_has_no_book(tmp_path):
    rd = tmp_path / "run"
    (rd / "notebooks").mkdir(parents=True)
    rundir.update_metrics(rd, profile="test", run_state="running",
                            status={"01_data_autocorrelation": {"state": "running"}})
    assert rundir.run_state(rd) == "interrupted"                  # nobody holds the lock
    with rundir.locked(rd):
        assert rundir.run_state(rd) == "running"
    with pytest.raises(SystemExit, match="is interrupted; re-run it"):
        pipeline.build_book(rd)
    assert json.loads((rd / "metrics.json").read_text())["run_state"] == "running"   # reading changes nothing


def test_section_writers_forget_and_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKFILL_NOTEBOOK", "06_gates")
    monkeypatch.setenv("BACKFILL_NOTEBOOK_KEY", "k6")
    rundir.update_metrics(tmp_path, gates={"gate1": 1}, run_state="running")
    monkeypatch.setenv("BACKFILL_NOTEBOOK", "07_generate_6month")
    monkeypatch.setenv("BACKFILL_NOTEBOOK_KEY", "k7")
    rundir.update_metrics(tmp_path, gates={"gate1": 1, "gate3": 3}, generation={"n": 1})
    m = rundir.read_metrics(tmp_path)
    assert m["writers"] == {"gates": {"06_gates": "k6", "07_generate_6month": "k7"},
                            "generation": {"07_generate_6month": "k7"}}          # bookkeeping sections carry none
    assert rundir.stale_sections(m, {"06_gates": "k6", "07_generate_6month": "k7"}) == []
    assert rundir.stale_sections(m, {"06_gates": "k6", "07_generate_6month": "new"}) == ["gates", "generation"]
    rundir.forget_writer(tmp_path, "07_generate_6month")      # 07 runs again: what it alone wrote is gone
    m = rundir.read_metrics(tmp_path)
    assert "generation" not in m and m["writers"] == {"gates": {"06_gates": "k6"}} and m["gates"]["gate3"] == 3


def test_the_code_key_leaves_out_only_modules_no_notebook_reaches():
    """rundir.ORCHESTRATION (modules, and packages: sweep/) is left out of every notebook's key: that is only sound
    while no notebook of a run (01-09) and no other module imports them or any module of theirs
    (`from backfill.sweep import analysis`, `from .sweep.spec import ...`, `import backfill.sweep.runner`); and the key
    hashes the same modules as before the sweep package: every other top-level module, in sorted order, nothing of
    sweep/."""
    import re
    lib = ROOT / "lib" / "backfill"
    orch = {m.removesuffix(".py") for m in rundir.ORCHESTRATION}
    pattern = re.compile(r"(?:from\s+(?:backfill|\.)\s+import\s+\(?([\w, ]+)|from\s+(?:backfill)?\.(\w+)(?:\.\w+)*\s+import|"
                         r"import\s+backfill\.(\w+))")

    def imported(text):
        out = set()
        for a, b, c in pattern.findall(text):
            out |= {x.strip().split(" as ")[0] for x in a.split(",") if x.strip()} | {b, c}
        return out - {""}
    assert imported("from backfill.sweep import analysis\nfrom .sweep.spec import X\nimport backfill.sweep.runner\n"
                    "from backfill import report, sweep\nfrom . import claims") == {"sweep", "report", "claims"}
    key = rundir.key_modules()
    for f in key:
        assert f.relative_to(lib).parts[0] not in rundir.ORCHESTRATION, f
        assert not imported(f.read_text()) & orch, f"{f.name} imports {imported(f.read_text()) & orch}"
    assert [f.relative_to(lib).as_posix() for f in key] == sorted(
        f.name for f in lib.glob("*.py") if f.name not in rundir.ORCHESTRATION)      # top-level modules only
    assert (lib / "sweep" / "runner.py").is_file() and "sweep" in rundir.ORCHESTRATION
    for name in pipeline.NOTEBOOKS:
        cells = [c.source for c in nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
                 if c.cell_type == "code"]
        assert not imported("\n".join(cells)) & orch, name
    before = rundir.code_fingerprint()
    assert rundir.code_fingerprint([f.name for f in sorted(lib.glob("*.py")) if f.name not in rundir.ORCHESTRATION]) \
        == before


def test_a_run_directory_over_the_sources_is_refused(tmp_path):
    """The repository root, notebooks/ or a folder above it as run directory would have the executed copies
    overwrite the source notebooks (and a failure move them to notebooks/stale/)."""
    for rd in (ROOT, ROOT / "notebooks", ROOT.parent, ROOT / "runs" / ".." / "notebooks" / "."):
        with pytest.raises(rundir.RunDirError, match="is or contains the repository's notebooks/"):
            rundir.make_run_dir(rd)
    assert not (ROOT / "notebooks" / "notebooks").exists()
    assert rundir.make_run_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    assert (tmp_path / "a" / "b" / "notebooks").is_dir()


def test_a_run_directory_that_is_a_file_or_under_one_is_a_one_line_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for rd, msg in ((f, "is a file, not a directory"), (f / "sub", "cannot create run directory")):
        res = subprocess.run([sys.executable, "-m", "backfill", "run", ROOT / "params" / "test.yaml", "--run-dir", rd,
                              "--only", "01"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        err = res.stderr.strip()
        assert res.returncode == 2 and "\n" not in err and msg in err and str(rd) in err, res.stderr
    assert f.read_text() == "x"


def _hand_run(rd, **status):
    """A run directory as notebooks opened by hand leave it: params.yaml from params/test.yaml, no --set."""
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "params.yaml").write_text(yaml.safe_dump({"profile": "test", "provenance": {
        "params_source": str(ROOT / "params" / "test.yaml"), "overrides": []}}))
    rundir.update_metrics(rd, profile="test", status={n: {"state": s} for n, s in status.items()})
    return rundir.Run({}, None, rd, {})


def test_a_notebook_opened_before_the_one_it_reads_from_says_what_to_run(tmp_path):
    run = _hand_run(tmp_path / "run")
    with pytest.raises(rundir.NotYetRun) as ei:
        rundir.require(run, "generation", "08_generate_1year")
    assert str(ei.value) == (f"{tmp_path / 'run'} has no 'generation' section: run notebook 08_generate_1year and the "
                             f"ones before it first (python -m backfill run params/test.yaml --run-dir {tmp_path / 'run'})")
    done = {n: "ok" for n in pipeline.NOTEBOOKS[:7]}
    run = _hand_run(tmp_path / "run", **done)
    with pytest.raises(rundir.NotYetRun, match=r"run notebook 08_generate_1year first \(python -m backfill run "
                                               r"params/test.yaml --only 08 --run-dir "):
        rundir.require(run, "generation", "08_generate_1year")
    rundir.update_metrics(run.run_dir, generation={"windows": 1})
    assert rundir.require(run, "generation", "08_generate_1year") == {"windows": 1}
    # a phase checkpoint that is not there yet names the notebook that trains it
    from backfill import checkpoint
    with pytest.raises(FileNotFoundError) as ei:
        checkpoint.load_model(run.run_dir / "checkpoints" / "phase4.pt")
    assert str(ei.value).endswith("phase4.pt is missing: run notebook 05 (phase 4) first (python -m backfill run "
                                  f"params/test.yaml --only 05 --run-dir {tmp_path / 'run'})")


@pytest.mark.slow
def test_notebook_09_opened_before_08_ran_says_so_in_one_line(tmp_path):
    """Notebook 09 run by hand in a fresh clone failed with KeyError: 'generation'."""
    import papermill
    with pytest.raises(papermill.PapermillExecutionError) as ei:
        pipeline.execute_notebook(ROOT / "notebooks" / "09_evaluation.ipynb", tmp_path / "09.ipynb",
                                  {"params_path": str(ROOT / "params" / "test.yaml"), "run_dir": str(tmp_path / "run")})
    assert ei.value.ename == "NotYetRun" and "\n" not in ei.value.evalue
    assert ei.value.evalue.startswith(f"{tmp_path / 'run'} has no 'generation' section: run notebook 08_generate_1year")


def test_a_notebook_run_by_hand_says_when_it_creates_the_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BACKFILL_BATCH", raising=False)                # JupyterLab: not a batch run
    rundir.open_run(ROOT / "params" / "test.yaml", tmp_path / "run")
    assert capsys.readouterr().out.strip() == (
        f"created the run directory {tmp_path / 'run'}: this notebook writes its results there (python -m backfill "
        f"run params/test.yaml --run-dir {tmp_path / 'run'} runs every notebook into it)")
    rundir.open_run(ROOT / "params" / "test.yaml", tmp_path / "run")      # it exists now: nothing to say
    monkeypatch.setenv("BACKFILL_BATCH", "1")                            # `backfill run` creates it itself
    rundir.open_run(ROOT / "params" / "test.yaml", tmp_path / "other")
    assert capsys.readouterr().out == ""
