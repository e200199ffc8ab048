"""Closed-form checks of tools/count.py, the independent parameter / MAC count (issue 14)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import count as count_tool  # noqa: E402


def _model(nodes, inputs, outputs, inits=(), opset=17, ir=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def _w(shape, name):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def test_conv_stride_pad():
    # 8 filters 3x3 over 3 channels, stride 2, pad 1: 16x16 -> 8x8 output.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    m = _model([node], [x], [y], [_w((8, 3, 3, 3), "w"), _w((8,), "b")])
    r = count_tool.count(m)
    assert r["params"] == 8 * 3 * 9 + 8
    assert r["macs"] == 8 * 3 * 9 * 8 * 8
    assert r["unresolved"] == []


def test_conv_transpose_uses_input_pixels():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], kernel_shape=[2, 2])
    m = _model([node], [x], [y], [_w((4, 6, 2, 2), "w")])
    r = count_tool.count(m)
    assert r["params"] == 4 * 6 * 4
    assert r["macs"] == 4 * 6 * 4 * 5 * 7


def test_gemm_and_nd_matmul_and_activation_matmul():
    # Gemm (2-D) with transB, then a 3-D MatMul [1, 5, 10] x [10, 3] -> [1, 5, 3]: 30 x 5 MACs;
    # a MatMul of two activations counts 0.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 5, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Gemm", ["x", "wg", "bg"], ["y"], transB=1),
        helper.make_node("Identity", ["wm"], ["wm_id"]),
        helper.make_node("MatMul", ["s", "wm_id"], ["z"]),
        helper.make_node("Transpose", ["s"], ["st"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["s", "st"], ["a"]),
    ]
    m = _model(nodes, [x, s], [y, z, a], [_w((7, 12), "wg"), _w((7,), "bg"), _w((10, 3), "wm")])
    r = count_tool.count(m)
    assert r["params"] == 7 * 12 + 7 + 30
    assert r["macs"] == 7 * 12 + 30 * 5


def test_constant_node_weight_and_int_constants_and_ir3_inputs():
    # Weight in a Constant node (paddle2onnx style), an int64 Constant (not a parameter), and an
    # IR3-style initializer also listed as a graph input (counted once).
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    b_in = helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    wc = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones((3, 2, 1, 1), np.float32)))
    shp = helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1], np.int64)))
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"])
    reshape = helper.make_node("Reshape", ["c", "shape"], ["y"])
    m = _model([wc, shp, conv, reshape], [x, b_in], [y], [_w((3,), "b")], opset=9, ir=3)
    r = count_tool.count(m)
    assert r["params"] == 6 + 3
    assert r["macs"] == 6 * 16


def test_symbolic_hw_input_is_fixed():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    m = _model([node], [x], [y], [_w((4, 3, 3, 3), "w")])
    r = count_tool.count(m, {"x": (1, 3, 20, 30)})
    assert r["macs"] == 4 * 27 * 20 * 30
    r = count_tool.count(m, {None: (1, 3, 10, 10)})
    assert r["macs"] == 4 * 27 * 100
    try:
        count_tool.count(m)
    except ValueError as e:
        assert "symbolic" in str(e)
    else:  # pragma: no cover
        raise AssertionError("a symbolic H/W without a shape must be refused")


def test_symbolic_batch_defaults_to_one():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    m = _model([node], [x], [y], [_w((2, 3, 1, 1), "w")])
    assert count_tool.count(m)["macs"] == 6 * 64


def test_unread_initializers_are_not_parameters_and_reshaped_weights_count_macs():
    # Inception-v1 (zoo): Gemm(x, Reshape(W)); ResNet-50 (zoo): a float initializer nothing reads.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = numpy_helper.from_array(np.array([4, 6], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["w", "shape"], ["w2"]),
             helper.make_node("Gemm", ["x", "w2"], ["y"], transB=1)]
    m = _model(nodes, [x], [y], [_w((24,), "w"), shape, _w((1, 1), "dead")])
    r = count_tool.count(m)
    assert r["params"] == 24
    assert r["macs"] == 24
