"""The command line: success on the bundled quick-start files, output and progress streams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from builders import INPUT, OUTPUT, run, save_inputs
from onnxprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK_MODEL = ROOT / "models" / "lenet5_mnist.onnx"
QUICK_CALIB = ROOT / "models" / "mnist_calib.npy"
REPORT_KEYS = {"params_before", "params_after", "macs_before", "macs_after", "seconds", "layers"}


def _invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def _check_written_model(path: Path, calib: np.ndarray) -> None:
    assert path.is_file()
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [INPUT]
    assert [o.name for o in model.graph.output] == [OUTPUT]
    out = run(model, calib)
    assert out.shape == (len(calib), 10) and np.all(np.isfinite(out))


# --- success -------------------------------------------------------------------------------


def test_quickstart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(QUICK_MODEL, "lenet5_pruned.onnx", "--calib", QUICK_CALIB, "--samples", 128,
                     "--report", "r.json")
    assert result.exit_code == 0, result.stderr
    _check_written_model(tmp_path / "lenet5_pruned.onnx", np.load(QUICK_CALIB)[:8])
    report = json.loads((tmp_path / "r.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["params_before"] == 431_080
    assert [layer["name"] for layer in report["layers"]] == ["/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"]
    for layer in report["layers"]:
        assert {"name", "op_type", "channels_before", "channels_after"} <= set(layer)
    assert "parameters:" in result.stdout
    assert "written: lenet5_pruned.onnx, report: r.json" in result.stdout
    assert "[4/4] /fc2/Gemm" in result.stderr  # progress goes to stderr, not stdout
    assert "[1/4]" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5_pruned.onnx", "r.json"]  # no temp files left


def test_quiet_prints_one_line(tmp_path):
    model_path, calib_path = save_inputs(tmp_path)
    out = tmp_path / "small.onnx"
    result = _invoke(model_path, out, "--calib", calib_path, "--quiet", "--eps-l2", 1)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{out}: parameters ")
    _check_written_model(out, np.load(calib_path)[:4])


def test_python_m_help():
    proc = subprocess.run([sys.executable, "-m", "onnxprune", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: onnxprune" in proc.stdout and "--calib" in proc.stdout
    assert proc.stderr == ""


# --- errors (unusable inputs and output paths, interrupts, --force: see test_hostile.py) ---------


def test_readme_main_command_end_to_end(tmp_path):
    """The README's quick-start command, as a user runs it: all 512 bundled samples, default settings."""
    out = tmp_path / "lenet5_pruned.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(QUICK_MODEL), str(out), "--calib", str(QUICK_CALIB),
                           "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    _check_written_model(out, np.load(QUICK_CALIB)[:8])
    report = json.loads((tmp_path / "r.json").read_text())
    assert REPORT_KEYS <= set(report)
    # The defaults must actually prune the quick-start model substantially.
    assert report["params_after"] < 0.5 * report["params_before"]
    assert "parameters:" in proc.stdout and "[2/4]" in proc.stderr


def test_unexpected_failure_is_one_line_without_traceback(tmp_path, monkeypatch):
    """A bug inside prune() must still reach the user as one line, exit 1 and no file."""
    import onnxprune.api

    def broken(*args, **kwargs):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(onnxprune.api, "prune", broken)
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    out = tmp_path / "out.onnx"
    result = _invoke(QUICK_MODEL, out, "--calib", QUICK_CALIB, "--eps-l2", 0.8)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: internal error: ValueError: boom")
    assert "Traceback" not in result.stderr and not out.exists()


def test_help_defaults_are_the_library_defaults():
    """--help shows some defaults from a table (their owners are too heavy to import for --help):
    each must be the value the library applies when the option is not given."""
    from onnxprune.calib.images import Preprocessing
    from onnxprune.cli.options import SHOWN_DEFAULTS
    from onnxprune.measure.evaluate import BENCH_BATCHES
    from onnxprune.search.budget import SearchOptions
    from onnxprune.search.sweep import DEFAULT_BUDGETS

    search, images = SearchOptions(), Preprocessing()
    from onnxprune.search.budget import DEFAULT_TOLERANCE

    assert search.tolerance is None  # the metric's own default
    counts, latency = SHOWN_DEFAULTS["tolerance"].split("; ")
    assert float(counts) / 100 == DEFAULT_TOLERANCE["params"] == DEFAULT_TOLERANCE["macs"]
    assert latency == f"{100 * DEFAULT_TOLERANCE['latency']:g} with --target-speedup"
    assert int(SHOWN_DEFAULTS["max_trials"]) == search.max_trials
    assert search.search_samples is None and SHOWN_DEFAULTS["search_samples"].startswith("0:")
    assert int(SHOWN_DEFAULTS["bench_batch"]) == BENCH_BATCHES[-1]
    assert [SHOWN_DEFAULTS[name] for name in ("scale", "layout")] == [images.scale, images.layout]
    assert [(float(SHOWN_DEFAULTS[name]),) for name in ("mean", "std")] == [images.mean, images.std]  # per channel
    assert tuple(float(b) for b in SHOWN_DEFAULTS["budgets"].split(",")) == DEFAULT_BUDGETS
    from onnxprune.search.budget import Budget

    assert search.allocation is None  # each metric's own
    allocated = [m for m in ("params", "macs", "latency") if Budget(m, 0.5).allocated]
    assert allocated == ["macs", "latency"]
    assert SHOWN_DEFAULTS["allocation"] == "ladder with --target-macs and --target-speedup, else price"


def test_prune_and_sweep_share_their_options():
    """The shared options are defined once: sweep has every one of them, with prune's defaults."""
    from onnxprune.cli.options import SHARED
    from onnxprune.cli.prune_command import prune_command
    from onnxprune.cli.sweep_command import sweep_command

    prune_options = {p.name: p for p in prune_command.params}
    sweep_options = {p.name: p for p in sweep_command.params}
    shared = [name for name in prune_options if name in sweep_options and name not in ("in_path", "eval_path")]
    assert len(shared) == len(SHARED)
    for name in shared:
        assert sweep_options[name].default == prune_options[name].default, name
        assert sweep_options[name].help == prune_options[name].help, name
