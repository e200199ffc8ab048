"""The activation store (issue 6, items 1-2): same models from disk as from memory, nothing left
behind, the --verbose time breakdown, and peak memory that does not follow the calibration count."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from builders import quick_prune, random_inputs, save_inputs, wide_activations
from onnxprune.calib.store import ActivationStore, same_values
from onnxprune.cli import main
from onnxprune.pruning.walk import Pruner
from topologies import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]


# --- the store itself -----------------------------------------------------------------------


def test_file_tensor_round_trip_and_channel_drop(tmp_path):
    values = np.random.default_rng(0).standard_normal((10, 4, 3, 3)).astype(np.float32)
    mask = np.array([True, False, True, True])
    with ActivationStore(memory_limit=0, directory=str(tmp_path), batch_size=3) as store:
        tensor = store.create(10, values.shape[1:], values.dtype)
        for begin in range(0, 10, 3):
            tensor.write(begin, values[begin:begin + 3])
        assert list(tmp_path.iterdir())  # on disk, not in memory
        assert np.array_equal(np.concatenate(list(tensor.batches(4))), values)
        assert np.array_equal(tensor.read(2, 7), values[2:7])
        kept = tensor.drop_channels(mask)
        assert np.array_equal(kept.read(0, 10), values[:, mask])
        assert same_values(kept, store.wrap(np.ascontiguousarray(values[:, mask])))
        assert not same_values(kept, store.wrap(values[:, [0, 1, 2]]))
        assert store.in_memory == 0 and store.bytes_written > 0
    assert not list(tmp_path.iterdir())


def test_memory_budget_decides_the_place():
    with ActivationStore(memory_limit=1000, batch_size=4) as store:
        small = store.create(10, (20,), np.float32)  # 800 bytes: fits
        big = store.create(10, (20,), np.float32)  # 800 more: does not
        assert store.in_memory == 800 and store.directory is not None and len(store.files) == 1
        small.release()
        assert store.in_memory == 0
        big.release()
        assert not list(store.directory.iterdir())


# --- same models, clean up ------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["resnet50", "densenet"])
def test_disk_store_gives_the_same_model(tmp_path, architecture):
    """Every activation through files (budget 0) against all in memory: byte-identical models."""
    model = ARCHITECTURES[architecture]()
    calib = random_inputs(model, 40, seed=1)
    on_disk, report_disk = quick_prune(model, calib, activation_memory_mb=0, activation_dir=str(tmp_path), batch_size=16)
    in_memory, report_memory = quick_prune(model, calib, activation_memory_mb=math.inf, batch_size=16)
    assert on_disk.SerializeToString() == in_memory.SerializeToString()
    assert report_disk.activations["written_mb"] > 0 and report_disk.activations["peak_in_memory_mb"] == 0
    assert report_memory.activations["written_mb"] == 0 and report_memory.activations["memory_limit_mb"] is None
    assert not list(tmp_path.iterdir())


def test_temporary_directory_removed_after_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C in the middle of the walk (activation files exist by then) leaves nothing behind."""
    model = ARCHITECTURES["resnet50"]()
    seen = []
    step = Pruner.step

    def interrupted(self, layer):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(list(tmp_path.glob("*/*.bin")))
        return step(self, layer)

    monkeypatch.setattr(Pruner, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick_prune(model, random_inputs(model, 20, seed=1), activation_memory_mb=0, activation_dir=str(tmp_path))
    assert any(seen) and not list(tmp_path.iterdir())


def test_cli_leaves_no_files_on_error(tmp_path, monkeypatch):
    """A failure after the walk started: one-line error, and $TMPDIR holds nothing of ours."""
    import tempfile

    from onnxprune.pruning import once

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(once, "export", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    model, calib = save_inputs(tmp_path, ARCHITECTURES["resnet50"](), n=12)
    result = CliRunner().invoke(main, [str(model), str(tmp_path / "out.onnx"), "--calib", str(calib),
                                       "--activation-memory", "0", "--max-iter", "5", "-q"])
    assert result.exit_code == 1 and "internal error: RuntimeError: boom" in result.output
    assert not list(scratch.glob("onnxprune-*")) and not (tmp_path / "out.onnx").exists()


def test_sigterm_removes_the_activations_on_disk(tmp_path):
    """kill (SIGTERM) in the middle of the walk: exit 143, no output, and $TMPDIR holds nothing of ours."""
    import os
    import signal
    import time

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    model = tmp_path / "wide.onnx"
    onnx.save(wide_activations(size=48, width=32), model)
    calib = tmp_path / "calib.npy"
    np.save(calib, random_inputs(onnx.load(model), 256, seed=1))
    child = subprocess.Popen([sys.executable, "-m", "onnxprune", str(model), str(tmp_path / "out.onnx"), "--calib",
                              str(calib), "--activation-memory", "0", "--max-iter", "3"], cwd=ROOT,
                             env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not list(scratch.glob("*/*.bin")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the run ended before it wrote activations"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and "onnxprune: terminated; nothing was written" in err, err
    assert not list(scratch.glob("onnxprune-*")) and not (tmp_path / "out.onnx").exists()


# --- --verbose ------------------------------------------------------------------------------


def test_verbose_prints_the_time_breakdown(tmp_path):
    model, calib = save_inputs(tmp_path, n=16)
    report_path = tmp_path / "r.json"
    result = CliRunner().invoke(main, [str(model), str(tmp_path / "out.onnx"), "--calib", str(calib), "-v",
                                       "--max-iter", "5", "--activation-memory", "0", "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    for line in ("time breakdown:", "onnxruntime forward, original network", "onnxruntime forward, pruned network",
                 "statistics accumulation", "GES solve", "refit", "export", "verify", "total",
                 "activation store: 0 MB in memory at most (budget 0 MB)",
                 "one onnxruntime forward pass over the calibration set"):
        assert line in result.output, line
    timings = json.loads(report_path.read_text())["timings"]
    assert {"forward_original", "forward_pruned", "statistics", "solve", "refit", "rewrite", "export", "verify",
            "store_io", "forward_once"} <= set(timings)
    quiet = CliRunner().invoke(main, [str(model), str(tmp_path / "out2.onnx"), "--calib", str(calib), "-q"])
    assert "time breakdown" not in quiet.output


# --- memory does not grow with the samples ---------------------------------------------------

# wide_activations: conv1's output, conv2's input, is 32 x 48 x 48 floats = 288 KB per sample in
# each network, against a model of 10,000 parameters; statistics stay small (512 regression rows).
CHILD = """
import json, sys, numpy as np, onnx, onnxprune
model = onnx.load(sys.argv[1])
x = np.random.default_rng(0).standard_normal((int(sys.argv[2]), 3, 48, 48)).astype(np.float32)
# holdout=0: the statistics' activations are what is measured (the fidelity pass runs in batches of its own)
_, report = onnxprune.prune(model, x, activation_memory_mb=float(sys.argv[3]), rows_per_layer=512, max_iter=3,
                            batch_size=32, max_samples=None, holdout=0)
print(json.dumps({"peak": report.peak_memory_mb, "written": report.activations["written_mb"]}))
"""
SMALL, LARGE = 64, 256
PER_SAMPLE_MB = 2 * 32 * 48 * 48 * 4 / 2**20  # the widest boundary, both networks


def _peak_memory(tmp_path: Path, samples: int, budget_mb: float) -> dict:
    model = tmp_path / "wide.onnx"
    if not model.exists():
        onnx.save(wide_activations(size=48, width=32), model)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(samples), str(budget_mb)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform == "win32", reason="peak memory is read from getrusage")
def test_peak_memory_does_not_grow_with_the_samples(tmp_path):
    """4x the samples: the peak grows by far less than holding the extra activations would cost.

    Held in memory, the 192 extra samples' activations are 192 x 0.56 MB = 108 MB (plus the calibration
    inputs, 5 MB); through the store, the growth is the inputs and noise. The control below shows
    that the in-memory cache fails the same bound.
    """
    small, large = _peak_memory(tmp_path, SMALL, 8), _peak_memory(tmp_path, LARGE, 8)
    assert large["written"] > 0
    held = (LARGE - SMALL) * PER_SAMPLE_MB
    assert large["peak"] - small["peak"] < 0.3 * held, (small, large)


@pytest.mark.skipif(sys.platform == "win32", reason="peak memory is read from getrusage")
def test_in_memory_cache_would_fail_the_bound(tmp_path):
    """The control of the test above: with no budget the same runs do grow by about the activations."""
    small, large = _peak_memory(tmp_path, SMALL, math.inf), _peak_memory(tmp_path, LARGE, math.inf)
    assert large["written"] == 0
    held = (LARGE - SMALL) * PER_SAMPLE_MB
    assert large["peak"] - small["peak"] >= 0.3 * held, (small, large)
