"""onnxprune sweep: one pruned model per budget (or eps_l2), the table (CSV, JSON) and the plot (PNG)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from builders import random_inputs, run, save_inputs
from onnxprune import SearchOptions, sweep
from onnxprune.cli import main
from onnxprune.cli.plot import write_plot
from onnxprune.search.sweep import TABLE_COLUMNS
from test_budget import chain

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The chain model, 16 calibration samples and 64 labelled samples (labels: the model's own answers)."""
    directory = tmp_path_factory.mktemp("sweep")
    model_path, calib_path = save_inputs(directory, chain(), n=16)
    x = random_inputs(chain(), 64, seed=1)
    np.savez(directory / "eval.npz", x=x, y=run(chain(), x).argmax(axis=1))
    return model_path, calib_path, directory / "eval.npz"


def test_sweep_over_budgets_writes_table_and_plot(files, tmp_path):
    model_path, calib_path, eval_path = files
    # 5 % is out of reach (even a tiny eps_l2 removes about 9 %): a row with its error, and the sweep goes on
    result = sweep(model_path, calib_path, eval=eval_path, budgets=[0.7, 0.5, 0.05],
                   search=SearchOptions(tolerance=0.03, search_samples=None, max_trials=4))
    assert result.top1_before == 1.0 and result.eval_samples == 64
    unreachable, reached = result.points[0], result.points[1:]
    assert [p.target for p in result.points] == [0.05, 0.5, 0.7]  # in increasing order
    for point in reached:
        assert point.error is None and abs(point.params_removed - point.target) <= 0.03
        assert 0 <= point.top1 <= 1 and point.layers[0][0] == "conv1"
    assert unreachable.error.startswith("budget 5.0% of the parameters removed") and unreachable.top1 is None
    paths = result.write(tmp_path) + [write_plot(result, tmp_path)]
    assert [p.name for p in paths] == ["sweep.csv", "sweep.json", "sweep.png"]
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [r["point"] for r in rows] == ["1", "2", "3"] and list(rows[0]) == list(TABLE_COLUMNS)
    assert float(rows[1]["top1"]) == reached[0].top1 and rows[0]["top1"] == "" and rows[0]["error"]
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["rows"] == json.loads(json.dumps(result.rows())) and len(data["layers"]) == 3
    assert data["layers"][0] == [] and data["layers"][1][1]["name"] == "conv2"
    assert [len(trials) for trials in data["trials"]] == [p.trials for p in result.points]
    assert data["trials"][2][-1]["params_removed"] == reached[1].params_removed  # the last trial is the model
    assert (tmp_path / "sweep.png").read_bytes().startswith(PNG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]


def test_cli_sweep_over_eps_values(files, tmp_path):
    model_path, calib_path, eval_path = files
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path),
                                       "--out", str(out), "--eps-l2", "0.1,3", "--show-point", "2", "--save-models",
                                       "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == ",".join(TABLE_COLUMNS)
    assert result.stdout.splitlines()[-1].startswith(f"written: {out / 'sweep.csv'}")
    assert sorted(p.name for p in out.iterdir()) == ["point-1.onnx", "point-2.onnx", "sweep.csv", "sweep.json",
                                                     "sweep.png"]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["eps_l2"]) for r in rows] == [0.1, 3.0] and float(rows[1]["params_removed"]) > float(
        rows[0]["params_removed"])


@pytest.mark.parametrize("args, message", [
    (["--budgets", "0.5,2"], "--budgets 0.5,2: expected comma-separated fractions between 0 and 1, e.g. 0.5,0.7,0.9"),
    (["--eps-l2", "x"], "--eps-l2 x: expected comma-separated values >= 0, e.g. 0.2,0.8,3"),
    (["--budgets", "0.5", "--eps-l2", "1"], "give either budgets or eps_l2 values to sweep over, not both"),
    (["--eps-l2", "1", "--max-trials", "2"], "search options apply to budgets, not to a sweep over eps_l2 values"),
    (["--eps-l2", "1", "--show-point", "3", "--no-plot"], None),
])
def test_cli_sweep_errors_are_one_line_and_write_nothing(files, tmp_path, args, message):
    model_path, calib_path, eval_path = files
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path),
                                       "--out", str(out), "--quiet", *args])
    if message is None:  # --show-point is only read by the plot
        assert result.exit_code == 0 and sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.json"]
        return
    assert result.exit_code == 1
    assert result.stderr.strip() == f"onnxprune: error: {message}"
    assert not out.exists() or not any(out.iterdir())


def test_show_point_must_be_a_reached_point(files, tmp_path):
    model_path, calib_path, eval_path = files
    result = CliRunner().invoke(main, ["sweep", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path),
                                       "--out", str(tmp_path), "--eps-l2", "1", "--show-point", "2", "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("onnxprune: error: --show-point 2: choose one of the points that were reached: 1")


def test_missing_matplotlib_fails_before_any_work(files, tmp_path, monkeypatch):
    model_path, calib_path, eval_path = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path),
                                       "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("onnxprune: error: the plot needs matplotlib: pip install 'onnxprune[plot]' "
                                     "(or leave the plot out with --no-plot)")
    assert not out.exists()


def test_help_names_both_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "IN.onnx OUT.onnx" in result.stdout and "onnxprune sweep" in result.stdout
    assert "--target-sparsity" in result.stdout and "--min-keep" in result.stdout
    done = subprocess.run([sys.executable, "-m", "onnxprune", "sweep", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--budgets" in done.stdout and "--show-point" in done.stdout
