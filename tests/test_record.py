"""Results of record (`backfill.record`): a finished full run kept as results/<profile>/, and a run that generates
and evaluates from it (`run --checkpoint`), refused in one line when the record's model does not fit the params."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from backfill import bench, checkpoint, gates, pipeline, record, rundir
from backfill.__main__ import main as cli_main
from backfill.model import CVAE, ModelConfig
from conftest import TEST_PARAMS


def make_record(tmp_path, p, ds, **model) -> "Path":
    """A record of freshly initialised models (no training) for the test profile, with `model` fields changed."""
    cfg = ModelConfig(**{**ModelConfig.from_params(p, ds.grid).to_dict(), **model})
    rec = tmp_path / "results" / "test"
    (rec / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    for n in record.PHASES:
        checkpoint.save(rec / "checkpoints" / f"phase{n}.pt", {"phase": n, "model": CVAE(cfg).state_dict(),
                                                               "model_config": cfg.to_dict()})
    (rec / "params.yaml").write_text(yaml.safe_dump({"profile": "test", "provenance": {"data_fingerprint": "other"}}))
    (rec / "record.json").write_text(json.dumps({"profile": "test", "device_name": "NVIDIA H200", "git_commit": "abc",
                                                 "training_code": "0", "phases": {}}))
    return rec


def test_a_record_whose_model_does_not_fit_the_params_is_refused_before_anything_is_written(
        tmp_path, test_params, test_dataset, capsys):
    rec = make_record(tmp_path, test_params, test_dataset, latent_dim=test_params["model"]["latent_dim"] + 1)
    rd = tmp_path / "seeded"
    rc = cli_main(["run", str(TEST_PARAMS), "--checkpoint", str(rec), "--run-dir", str(rd)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "does not fit these params: model.latent_dim is" in err[0], err
    assert not rd.exists()
    grid = make_record(tmp_path / "g", test_params, test_dataset, n_moneyness=test_dataset.grid[1] + 2)
    with pytest.raises(record.RecordError, match="the grid is 7 in the record and 5 here"):
        record.check(grid, test_params, test_dataset.grid)


@pytest.mark.parametrize("args, message", [
    (["--from", "03"], "start at notebook 06 or later"),
    (["--only", "05"], "start at notebook 06 or later"),
])
def test_a_record_replaces_training_only(tmp_path, test_params, test_dataset, capsys, args, message):
    rec = make_record(tmp_path, test_params, test_dataset)
    assert cli_main(["run", str(TEST_PARAMS), "--checkpoint", str(rec), "--run-dir", str(tmp_path / "r"), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_not_a_record_and_an_incomplete_record_are_refused(tmp_path, test_params, test_dataset):
    with pytest.raises(record.RecordError, match="is not a record"):
        record.check(tmp_path, test_params, test_dataset.grid)
    rec = make_record(tmp_path, test_params, test_dataset)
    (rec / "checkpoints" / "phase2.pt").unlink()
    with pytest.raises(record.RecordError, match="phase2.pt is missing"):
        record.check(rec, test_params, test_dataset.grid)


def test_seeding_never_overwrites_another_training_unless_forced(tmp_path, test_params, test_dataset):
    rec = make_record(tmp_path, test_params, test_dataset)
    rd = tmp_path / "run"
    (rd / "checkpoints").mkdir(parents=True)
    own = rd / "checkpoints" / "phase4.pt"
    own.write_bytes(b"its own training")
    rundir.update_metrics(rd, status={"05_phase4_ar_h90": {"state": "ok"}, "06_gates": {"state": "ok"}})
    with pytest.raises(record.RecordError, match="already holds other phase checkpoints"):
        record.seed_run(rec, test_params, test_dataset, rd, log=lambda *a: None)
    assert own.read_bytes() == b"its own training" and not (rd / "checkpoints" / "phase1.pt").exists()
    notes = []
    assert record.seed_run(rec, test_params, test_dataset, rd, force=True, log=notes.append)
    assert own.read_bytes() == (rec / "checkpoints" / "phase4.pt").read_bytes()
    status = rundir.read_metrics(rd)["status"]
    assert status["05_phase4_ar_h90"]["state"] == "superseded" and status["06_gates"]["state"] == "ok"
    assert "trained on other data" in notes[0]                 # the fake record's data fingerprint is not the run's
    assert not record.seed_run(rec, test_params, test_dataset, rd, log=notes.append)    # the same again: no change


def test_keep_refuses_an_unfinished_run_and_a_folder_that_is_not_a_record(tmp_path):
    rd = tmp_path / "run"
    rundir.update_metrics(rd, status={"01_data_autocorrelation": {"state": "ok"}, "02_phase1_teacher_forcing":
                                      {"state": "failed"}})
    with pytest.raises(record.RecordError, match=r"has not finished training \(notebooks 02, 03, 04, 05 not ok\)"):
        record.keep(rd, tmp_path / "out")
    with pytest.raises(record.RecordError, match="not a run directory"):
        record.keep(tmp_path / "nothing", tmp_path / "out")


def test_keep_gives_one_line_for_a_missing_or_refused_checkpoint(tmp_path, capsys):
    rd = tmp_path / "run"
    rundir.update_metrics(rd, profile="test", status={n: {"state": "ok"} for n in pipeline.TRAINING_NOTEBOOKS})
    (rd / "record.json").write_text("{}")
    (rd / "params.yaml").write_text("profile: test\n")
    with pytest.raises(record.RecordError, match="phase1.pt is missing"):
        record.keep(rd, tmp_path / "out")
    (rd / "checkpoints").mkdir()
    for n in record.PHASES:
        torch.save({"phase": n, "model": object}, rd / "checkpoints" / f"phase{n}.pt")   # more than tensors
    assert cli_main(["record", str(rd), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused checkpoint" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_kept_record_backfills_as_the_run_it_came_from(finished_run, tmp_path, capsys, monkeypatch):
    rd = tmp_path / "full"
    shutil.copytree(finished_run, rd)
    with pytest.raises(record.RecordError, match="no record.json"):
        record.keep(rd, tmp_path / "results" / "test")
    bench.write_record(rd, "params/test.yaml", wall_seconds=12.0)
    mine = tmp_path / "results" / "mine"
    mine.mkdir(parents=True)
    with pytest.raises(record.RecordError, match="exists and is not a record"):
        record.keep(rd, mine)
    out = tmp_path / "results" / "test"
    assert cli_main(["record", str(rd), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.json", "params.yaml", "record.json"]
    ck = checkpoint.load(out / "checkpoints" / "phase4.pt")
    assert "optimizer" not in ck and set(ck) <= set(record.KEPT)
    assert (out / "checkpoints" / "phase4.pt").stat().st_size < 0.6 * (rd / "checkpoints" / "phase4.pt").stat().st_size
    assert json.loads((out / "record.json").read_text())["training_code"] == rundir.code_fingerprint(rundir.TRAINING_CODE)
    assert record.keep(rd, out) == out and not list(out.parent.glob(".*"))       # replaced whole, nothing left over

    seeded = tmp_path / "seeded"           # the finished run without its checkpoints: 09 alone runs from the record
    shutil.copytree(finished_run, seeded, ignore=shutil.ignore_patterns("checkpoints", "_build"))
    assert cli_main(["run", str(TEST_PARAMS), "--checkpoint", str(out), "--run-dir", str(seeded), "--from", "09"]) == 0
    assert "checkpoints of the record" in capsys.readouterr().out
    ran, orig = rundir.read_metrics(seeded), rundir.read_metrics(finished_run)
    assert ran["status"]["09_evaluation"]["state"] == "ok" and ran["run_state"] == "ok"
    nb = Path("notebooks") / "09_evaluation.ipynb"
    assert (seeded / nb).stat().st_mtime > (finished_run / nb).stat().st_mtime           # it ran again
    assert ran["rolling"] == orig["rolling"]                # the recorded weights: the same numbers
    judged = gates.training_gates(rundir.open_run(seeded / "params.yaml", seeded))      # notebook 06's judgement
    assert {g: r["decision"] for g, r in judged.items()} == {g: orig["gates"][g]["decision"] for g in judged}
    md = record.page(seeded)
    assert "# The full plan (results of record)" in md and "The training code is the record's" in md
    assert "| phase4 |" in md and "other data" not in md
    tocs = []
    monkeypatch.setattr(pipeline, "_build", lambda run_dir, toc, log, **kw: tocs.append(toc))
    pipeline.build_book(seeded)
    run_part = [pt["chapters"] for pt in tocs[0]["parts"] if pt["caption"] == "The run"][0]
    assert [c["file"] for c in run_part][:2] == ["book/record", "notebooks/01_data_autocorrelation"]
    assert (seeded / "book" / "record.md").read_text() == md
    rec = json.loads((seeded / "record.json").read_text())
    rec["training_code"] = "older"
    (seeded / "record.json").write_text(json.dumps(rec))
    assert "The training code has changed since this record was made" in record.page(seeded)
    assert record.page(finished_run) is None
