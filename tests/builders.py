"""Tiny ONNX models built in code for the tests.

Every model: opset 17, one float32 input named "input" with a dynamic batch dim ("batch"), one
output named "logits", float32 weights drawn from ``np.random.default_rng(seed)``, and explicitly
named nodes ("conv1", "bn1", "relu1", ..., "fc") so tests can refer to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# Small settings so that every prune in the tests takes well under a few seconds.
FAST = dict(max_iter=10, rows_per_layer=512)
INPUT = "input"
OUTPUT = "logits"


class _Builder:
    """Collects nodes and initializers; weights come from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, values: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(values), name))
        return name

    def node(self, op: str, name: str, inputs: Sequence[str], output: str | None = None, **attrs) -> str:
        output = output or f"{name}_out"
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def conv(self, name: str, x: str, c_in: int, c_out: int, *, k: int = 3, pad: int = 1, bias: bool = False,
             zero_in: Sequence[int] = (), stride: int = 1) -> str:
        fan_in = c_in * k * k
        w = (self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        w[:, list(zero_in)] = 0.0
        inputs = [x, self.const(f"{name}.weight", w)]
        if bias:
            inputs.append(self.const(f"{name}.bias", (0.1 * self.rng.standard_normal(c_out)).astype(np.float32)))
        return self.node("Conv", name, inputs, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])

    def bn(self, name: str, x: str, c: int) -> str:
        scale = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        shift = (0.1 * self.rng.standard_normal(c)).astype(np.float32)
        mean = (0.1 * self.rng.standard_normal(c)).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        params = [self.const(f"{name}.{p}", v) for p, v in
                  (("scale", scale), ("bias", shift), ("mean", mean), ("var", var))]
        return self.node("BatchNormalization", name, [x, *params], epsilon=1e-5)

    def gemm(self, name: str, x: str, n_in: int, n_out: int, *, zero_in: Sequence[int] = (), block: int = 1,
             output: str | None = None) -> str:
        """Gemm with transB=1 (weight (out, in)); ``zero_in`` channels are blocks of ``block`` features."""
        w = (self.rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        w3 = w.reshape(n_out, n_in // block, block)
        w3[:, list(zero_in)] = 0.0
        b = (0.1 * self.rng.standard_normal(n_out)).astype(np.float32)
        return self.node("Gemm", name, [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)],
                         output, transB=1)

    def model(self, name: str, in_shape: Sequence[int], n_out: int) -> onnx.ModelProto:
        return self.model_io(name, ["batch", *in_shape], ["batch", n_out])

    def model_io(self, name: str, input_shape: Sequence, output_shape: Sequence, *, output: str = OUTPUT,
                 opset: int = OPSET) -> onnx.ModelProto:
        """The checked model of the nodes so far, with the full shapes of its input and output."""
        x = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, list(input_shape))
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, list(output_shape))
        graph = helper.make_graph(self.nodes, name, [x], [y], initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="onnxprune-tests")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def conv_bn_relu_chain(channels: Sequence[int] = (3, 8, 12), zero_in_channels: Mapping[str, Sequence[int]] | None = None,
                       bias: bool = False, seed: int = 0) -> onnx.ModelProto:
    """conv1 -> bn1 -> relu1 -> conv2 -> bn2 -> relu2 -> pool (MaxPool 2) -> flatten -> fc (Gemm, 10 out).

    Input (batch, channels[0], 8, 8). ``zero_in_channels`` maps "conv1"/"conv2"/"fc" to input channels
    whose weights are set to exactly 0 (for "fc" a channel is the block of 4*4 features of one
    conv2 channel after the Flatten).
    """
    zero = dict(zero_in_channels or {})
    unknown = set(zero) - {"conv1", "conv2", "fc"}
    if unknown:
        raise ValueError(f"unknown nodes in zero_in_channels: {sorted(unknown)}")
    c0, c1, c2 = channels
    b = _Builder(seed)
    x = b.conv("conv1", INPUT, c0, c1, bias=bias, zero_in=zero.get("conv1", ()))
    x = b.node("Relu", "relu1", [b.bn("bn1", x, c1)])
    x = b.conv("conv2", x, c1, c2, bias=bias, zero_in=zero.get("conv2", ()))
    x = b.node("Relu", "relu2", [b.bn("bn2", x, c2)])
    x = b.node("MaxPool", "pool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Flatten", "flatten", [x], axis=1)
    b.gemm("fc", x, c2 * 16, 10, zero_in=zero.get("fc", ()), block=16, output=OUTPUT)
    return b.model("conv_bn_relu_chain", (c0, 8, 8), 10)


def wide_activations(size: int = 48, width: int = 32, seed: int = 0) -> onnx.ModelProto:
    """conv1 (3 -> width) -> relu1 -> conv2 (width -> width) -> relu2 -> GlobalAveragePool -> fc (10).

    Input (batch, 3, size, size): width*size*size floats of activation per sample against a model of
    a few thousand parameters, for the tests of what memory follows the calibration count.
    """
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, width, bias=True)])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, width, width, bias=True)])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "gap", [x])], axis=1)
    b.gemm("fc", x, width, 10, output=OUTPUT)
    return b.model("wide_activations", (3, size, size), 10)


