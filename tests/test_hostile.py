"""Hostile inputs, through the real command line: the catalogue of issue 6.

The contract for every entry: exit status 1 (130 when interrupted), exactly one line on stderr,
``onnxprune: error: ...`` naming the problem, no traceback, nothing on stdout, and no file
written or changed: neither the output, nor a temporary file beside it, nor an output file that
was already there. Calibration-format details (npz keys, per-file counts, pickles, ...) are
tested at the loader in test_calib_data.py; here each kind of problem reaches the user once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from builders import lenet_like, random_inputs, save_inputs
from onnxprune.cli import main
from topologies import resnet50_like

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = b"an earlier model the user wants to keep"


@dataclass
class Case:
    tmp: Path
    model: Path  # a good model, in tmp/in
    calib: Path  # good calibration data for it
    out: Path  # tmp/out/m_small.onnx, in an existing, writable directory
    monkeypatch: pytest.MonkeyPatch

    def npy(self, array: np.ndarray) -> Path:
        path = self.tmp / "in" / "bad.npy"
        np.save(path, array)
        return path

    def args(self, model: Path | None = None, out: Path | None = None, calib: Path | None = None) -> list:
        return [model or self.model, out or self.out, "--calib", calib or self.calib]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def _assert_refused(result, expected: str, exit_code: int = 1, prefix: str = "onnxprune: error:") -> None:
    assert isinstance(result.exception, SystemExit), result.exc_info  # not an uncaught exception
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix) and expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


# --- the model ---------------------------------------------------------------------------------

def _not_onnx(c: Case):
    bad = c.tmp / "in" / "x.onnx"
    bad.write_text("this is a text file, not a model\n")
    return c.args(model=bad), "x.onnx: not a readable ONNX model"


def _truncated_model(c: Case):
    bad = c.tmp / "in" / "cut.onnx"
    data = c.model.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return c.args(model=bad), "cut.onnx: not a readable ONNX model"


def _missing_model(c: Case):
    return c.args(model=c.tmp / "in" / "missing.onnx"), "missing.onnx: no such model file"


def _no_conv_or_gemm(c: Case):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 12, 12])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, 12, 12])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "relu", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = c.tmp / "in" / "relu.onnx"
    onnx.save(model, path)
    return c.args(model=path), "no Conv, Gemm or MatMul layer"


def _external(c: Case) -> tuple[Path, Path]:
    path = c.tmp / "in" / "ext.onnx"
    onnx.save(lenet_like(), path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    return path, c.tmp / "in" / "ext.onnx.data"


def _external_data_missing(c: Case):
    model, data = _external(c)
    data.unlink()
    return c.args(model=model), "external data file 'ext.onnx.data' is missing"


def _external_data_truncated(c: Case):
    model, data = _external(c)
    data.write_bytes(data.read_bytes()[:100])
    return c.args(model=model), "cannot read external data of tensor"


def _external_data_outside(c: Case):
    model, data = _external(c)
    data.rename(c.tmp / "ext.onnx.data")
    light = onnx.load(str(model), load_external_data=False)
    for tensor in light.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../ext.onnx.data"
    onnx.save(light, model)
    return c.args(model=model), "points outside the directory"


# --- the calibration data ----------------------------------------------------------------------

def _calib_nan() -> np.ndarray:
    x = random_inputs(lenet_like(), 4)
    x[1, 0, 2, 3] = np.nan
    return x


def _calib_inf() -> np.ndarray:
    x = random_inputs(lenet_like(), 4)
    x[0, 0, 0, 0] = np.inf
    return x


def _calib(array: Callable[[], np.ndarray], expected: str):
    return lambda c: (c.args(calib=c.npy(array())), expected)


def _calib_wrong_input_names(c: Case):
    path = c.tmp / "in" / "named.npz"
    x = random_inputs(lenet_like(), 4)
    np.savez(path, image=x, label=np.zeros(4, np.float32))
    return c.args(calib=path), "missing input 'input' (has 'image', 'label')"


def _calib_empty_dir(c: Case):
    (c.tmp / "in" / "calib_dir").mkdir()
    return c.args(calib=c.tmp / "in" / "calib_dir"), "is empty"


def _calib_missing(c: Case):
    return c.args(calib=c.tmp / "in" / "nope.npy"), "'" + str(c.tmp / "in" / "nope.npy") + "' does not exist"


# --- the output ----------------------------------------------------------------------------------

def _out_is_in(c: Case):
    return c.args(out=c.model), "is the input model; write the pruned model to another path (or pass --force"


def _out_is_in_other_spelling(c: Case):
    return c.args(out=c.tmp / "out" / ".." / "in" / "m.onnx"), "is the input model"


def _out_dir_missing(c: Case):
    return c.args(out=c.tmp / "out" / "nope" / "m.onnx"), "output directory " + str(c.tmp / "out" / "nope")


def _out_dir_unwritable(c: Case):
    directory = c.tmp / "out" / "locked"
    directory.mkdir()
    directory.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: have the permission check see what a user would
        real = os.access
        c.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == directory else real(p, mode, **kw))
    return c.args(out=directory / "m.onnx"), "is not writable"


def _out_is_dir(c: Case):
    (c.tmp / "out" / "d.onnx").mkdir()
    return c.args(out=c.tmp / "out" / "d.onnx"), "d.onnx: is a directory"


def _external_data_out_is_dir(c: Case):
    (c.tmp / "out" / "m_small.onnx.data").mkdir()
    return c.args() + ["--external-data"], "m_small.onnx.data: is a directory"


def _report_dir_missing(c: Case):
    return c.args() + ["--report", c.tmp / "out" / "nope" / "r.json"], "does not exist"


def _report_is_in(c: Case):
    return c.args() + ["--report", c.model], "the report would overwrite IN.onnx"


def _report_is_out(c: Case):
    return c.args() + ["--report", c.out], "the report would overwrite OUT.onnx"


CATALOGUE = {
    "not-onnx": _not_onnx,
    "truncated-model": _truncated_model,
    "missing-model": _missing_model,
    "no-conv-or-gemm": _no_conv_or_gemm,
    "external-data-missing": _external_data_missing,
    "external-data-truncated": _external_data_truncated,
    "external-data-outside-model-dir": _external_data_outside,
    "calib-wrong-shape": _calib(lambda: np.zeros((4, 1, 10, 10), np.float32), "expected shape (N, 1, 12, 12)"),
    "calib-wrong-dtype": _calib(lambda: np.zeros((4, 1, 12, 12), np.uint8), "expected float32, got uint8"),
    "calib-wrong-input-names": _calib_wrong_input_names,
    "calib-nan": _calib(_calib_nan, "contains 1 NaN and 0 Inf"),
    "calib-inf": _calib(_calib_inf, "contains 0 NaN and 1 Inf"),
    "calib-empty-dir": _calib_empty_dir,
    "calib-zero-samples": _calib(lambda: np.zeros((0, 1, 12, 12), np.float32), "zero samples"),
    "calib-missing": _calib_missing,
    "out-is-in": _out_is_in,
    "out-is-in-other-spelling": _out_is_in_other_spelling,
    "out-dir-missing": _out_dir_missing,
    "out-dir-unwritable": _out_dir_unwritable,
    "out-is-dir": _out_is_dir,
    "external-data-out-is-dir": _external_data_out_is_dir,
    "report-dir-missing": _report_dir_missing,
    "report-is-in": _report_is_in,
    "report-is-out": _report_is_out,
}


@pytest.mark.parametrize("previous", [None, PREVIOUS], ids=["no-previous-output", "previous-output"])
@pytest.mark.parametrize("make", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_refused(tmp_path, monkeypatch, make, previous):
    model, calib = save_inputs(tmp_path)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "m_small.onnx"
    if previous is not None:
        out.write_bytes(previous)
    args, expected = make(Case(tmp_path, model, calib, out, monkeypatch))
    before = _snapshot(tmp_path)

    result = _invoke(*args)

    _assert_refused(result, expected)
    assert out.exists() == (previous is not None)
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed, no temporary files


def test_refused_real_process(tmp_path):
    """The same contract with the real process streams (warnings and native logs included)."""
    model, _ = save_inputs(tmp_path)
    bad = tmp_path / "in" / "u8.npy"
    np.save(bad, np.zeros((4, 1, 12, 12), np.uint8))
    out = tmp_path / "m_small.onnx"
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(model), str(out), "--calib", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:"), proc.stderr
    assert not out.exists()


# --- failures after pruning succeeded ----------------------------------------------------------

@pytest.mark.parametrize("external_data", [False, True], ids=["one-file", "external-data"])
def test_write_failure_keeps_previous_output(tmp_path, monkeypatch, external_data):
    """The disk filling up while the model is written: one line, the earlier file intact, no debris."""
    model, calib = save_inputs(tmp_path, n=8)
    out = tmp_path / "m_small.onnx"
    out.write_bytes(PREVIOUS)
    from onnxprune.graph import io

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    before = _snapshot(tmp_path)
    result = _invoke(model, out, "--calib", calib, "--quiet", *(["--external-data"] if external_data else []))
    monkeypatch.undo()
    _assert_refused(result, "cannot write (No space left on device)")
    assert _snapshot(tmp_path) == before


def test_interrupted_write_keeps_previous_output(tmp_path, monkeypatch):
    """Ctrl-C at the last moment, as the file is renamed into place."""
    model, calib = save_inputs(tmp_path, n=8)
    out = tmp_path / "m_small.onnx"
    out.write_bytes(PREVIOUS)
    from onnxprune.graph import io

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", interrupted)
    before = _snapshot(tmp_path)
    result = _invoke(model, out, "--calib", calib, "--quiet")
    monkeypatch.undo()
    _assert_refused(result, "interrupted; nothing was written", exit_code=130, prefix="onnxprune:")
    assert _snapshot(tmp_path) == before


def _sigint_default() -> None:
    """In the child: SIGINT back to its default. A test run started in the background (cmd &)
    inherits SIGINT ignored, and Python then installs no Ctrl-C handler, as it should for a
    background job; the test is about a run that can be interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_real_process(tmp_path):
    """SIGINT to a real run in the middle of pruning: exit 130, one line after the progress, no files."""
    model, calib = save_inputs(tmp_path, resnet50_like(), n=256)  # several seconds of work
    out = tmp_path / "out.onnx"
    out.write_bytes(PREVIOUS)
    before = _snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "onnxprune", str(model), str(out), "--calib", str(calib),
                             "--report", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_sigint_default)
    try:
        first = proc.stderr.readline()  # the first layer's progress line: pruning is under way
        assert first.startswith("[1/"), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    after_progress = [line for line in rest.splitlines() if not line.startswith("[")]
    assert after_progress == ["onnxprune: interrupted; nothing was written"], rest
    assert "Traceback" not in rest and stdout == ""
    assert _snapshot(tmp_path) == before


# --- --force -------------------------------------------------------------------------------------

def test_force_replaces_input_after_success(tmp_path):
    model, calib = save_inputs(tmp_path, n=8)
    original = model.read_bytes()
    result = _invoke(model, model, "--calib", calib, "--force", "--quiet")
    assert result.exit_code == 0, result.output
    pruned = onnx.load(str(model))
    onnx.checker.check_model(pruned, full_check=True)
    assert pruned.SerializeToString() != original
    assert sorted(p.name for p in model.parent.iterdir()) == ["calib.npy", "m.onnx"]  # no temporary files


def test_force_keeps_input_when_pruning_fails(tmp_path):
    model, _ = save_inputs(tmp_path)
    bad = tmp_path / "in" / "nan.npy"
    np.save(bad, _calib_nan())
    before = _snapshot(tmp_path)
    result = _invoke(model, model, "--calib", bad, "--force")
    _assert_refused(result, "contains 1 NaN")
    assert _snapshot(tmp_path) == before
