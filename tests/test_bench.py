"""`python -m backfill bench --full-run`: the curriculum trained on this machine's device into a run directory
(notebooks 01-05) and its record (commit, device, versions, wall time per phase)."""
import json
import shutil

import pytest

from backfill import bench, pipeline
from backfill.__main__ import main as cli_main


@pytest.mark.slow
def test_full_run_trains_notebooks_01_to_05_and_records_the_run(finished_run, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run(params_path, only=None, run_dir=None, overrides=(), log=print, **kw):   # a finished run's files
        calls.append(only)
        if not (run_dir / "metrics.json").exists():
            shutil.copytree(finished_run, run_dir, dirs_exist_ok=True)
        return 0
    monkeypatch.setattr(pipeline, "run", fake_run)
    rd = tmp_path / "full"
    assert cli_main(["bench", "--full-run", "--params", "params/test.yaml", "--run-dir", str(rd)]) == 0
    assert calls == ["01", "02", "03", "04", "05"]                  # training only; 06-09 run later, anywhere
    rec = json.loads((rd / "record.json").read_text())
    assert set(rec["phases"]) == {"phase1", "phase2", "phase3", "phase4"}
    assert rec["training_seconds"] == pytest.approx(sum(r["seconds"] for r in rec["phases"].values()))
    assert rec["torch"].startswith("2.13.0") and rec["device_name"] and "git_commit" in rec
    assert rec["cuda"] is None and rec["phases"]["phase1"]["device"] == "cpu"
    assert f"--run-dir {rd} --from 06" in capsys.readouterr().out


def test_full_run_stops_at_the_first_failed_notebook(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run", lambda *a, only=None, **k: calls.append(only) or (1 if only == "03" else 0))
    assert bench.full_run("params/test.yaml", tmp_path / "x") == 1
    assert calls == ["01", "02", "03"] and not (tmp_path / "x" / "record.json").exists()
