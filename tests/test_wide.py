"""A layer too wide to solve (--max-features) keeps the channels it reads and its weights, with the reason."""

from __future__ import annotations


import numpy as np
import onnx
import pytest

import onnxprune
from builders import conv_bn_relu_chain, quick_prune, random_inputs, run


def _weight(model, name):
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_a_gemm_wider_than_the_limit_keeps_its_inputs_and_weights():
    original = conv_bn_relu_chain()  # fc reads 12 channels x 4 x 4 = 192 features; conv2 72
    calib = random_inputs(original, 64, seed=1)
    pruned, report = quick_prune(original, calib, eps_l2=3.0, max_features=100)
    layers = {layer.name: layer for layer in report.layers}
    assert "regresses on 192 input features, more than --max-features 100" in layers["fc"].frozen
    assert layers["fc"].in_channels_after == 192 and layers["conv2"].channels_after == 12
    np.testing.assert_array_equal(_weight(pruned, "fc.weight"), _weight(original, "fc.weight"))
    assert layers["conv2"].in_channels_after < 8  # the narrower layers are still pruned
    assert run(pruned, random_inputs(original, 2)).shape == (2, 10)


def test_under_the_limit_the_same_gemm_is_pruned():
    original = conv_bn_relu_chain()
    pruned, report = quick_prune(original, random_inputs(original, 64, seed=1), eps_l2=3.0)
    fc = next(layer for layer in report.layers if layer.name == "fc")
    assert fc.frozen is None and fc.in_channels_after < 192


def test_the_limit_must_be_positive():
    with pytest.raises(onnxprune.ConfigError, match="max_features"):
        onnxprune.PruneConfig(max_features=0)
