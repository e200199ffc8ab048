"""Patches times the flattened kernel must equal onnxruntime's Conv at the sampled pixels."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxprune.calib.stats import extract_patches, sample_pixels
from onnxprune.ops import ConvGeometry


@pytest.mark.parametrize("kernel, strides, dilations, pads, auto_pad", [
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), None),
    ((5, 5), (2, 2), (1, 1), (0, 0, 0, 0), None),
    ((3, 2), (2, 1), (2, 1), (1, 0, 2, 1), None),
    ((3, 3), (2, 2), (1, 1), None, "SAME_UPPER"),
])
def test_patches_reproduce_onnxruntime_conv(kernel, strides, dilations, pads, auto_pad):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 11, 9)).astype(np.float32)
    w = rng.normal(size=(5, 4) + kernel).astype(np.float32)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations))
    attrs.update(pads=list(pads)) if pads else attrs.update(auto_pad=auto_pad)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    geometry = ConvGeometry.of(gs.import_onnx(model).nodes[0], x.shape[2:])
    assert geometry.out_hw(x.shape[2:]) == y.shape[2:]
    images, rows, cols = sample_pixels(np.arange(3), y.shape[2:], 7, np.random.default_rng(1))
    assert len(images) == 21 and rows.max() < y.shape[2] and cols.max() < y.shape[3]
    patches = extract_patches(x, geometry, images, rows, cols)
    np.testing.assert_allclose(patches @ w.reshape(5, -1).T, y[images, :, rows, cols], rtol=1e-4, atol=1e-4)


def test_sample_pixels_are_distinct_per_image():
    images, rows, cols = sample_pixels(np.array([4, 9]), (3, 5), 6, np.random.default_rng(0))
    for image in (4, 9):
        pixels = set(zip(rows[images == image], cols[images == image]))
        assert len(pixels) == 6
    all_images, _, _ = sample_pixels(np.array([0]), (2, 2), 10, np.random.default_rng(0))
    assert len(all_images) == 4  # capped at the number of pixels
