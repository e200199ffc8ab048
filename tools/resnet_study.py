"""Where does ResNet-18 lose its accuracy? Prune parts of it and measure (issue 3 diagnostics).

A *unit* is a set of tied channels with all the layers that read them (docs/method.md). In
ResNet-18 the units with one reader are the insides of the basic blocks (conv1 -> conv2), the
units with several readers are the residual streams of the four stages. Each mode prunes with
the library's defaults (or the given options) except:

    all           nothing changed
    chain_only    the residual streams are not pruned (their eps_l2 set to ~0)
    residual_only only the residual streams are pruned
    streamN       only the residual stream with N channels is pruned (stream512, stream256, ...)
    scaleF        the residual streams' eps_l2 multiplied by F (scale0.15)

    python tools/resnet_study.py chain_only eps_l2=2

Run single-threaded BLAS on a shared machine (OPENBLAS_NUM_THREADS=1): with more threads than
free cores, OpenBLAS spins and a run takes several times longer. It monkeypatches the engine's
eps_l2 per unit, which is what a study may do and the library must not.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
import onnxprune.engine as engine  # noqa: E402
from datasets import DATASETS, calibration_subset, shared_dir  # noqa: E402
from evaluate import top1  # noqa: E402
from onnxprune import prune  # noqa: E402

MODEL = "resnet18_cifar10"


def is_stream(unit) -> bool:
    return len(unit.consumers) > 1


def silenced(mode: str, unit) -> bool:
    """Whether the mode leaves this unit unpruned."""
    if mode == "chain_only":
        return is_stream(unit)
    if mode == "residual_only":
        return not is_stream(unit)
    if mode.startswith("stream"):
        return not (is_stream(unit) and len(unit.classes) + len(unit.frozen_classes) == int(mode[6:]))
    return False


def patch(mode: str) -> None:
    unit_eps_l2 = engine.unit_eps_l2

    def eps_of_units(channels, units, config):
        eps = unit_eps_l2(channels, units, config)
        factor = float(mode[5:]) if mode.startswith("scale") else 1.0
        return {id(u): 1e-9 if silenced(mode, u) else eps[id(u)] * (factor if is_stream(u) else 1.0) for u in units}

    engine.unit_eps_l2 = eps_of_units


def main() -> None:
    mode, options = sys.argv[1], {k: float(v) for k, v in (a.split("=") for a in sys.argv[2:])}
    patch(mode)
    load = DATASETS[MODEL]
    calib = calibration_subset(load("train")[0], 1024, 0)
    x_test, y_test = load("test")
    path = shared_dir(None) / "models" / f"{MODEL}.onnx"
    baseline = top1(path, x_test, y_test)
    start = time.time()
    model, report = prune(path, calib, **options)
    out = Path(f"/tmp/resnet_study_{mode}.onnx")
    onnx.save(model, out)
    accuracy = top1(out, x_test, y_test)
    print(f"RESULT {mode} {options} top1={accuracy:.2f} loss={baseline - accuracy:.2f} "
          f"params_removed={report.params_removed:.3f} macs_removed={report.macs_removed:.3f} "
          f"{time.time() - start:.0f}s")
    for layer in report.layers:
        print(f"  {layer.name} in {layer.in_channels_before}->{layer.in_channels_after} "
              f"out {layer.channels_before}->{layer.channels_after}")


if __name__ == "__main__":
    main()
