"""Same inputs and --seed, byte-identical output model (issue 6, item 5).

The runs are separate processes with different PYTHONHASHSEED values, so that an output that
depended on the iteration order of a set or dict of strings (node and tensor names) would differ.
A branchy model (residual stages, joint channel units) exercises the union-find and the rewriting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from builders import save_inputs
from onnxprune.cli import main
from topologies import resnet50_like

ROOT = Path(__file__).resolve().parents[1]


def test_same_seed_byte_identical_across_processes(tmp_path):
    model, calib = save_inputs(tmp_path, resnet50_like(), n=16)
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}" / "out.onnx"  # same file names: the model names its data file
        out.parent.mkdir()
        proc = subprocess.run([sys.executable, "-m", "onnxprune", str(model), str(out), "--calib", str(calib),
                               "--samples", "12", "--seed", "7", "--quiet", "--external-data"],
                              capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append((out.read_bytes(), Path(f"{out}.data").read_bytes()))
    assert outputs[0] == outputs[1]


def test_other_seed_other_model(tmp_path):
    """The seed draws the calibration subset, so another seed gives another (equally valid) model."""
    model, calib = save_inputs(tmp_path, n=16)
    written = []
    for seed in (0, 1, 0):
        out = tmp_path / f"seed{seed}_{len(written)}.onnx"
        result = CliRunner().invoke(main, [str(model), str(out), "--calib", str(calib), "--samples", "8",
                                           "--seed", str(seed), "--quiet"])
        assert result.exit_code == 0, result.output
        written.append(out.read_bytes())
    assert written[0] == written[2]
    assert written[0] != written[1]


def test_search_trials_reuse_the_lookahead_without_changing_the_model(monkeypatch):
    """The guard's trials share one look-ahead pass, and the model a trial gives is the one a fresh
    prune at that strength gives."""
    import onnxprune.pruning.walk as walk
    from builders import random_inputs
    from onnxprune import PruneConfig, prune, prune_safely

    model = resnet50_like()
    x = random_inputs(model, 112, seed=3)  # 80 held out: enough to search, not the cautious single prune
    passes = []
    gather = walk.original_statistics
    monkeypatch.setattr(walk, "original_statistics", lambda *a, **k: passes.append(1) or gather(*a, **k))
    config = PruneConfig(max_samples=32, holdout=80, seed=5)
    guarded = prune_safely(model, x, config)
    trials = guarded.report.guard.trials
    assert len(trials) >= 2 and len(passes) == 1
    fresh = prune(model, x, config, eps_l2=guarded.report.guard.eps_l2)
    assert len(passes) == 2
    assert fresh.model.SerializeToString() == guarded.model.SerializeToString()