def lenet_like(seed: int = 0) -> onnx.ModelProto:
    """conv1 (1->6, 3x3, bias) -> relu1 -> pool -> conv2 (6->8, 3x3, bias) -> relu2 -> flatten
    -> fc1 (72->16) -> relu3 -> fc2 (16->10). Input (batch, 1, 12, 12)."""
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 1, 6, pad=0, bias=True)])
    x = b.node("MaxPool", "pool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 6, 8, pad=0, bias=True)])
    x = b.node("Flatten", "flatten", [x], axis=1)
    x = b.node("Relu", "relu3", [b.gemm("fc1", x, 8 * 3 * 3, 16, block=9)])
    b.gemm("fc2", x, 16, 10, output=OUTPUT)
    return b.model("lenet_like", (1, 12, 12), 10)


def with_unsupported_op(seed: int = 0) -> onnx.ModelProto:
    """conv1 (3->8) -> relu1 -> to_nhwc (perm 0,2,3,1) -> transpose (perm 0,3,1,2) -> conv2 (8->12) -> relu2
    -> gap -> flatten -> fc.

    The Transposes move the channel axis, which no rule maps, so conv2's input channels are frozen.
    Input (batch, 3, 8, 8).
    """
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    x = b.node("Transpose", "to_nhwc", [x], perm=[0, 2, 3, 1])
    x = b.node("Transpose", "transpose", [x], perm=[0, 3, 1, 2])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 8, 12, bias=True)])
    x = b.node("GlobalAveragePool", "gap", [x])
    x = b.node("Flatten", "flatten", [x], axis=1)
    b.gemm("fc", x, 12, 10, output=OUTPUT)
    return b.model("with_unsupported_op", (3, 8, 8), 10)


def matmul_head(seed: int = 0) -> onnx.ModelProto:
    """conv1 (3->8, bias) -> relu1 -> gap -> flatten -> fc (MatMul, constant B (8, 10)) -> fc_bias (Add).

    Input (batch, 3, 8, 8).
    """
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    x = b.node("GlobalAveragePool", "gap", [x])
    x = b.node("Flatten", "flatten", [x], axis=1)
    w = (b.rng.standard_normal((8, 10)) * np.sqrt(2.0 / 8)).astype(np.float32)
    x = b.node("MatMul", "fc", [x, b.const("fc.weight", w)])
    bias = (0.1 * b.rng.standard_normal(10)).astype(np.float32)
    b.node("Add", "fc_bias", [x, b.const("fc.bias", bias)], OUTPUT)
    return b.model("matmul_head", (3, 8, 8), 10)


def random_chain(blocks: Sequence[tuple[int, int, int, bool, str | None, bool]], head: str, hidden: int | None,
                 seed: int = 0) -> onnx.ModelProto:
    """A plain CNN from pieces, for property-based tests. Input (batch, 3, 12, 12), 10 outputs.

    ``blocks``: (out channels, kernel 1|3, stride 1|2, BatchNormalization?, activation op or None,
    MaxPool 2?) per conv block; ``head``: "flatten" or "gap" (GlobalAveragePool then Flatten);
    ``hidden``: width of an optional Gemm + Relu before the final Gemm.
    """
    b = _Builder(seed)
    x, channels, size = INPUT, 3, 12
    for i, (c_out, k, stride, bn, act, pool) in enumerate(blocks, start=1):
        x = b.conv(f"conv{i}", x, channels, c_out, k=k, pad=k // 2, bias=not bn, stride=stride)
        channels, size = c_out, -(-size // stride)
        if bn:
            x = b.bn(f"bn{i}", x, c_out)
        if act:
            x = b.node(act, f"act{i}", [x])
        if pool and size >= 2:
            x = b.node("MaxPool", f"pool{i}", [x], kernel_shape=[2, 2], strides=[2, 2])
            size //= 2
    if head == "gap":
        x = b.node("GlobalAveragePool", "gap", [x])
        size = 1
    x = b.node("Flatten", "flatten", [x], axis=1)
    features = channels * size * size
    if hidden:
        x = b.node("Relu", "fc_act", [b.gemm("fc_hidden", x, features, hidden, block=size * size)])
        features = hidden
    b.gemm("fc", x, features, 10, output=OUTPUT)
    return b.model("random_chain", (3, 12, 12), 10)


def random_inputs(model: onnx.ModelProto, n: int, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 inputs of the model's input shape with batch n."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [n] + [d.dim_value for d in dims[1:]]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's "logits" for input x, on onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: x})[0]


def save_inputs(directory: Path, model: onnx.ModelProto | None = None, n: int = 16, **save_options) -> tuple[Path, Path]:
    """Write ``model`` (default: lenet_like()) and n random calibration inputs into ``directory``/in.

    Returns (model path, calibration path); ``save_options`` go to onnx.save (external data).
    """
    model = model or lenet_like()
    model_path, calib_path = Path(directory) / "in" / "m.onnx", Path(directory) / "in" / "calib.npy"
    model_path.parent.mkdir(exist_ok=True)
    onnx.save(model, model_path, **save_options)
    np.save(calib_path, random_inputs(model, n, seed=1))
    return model_path, calib_path


def quick_prune(model, calib, **options):
    """onnxprune.prune with :data:`FAST` settings (options override them), quiet about the GES
    iteration cap those settings hit ("GES stopped after 10 iterations")."""
    import onnxprune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return onnxprune.prune(model, calib, **{**FAST, **options})
