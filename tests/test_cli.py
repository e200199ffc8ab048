"""The command line: success on the bundled quick-start files, and one clean error line per bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from builders import INPUT, OUTPUT, lenet_like, random_inputs, run
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
    model_path, calib_path = _tiny_inputs(tmp_path)
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


# --- errors --------------------------------------------------------------------------------


def _tiny_inputs(tmp_path: Path) -> tuple[Path, Path]:
    model = lenet_like()
    model_path, calib_path = tmp_path / "in" / "m.onnx", tmp_path / "in" / "calib.npy"
    model_path.parent.mkdir()
    onnx.save(model, model_path)
    np.save(calib_path, random_inputs(model, 16, seed=1))
    return model_path, calib_path


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def _bad_not_onnx(tmp, model, calib, out):
    bad = tmp / "in" / "x.onnx"
    bad.write_text("this is a text file, not a model\n")
    return [bad, out, "--calib", calib], "x.onnx"


def _bad_missing_model(tmp, model, calib, out):
    return [tmp / "in" / "missing.onnx", out, "--calib", calib], "no such model file"


def _bad_calib(array: np.ndarray, expected: str):
    def make(tmp, model, calib, out):
        path = tmp / "in" / "bad.npy"
        np.save(path, array)
        return [model, out, "--calib", path], expected
    return make


def _nan_calib() -> np.ndarray:
    x = random_inputs(lenet_like(), 4)
    x[1, 0, 2, 3] = np.nan
    return x


def _bad_empty_calib_dir(tmp, model, calib, out):
    (tmp / "in" / "calib_dir").mkdir()
    return [model, out, "--calib", tmp / "in" / "calib_dir"], "is empty"


def _bad_missing_out_dir(tmp, model, calib, out):
    return [model, tmp / "out" / "nope" / "m.onnx", "--calib", calib], "does not exist"


def _bad_out_is_in(tmp, model, calib, out):
    return [model, model, "--calib", calib], "is the input model"


def _bad_out_is_in_other_spelling(tmp, model, calib, out):
    return [model, tmp / "out" / ".." / "in" / "m.onnx", "--calib", calib], "is the input model"


def _bad_out_is_dir(tmp, model, calib, out):
    (tmp / "out" / "d.onnx").mkdir()
    return [model, tmp / "out" / "d.onnx", "--calib", calib], "is a directory"


def _bad_report_dir(tmp, model, calib, out):
    return [model, out, "--calib", calib, "--report", tmp / "out" / "nope" / "r.json"], "does not exist"


def _bad_report_is_in(tmp, model, calib, out):
    return [model, out, "--calib", calib, "--report", model], ""  # any one-line error will do


def _bad_report_is_out(tmp, model, calib, out):
    return [model, out, "--calib", calib, "--report", out], ""


_REPORT_CLASH = ("the CLI compares only OUT with IN: --report equal to {} is accepted, exit 0, and the JSON "
                 "report is written over {}")


BAD_INPUTS = {
    "not-onnx": _bad_not_onnx,
    "missing-model": _bad_missing_model,
    "calib-wrong-shape": _bad_calib(np.zeros((4, 1, 10, 10), np.float32), "expected shape (N, 1, 12, 12)"),
    "calib-uint8": _bad_calib(np.zeros((4, 1, 12, 12), np.uint8), "expected float32, got uint8"),
    "calib-nan": _bad_calib(_nan_calib(), "1 NaN"),
    "calib-empty-dir": _bad_empty_calib_dir,
    "out-dir-missing": _bad_missing_out_dir,
    "out-is-in": _bad_out_is_in,
    "out-is-in-other-spelling": _bad_out_is_in_other_spelling,
    "out-is-dir": _bad_out_is_dir,
    "report-dir-missing": _bad_report_dir,
    "report-is-in": _bad_report_is_in,
    "report-is-out": _bad_report_is_out,
}


@pytest.mark.parametrize("make", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_one_error_line(tmp_path, make):
    model, calib = _tiny_inputs(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "unrelated.txt").write_text("leave me alone")
    out = tmp_path / "out" / "m_small.onnx"
    args, expected = make(tmp_path, model, calib, out)
    before = _snapshot(tmp_path)

    result = _invoke(*args)

    assert isinstance(result.exception, SystemExit), result.exc_info  # not an uncaught exception
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxprune: error:") and expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert not out.exists()
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed, no temp files


def test_bad_input_real_process(tmp_path):
    """The same contract with the real process streams (warnings and native logs included)."""
    model, _ = _tiny_inputs(tmp_path)
    bad = tmp_path / "in" / "u8.npy"
    np.save(bad, np.zeros((4, 1, 12, 12), np.uint8))
    out = tmp_path / "m_small.onnx"
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(model), str(out), "--calib", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:"), proc.stderr
    assert not out.exists()


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
    result = _invoke(QUICK_MODEL, out, "--calib", QUICK_CALIB)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: internal error: ValueError: boom")
    assert "Traceback" not in result.stderr and not out.exists()
