"""Prune small versions of public architectures and report what was removed and the output error.

The models (MobileNetV2-, DenseNet-, SqueezeNet- and ResNet-50-style, built in tests/topologies.py)
have random weights, so there is no accuracy to report; the figure of merit is how far the pruned
model's logits move from the original's on held-out random inputs, relative to the logits' spread.

    python tools/architectures.py [--eps-l2 0.8] [--out docs/results/architectures.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import onnxprune  # noqa: E402
from builders import random_inputs, run  # noqa: E402
from topologies import ARCHITECTURES  # noqa: E402


def measure(name: str, eps_l2: float, samples: int) -> dict:
    model = ARCHITECTURES[name]()
    calib, held_out = random_inputs(model, samples, seed=0), random_inputs(model, 256, seed=1)
    start = time.perf_counter()
    pruned, report = onnxprune.prune(model, calib, eps_l2=eps_l2, holdout=0)  # its own held-out inputs below
    seconds = time.perf_counter() - start
    before, after = run(model, held_out), run(pruned, held_out)
    frozen = sorted({layer.frozen for layer in report.layers if layer.frozen})
    return {
        "model": name, "eps_l2": eps_l2, "params_before": report.params_before, "params_after": report.params_after,
        "params_removed": round(report.params_removed, 4), "macs_removed": round(report.macs_removed, 4),
        "relative_output_error": round(float(np.linalg.norm(after - before) / np.linalg.norm(before - before.mean(0))), 4),
        "top1_agreement": round(float(np.mean(after.argmax(1) == before.argmax(1))), 4),
        "seconds": round(seconds, 2), "frozen_reasons": frozen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps-l2", default="0.8", help="comma-separated eps_l2 values")
    parser.add_argument("--samples", type=int, default=512, help="random calibration inputs")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = [measure(name, float(eps), args.samples) for name in ARCHITECTURES for eps in args.eps_l2.split(",")]
    print("| model | eps_l2 | params removed | MACs removed | relative output error | top-1 agreement | time | frozen |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['eps_l2']} | {r['params_removed']:.1%} | {r['macs_removed']:.1%} | "
              f"{r['relative_output_error']:.3f} | {r['top1_agreement']:.1%} | {r['seconds']:.1f} s | "
              f"{'; '.join(r['frozen_reasons'])} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
