"""Scale check: prune a full-size ResNet-50 (224x224, ~25.6 M parameters, random weights).

The model is built in code with onnx.helper (torchvision's ResNet-50 v1.5 layout: stride on the
3x3 conv, BatchNormalization kept as its own node, as an unfolded export has it), the calibration
set is random normal images, and the pruning runs through the real CLI in a child process so the
figures are those a user sees: wall time, the child's peak resident memory, parameters removed.
Random weights carry no accuracy; this measures only that a model of this size prunes, how long
it takes and how much memory it needs.

    python tools/large_model.py [--samples 64] [--external-data] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck width, blocks, first stride)


class _ResNet50:
    """Collects nodes and He-initialised weights from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []

    def _const(self, name: str, values: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def conv_bn(self, name: str, x: str, c_in: int, c_out: int, k: int, stride: int = 1, relu: bool = True,
                gamma: float = 1.0) -> str:
        w = self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))
        self.nodes.append(helper.make_node("Conv", [x, self._const(f"{name}.weight", w)], [f"{name}.conv"],
                                           name=f"{name}/Conv", kernel_shape=[k, k], pads=[k // 2] * 4,
                                           strides=[stride, stride]))
        # gamma < 1 on a block's last BN keeps the residual sum's scale bounded over 16 blocks
        # (random weights have no training that would do it).
        bn = [self._const(f"{name}.bn.{p}", v) for p, v in (
            ("scale", gamma * self.rng.uniform(0.5, 1.5, c_out)), ("bias", 0.1 * self.rng.standard_normal(c_out)),
            ("mean", 0.1 * self.rng.standard_normal(c_out)), ("var", self.rng.uniform(0.5, 1.5, c_out)))]
        out = f"{name}.bn"
        self.nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn], [out], name=f"{name}/BN"))
        if relu:
            self.nodes.append(helper.make_node("Relu", [out], [f"{name}.relu"], name=f"{name}/Relu"))
            out = f"{name}.relu"
        return out

    def bottleneck(self, name: str, x: str, c_in: int, width: int, stride: int) -> str:
        y = self.conv_bn(f"{name}.conv1", x, c_in, width, 1)
        y = self.conv_bn(f"{name}.conv2", y, width, width, 3, stride)
        y = self.conv_bn(f"{name}.conv3", y, width, 4 * width, 1, relu=False, gamma=0.2)
        if stride != 1 or c_in != 4 * width:
            x = self.conv_bn(f"{name}.downsample", x, c_in, 4 * width, 1, stride, relu=False)
        self.nodes.append(helper.make_node("Add", [y, x], [f"{name}.add"], name=f"{name}/Add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}/Relu"))
        return f"{name}.out"


def resnet50(seed: int = 0) -> onnx.ModelProto:
    net = _ResNet50(seed)
    x = net.conv_bn("stem", "input", 3, 64, 7, 2)
    net.nodes.append(helper.make_node("MaxPool", [x], ["stem.pool"], name="stem/MaxPool", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[2, 2]))
    x, c = "stem.pool", 64
    for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
        for block in range(blocks):
            x = net.bottleneck(f"layer{stage}.{block}", x, c, width, stride if block == 0 else 1)
            c = 4 * width
    net.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="head/GAP"))
    net.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="head/Flatten", axis=1))
    w = net.rng.standard_normal((1000, c)) * np.sqrt(1.0 / c)
    net.nodes.append(helper.make_node("Gemm", ["flat", net._const("fc.weight", w), net._const("fc.bias", np.zeros(1000))],
                                      ["logits"], name="fc/Gemm", transB=1))
    graph = helper.make_graph(net.nodes, "resnet50_random", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], initializer=net.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tools/large_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="random calibration images")
    parser.add_argument("--external-data", action="store_true",
                        help="save the input model with external data and pass --external-data to the CLI")
    parser.add_argument("--keep", type=Path, help="write the model, calibration, output and report here")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="onnxprune-large-"))
    work.mkdir(parents=True, exist_ok=True)
    model = resnet50()
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    onnx.save(model, work / "resnet50.onnx", save_as_external_data=args.external_data,
              location="resnet50.onnx.data")
    np.save(work / "calib.npy", np.random.default_rng(1).standard_normal((args.samples, 3, 224, 224)).astype(np.float32))
    command = [sys.executable, "-m", "onnxprune", str(work / "resnet50.onnx"), str(work / "resnet50_pruned.onnx"),
               "--calib", str(work / "calib.npy"), "--report", str(work / "report.json"), "--quiet"]
    if args.external_data:
        command.append("--external-data")
    print(f"ResNet-50, {params:,} parameters, {args.samples} calibration images; running:\n  {' '.join(command)}",
          flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"onnxprune failed ({proc.returncode}): {proc.stderr.strip()}")
    report = json.loads((work / "report.json").read_text())
    figures = {
        "params_before": report["params_before"], "params_after": report["params_after"],
        "params_removed": round(report["params_removed"], 4), "macs_removed": round(report["macs_removed"], 4),
        "samples": args.samples, "wall_seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "timings": report["timings"], "machine": f"{platform.machine()}, {_cores()} cores",
    }
    print(proc.stdout.strip())
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    main()
