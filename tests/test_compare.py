"""`python -m backfill compare`: one row per run with its params delta, gate decisions and headline scores.
Small hand-written run directories (metrics.json + params.yaml) in tmp_path, and the real runs/smoke if present."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from backfill import compare
from backfill.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "runs" / "smoke"


def _scores(rmse):
    return {"rmse": rmse, "ci_violation": 0.2, "coverage_p05": 0.05, "coverage_p50": 0.5, "coverage_p95": 0.95,
            "pinball_mean": 0.002, "interval_score": 0.04, "crps": 0.005, "windows": 3}


def _params(kl=1e-05, offset=90, **extra):
    return {"profile": "a", "description": "a run", "seed": 0,
            "model": {"kl_weight": kl, "prior": "standard", "rv_halflives": [5, 21]},
            "training": {"phase2_weights": {"1": 1.0, "7": 0.9}},
            "generation": {"offset_fast": offset, "horizon": 90}, **extra,
            "provenance": {"git_commit": "abc", "time": "now"}}


def _full_metrics(profile="a"):
    return {"profile": profile, "run_state": "ok",
            "gates": {"gate3": {"decision": "FAIL"}, "phase1": {"decision": "PASS"}, "gate1": {"decision": "PASS"},
                      "gate2": {"decision": "MARGINAL"}, "phase4": {"decision": "PASS"}},
            "phases": {"phase1": {"kernels": {"device": "cpu", "cpu_capability": "AVX2", "env": {}}},
                       "phase4": {"kernels": {"device": "cpu", "cpu_capability": "AVX512", "threads": 2,
                                              "env": {"MKL_CBWR": "AVX2"}}}},
            "rolling": {"vae_o90": _scores(0.01), "vae_o90_cal": {**_scores(0.011), "crps": None},
                        "econometric": _scores(0.024), "random_walk": _scores(0.027)},
            "dm_tests": {"rolling_by_day": {"vae_o90 vs econometric": {"dm": -13.7, "p_value": 2.6e-41},
                                            "vae_o90 vs random_walk": {"dm": -5.5, "p_value": 4e-8}}}}


def _run(root, name, metrics, params=None):
    d = root / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(metrics))
    if params is not None:
        (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return d


@pytest.fixture
def runs(tmp_path):
    a = _run(tmp_path, "a", _full_metrics("a"), _params())
    p_b = _params(kl=1.0, offset=45)
    p_b["profile"], p_b["description"] = "b", "another"
    p_b["training"]["phase2_weights"]["7"] = 0.5
    p_b["provenance"]["git_commit"] = "def"
    m_b = _full_metrics("b")
    m_b["rolling"]["vae_o45"] = _scores(0.02)                      # b's method is vae_o45: no _cal row, no DM
    m_b["phases"] = {"phase4": {"kernels": {"device": "cuda", "gpu": "NVIDIA H100", "cuda": "12.8"}},
                     "phase3": {"kernels": None}}                     # a checkpoint from before kernels were recorded
    # c stopped after phase 1: no rolling, no dm_tests, one gate, a new key in its params
    c = _run(tmp_path, "c", {"profile": "c", "run_state": "failed", "gates": {"phase1": {"decision": "FAIL"}}},
             _params(extra_key=[1, 2]))
    return [a, _run(tmp_path, "b", m_b, p_b), c]


def test_table_rows_delta_gates_and_scores(runs):
    df = compare.table(runs)
    assert list(df["run"]) == [str(r) for r in runs] and list(df["profile"]) == ["a", "b", "c"]
    assert list(df["state"]) == ["ok", "ok", "failed"]
    assert list(df.columns[4:9]) == ["phase1", "gate1", "gate2", "phase4", "gate3"]   # the notebooks' order
    a, b, c = (df.iloc[i] for i in range(3))
    assert a["params delta"] == "reference"
    # dotted keys, values as YAML shows them; provenance, profile and description left out
    assert b["params delta"] == ("model.kl_weight: 1e-05 -> 1.0; training.phase2_weights.7: 0.9 -> 0.5; "
                                 "generation.offset_fast: 90 -> 45")
    assert c["params delta"] == "extra_key: - -> [1, 2]"
    assert (a["gate2"], a["gate3"], c["phase1"], c["gate1"]) == ("MARGINAL", "FAIL", "FAIL", "-")
    assert (a["method"], b["method"]) == ("vae_o90", "vae_o45")
    # the last phase's kernel path: runs trained on different ones differ as reseeding does
    assert (a["trained on"], b["trained on"], c["trained on"]) == ("cpu AVX512 2 threads MKL_CBWR=AVX2",
                                                                    "cuda NVIDIA H100", "-")
    # the thread count is part of a CPU path (smoke's weights differ between 1 and 2 threads); older records lack it
    assert compare.kernel_label({"device": "cpu", "cpu_capability": "AVX2", "threads": 1, "env": {}}) == "cpu AVX2 1 thread"
    assert compare.kernel_label({"device": "cpu", "cpu_capability": "AVX2", "env": {}}) == "cpu AVX2"
    assert a["rmse"] == 0.01 and a["cal rmse"] == 0.011 and math.isnan(a["cal crps"])
    assert a["econometric rmse"] == 0.024 and a["random_walk rmse"] == 0.027
    assert a["dm vs econometric"] == -13.7 and a["dm p"] == 2.6e-41
    assert b["rmse"] == 0.02 and math.isnan(b["cal rmse"]) and math.isnan(b["dm p"])
    for col in compare.SCORES + ["econometric rmse", "dm vs econometric", "dm p"]:
        assert math.isnan(c[col])


def test_formatted_prints_missing_as_dash_and_p_values_by_fmt_p(runs):
    t = compare.formatted(compare.table(runs))
    assert t.loc[0, "dm p"] == "< 1e-12" and t.loc[0, "dm vs econometric"] == "-13.7"
    assert t.loc[0, "rmse"] == "0.01" and t.loc[0, "cal crps"] == "-"
    assert t.loc[2, "rmse"] == "-" and t.loc[2, "dm p"] == "-" and t.loc[2, "gate3"] == "-"
    assert (t.map(type) == str).all().all()


def test_same_params_and_missing_params(tmp_path):
    a = _run(tmp_path, "a", _full_metrics(), _params())
    same = _run(tmp_path, "same", _full_metrics(), {**_params(), "provenance": {"git_commit": "other"}})
    bare = _run(tmp_path, "bare", {"profile": "x"})                  # no params.yaml: no method, no delta
    df = compare.table([a, same, bare])
    assert list(df["params delta"]) == ["reference", "same", "-"]
    assert df.loc[2, "method"] == "-" and df.loc[2, "phase1"] == "-" and math.isnan(df.loc[2, "rmse"])
    assert list(compare.table([bare, a])["params delta"]) == ["-", "-"]   # no reference params


def test_run_without_metrics_is_a_one_line_error(tmp_path, runs, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(compare.CompareError, match="empty has no metrics.json"):
        compare.table([runs[0], empty])
    assert cli_main(["compare", str(runs[0]), str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backfill: ") and "empty has no metrics.json" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_writes_markdown_and_html(tmp_path, runs, capsys):
    out = tmp_path / "cmp"
    assert cli_main(["compare", *map(str, runs), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "compare.md"), str(out / "compare.html")]
    md = (out / "compare.md").read_text().splitlines()
    assert len(md) == 2 + len(runs) and md[0].startswith("| run | profile | state | params delta |")
    assert "| reference |" in md[2] and "model.kl_weight: 1e-05 -> 1.0" in md[3] and "< 1e-12" in md[2]
    assert all(line.count("|") == md[0].count("|") for line in md)   # no stray pipes from the cells
    html = (out / "compare.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<tr") == 1 + len(runs)
    assert "1e-05 -&gt; 1.0" in html and "< 1e-12" not in html and "&lt; 1e-12" in html


@pytest.mark.slow
def test_a_run_with_a_notebook_run_by_hand_since_is_not_ok(tmp_path, monkeypatch):
    """A notebook opened by hand rewrites the run's params.yaml without its --set overrides and writes its sections
    by hand: `book` refuses such a run, and compare must not call it ok (its params delta would be the hand run's)."""
    from backfill import pipeline, rundir
    monkeypatch.setenv("BACKFILL_BATCH", "1")                   # pipeline.run sets it for its kernels
    for k in ("BACKFILL_NOTEBOOK", "BACKFILL_NOTEBOOK_KEY"):
        monkeypatch.delenv(k, raising=False)
    rd = tmp_path / "run"
    test = ROOT / "params" / "test.yaml"
    assert pipeline.run(test, only="01", run_dir=rd, overrides=["model.kl_weight=0.5"], log=lambda s: None) == 0
    assert list(compare.table([rd])["state"]) == ["partial"]      # the other notebooks never ran: not stale
    run = rundir.open_run(test, rd)                                # notebook 01 opened in JupyterLab
    assert yaml.safe_load((rd / "params.yaml").read_text())["provenance"]["overrides"] == []
    assert list(compare.table([rd])["state"]) == ["stale"]
    run.update_metrics(by_hand_section={"days": 1})               # ... and run: a section written by hand
    assert list(compare.table([rd])["state"]) == ["stale"]
    assert "by_hand_section" in pipeline.stale_parts(rd, rundir.read_metrics(rd))


def _compare_a_finished_run_with_itself(run, tmp_path):
    m = json.loads((run / "metrics.json").read_text())
    p = yaml.safe_load((run / "params.yaml").read_text())
    method = f"vae_o{p['generation']['offset_fast']}"
    df = compare.table([run, run])
    row = df.iloc[1]
    assert row["profile"] == m["profile"] and row["params delta"] == "same" and row["method"] == method
    for g, res in m.get("gates", {}).items():
        assert row[g] == res["decision"]
    if method in m.get("rolling", {}):
        assert row["rmse"] == pytest.approx(m["rolling"][method]["rmse"])
        dm = m["dm_tests"]["rolling_by_day"][f"{method} vs econometric"]
        assert row["dm vs econometric"] == pytest.approx(dm["dm"]) and row["dm p"] == pytest.approx(dm["p_value"])
    md, html = compare.write(df, tmp_path)
    assert md.read_text().count("\n") == 4 and html.exists()
    assert np.isfinite(df["rmse"]).all() or "rolling" not in m


@pytest.mark.slow
def test_a_finished_run(finished_run, tmp_path):
    _compare_a_finished_run_with_itself(finished_run, tmp_path)


@pytest.mark.skipif(not (SMOKE / "metrics.json").exists(), reason="no finished runs/smoke")
def test_the_real_smoke_run(tmp_path):
    _compare_a_finished_run_with_itself(SMOKE, tmp_path)
