"""report: the static (matplotlib / seaborn) figures for print (they return Figures with the expected artists and
touch no global pyplot state), the headline window, notebook 01's market table and what a phase publishes."""
import io

import numpy as np
import pytest
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.figure import Figure

from backfill import report

MAT = [1 / 12, 0.25, 0.5, 1.0, 2.0]
MON = [0.7, 0.85, 1.0, 1.15, 1.3, 1.45]


def test_rmse_heatmap_static_annotates_every_cell():
    v = np.linspace(0.01, 0.05, len(MAT) * len(MON)).reshape(len(MAT), len(MON))     # (n_mat, n_mon)
    fig = report.rmse_heatmap_static(v, MAT, MON, "RMSE by grid point")
    assert isinstance(fig, Figure)
    ax, cbar = fig.axes                                     # the heatmap and its colour bar
    assert sum(isinstance(c, QuadMesh) for c in ax.collections) == 1
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == v.size and cells[0] == "0.0100" and cells[-1] == "0.0500"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.70", "0.85", "1.00", "1.15", "1.30", "1.45"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1m", "3m", "6m", "1y", "2y"]
    assert ax.get_xlabel() == "moneyness K/S" and ax.get_ylabel() == "maturity"
    assert ax.get_title() == "RMSE by grid point" and cbar.get_ylabel() == "RMSE (implied vol)"
    fig.savefig(io.BytesIO(), format="png")                 # renders headless, without pyplot


def test_rmse_heatmap_static_rejects_a_shape_that_is_not_the_grid():
    with pytest.raises(ValueError, match=r"shape \(5, 5\), the grid is 5x6"):
        report.rmse_heatmap_static(np.ones((5, 5)), MAT, MON, "x")


def _bands(days, level):
    mid = level + 0.01 * np.sin(np.arange(days) / 5)
    return mid - 0.03, mid, mid + 0.03


def test_fan_chart_static_draws_truth_medians_and_bands():
    days = 40
    dates = np.datetime_as_string(np.arange("2008-01-01", days, dtype="datetime64[D]"))     # ISO strings
    series = {"model": _bands(days, 0.2), "persistence": _bands(days, 0.22), "AR(1)": _bands(days, 0.21)}
    fig = report.fan_chart_static(series, np.full(days, 0.21), dates, "ATM 1-month")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.lines) == 1 + len(series)                 # the truth and one median per method
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(series)      # the 5-95% bands
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "truth" in labels and "AR(1) median" in labels and "persistence 5-95%" in labels and len(labels) == 7
    assert ax.get_xlabel() == "date" and ax.get_ylabel() == "implied vol" and ax.get_title() == "ATM 1-month"
    fig.savefig(io.BytesIO(), format="png")


def test_fan_chart_static_on_day_numbers_with_a_shorter_truth():
    fig = report.fan_chart_static({"model": _bands(30, 0.2)}, np.full(20, 0.2), np.arange(30), "day index")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.lines[-1].get_xdata()) == 20 and ax.get_xlabel() == "trading day"
    fig = report.fan_chart_static({"model": _bands(30, 0.2)}, None, np.arange(30), "no truth")
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="'model' has 29/30/30 days for 30 dates"):
        report.fan_chart_static({"model": (np.ones(29), np.ones(30), np.ones(30))}, None, np.arange(30), "x")


def test_static_figures_leave_pyplot_alone():
    import matplotlib.pyplot as plt
    plt.close("all")
    report.rmse_heatmap_static(np.ones((5, 6)), MAT, MON, "x")
    report.fan_chart_static({"m": _bands(10, 0.2)}, None, np.arange(10), "x")
    assert plt.get_fignums() == []


def test_every_figure_is_shown_with_its_caption(monkeypatch, tmp_path):
    import IPython.display
    import plotly.graph_objects as go
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a[0]))
    report.show(go.Figure(), "RMSE by day: how error grows.")
    assert shown[-1].data == "**Figure.** RMSE by day: how error grows."
    report.show_static(report.rmse_heatmap_static(np.ones((5, 6)), MAT, MON, "x", vmax=2.0), "One scale.",
                       tmp_path / "f.png")
    assert shown[-1].data == "**Figure.** One scale." and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError):
        report.show(go.Figure())                                  # a caption is not optional
    with pytest.raises(ValueError, match="needs a caption"):
        report.show(go.Figure(), "  ")


def test_headline_window_is_the_hardest_named_test_year():
    rv = np.r_[np.full(100, 0.1), np.full(100, 0.3), np.full(200, 0.15)]
    starts = {"crisis": 100, "calm": 250, "hot": 120, "rolling_130": 130}
    # 'crisis' and 'hot' start before the test split (from 110): only 'calm' is out of sample
    assert report.headline_window(starts, (110, 400), rv, 50) == "hot"
    assert report.headline_window(starts, (200, 400), rv, 50) == "calm"
    with pytest.raises(ValueError, match="test split"):
        report.headline_window({"rolling_300": 300}, (200, 400), rv, 50)


def test_notebook_01_table_and_term_spread(test_dataset):
    # what notebook 01 shows: embedded_data.market_comparison as a table, and the 1m-minus-1y spread with stressed
    # days marked
    from backfill.data import Dataset
    from backfill.embedded_data import MARKET_STATS
    ds = test_dataset
    table, cmp = report.market_table(ds)
    assert list(table["inside the band"]) == ["pass"] * len(MARKET_STATS)
    assert list(table["this data"]) == [cmp[k]["data"] for k in MARKET_STATS]
    np.testing.assert_array_equal(report.term_spread(ds), ds.surface[:, 0, 2] - ds.surface[:, 3, 2])
    fig = report.term_spread_figure(ds, np.arange(ds.n_days) % 100 == 0)
    assert len(fig.data) == 2
    no_dates = Dataset(ds.surface, ds.ret, None, ds.maturities, ds.moneyness)
    assert report.market_table(no_dates) == (None, None)


@pytest.mark.slow
def test_publish_phase_records_the_phase_and_its_criteria(test_params, test_dataset, tmp_path):
    import copy
    from backfill import data, gates, rundir, train
    p = copy.deepcopy(test_params)
    p["training"].update(phase1_epochs=3, phase2_epochs=4, phase3_epochs=5, phase4_epochs=6, max_train_windows=16,
                         max_val_windows=16)
    run = rundir.Run(p, test_dataset, tmp_path / "publish", data.splits(test_dataset, p))
    s = train.train_phase(run, 1, progress=False)
    result = gates.judge_checks(gates.phase_checks(1, s, run.params), run.params)
    report.publish_phase(run, 1, s, result)
    rec = run.metrics()["phases"]["phase1"]
    assert rec["criteria"]["decision"] == result["decision"] and rec["val_kl"] == s["val_eval"]["kl"]
    assert rec["val_rmse_by_horizon"] == {"1": s["val_eval"]["rmse_by_horizon"][1]}
