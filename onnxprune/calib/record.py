"""Turn one layer's cached input activations into its regression statistics.

X comes from the network being pruned (so the regression corrects the errors of layers already
pruned); Y is the layer's output in the original network, computed here from the original
layer's weights and the original network's input at the same pixels, which costs one matrix
product on the sampled rows instead of a full convolution.
"""

from __future__ import annotations

import math

import numpy as np

from onnxprune.calib.stats import ConvGeometry, Moments, extract_patches, sample_pixels
from onnxprune.graph.analysis import Layer
from onnxprune.solve.problem import LayerProblem


def layer_statistics(original: Layer, x_pruned: np.ndarray, x_original: np.ndarray, *, block: int,
                     rows_per_layer: int, batch_size: int, rng: np.random.Generator) -> LayerProblem:
    """Statistics of the regression (pruned-network input) -> (original layer output).

    ``block`` is the number of features per input channel of ``x_pruned`` (kh*kw for a Conv's
    patches, H*W for a Gemm behind a Flatten, 1 otherwise).
    """
    weight = original.weight.reshape(original.out_channels, -1).astype(np.float32)
    bias = original.bias.astype(np.float32)
    n_images = len(x_pruned)
    if original.is_conv:
        geometry = ConvGeometry.of(original.node, x_pruned.shape[2:])
        out_hw = geometry.out_hw(x_pruned.shape[2:])
        per_image = max(1, math.ceil(rows_per_layer / n_images))
        n_channels = x_pruned.shape[1]
        n_features = n_channels * block
    else:
        n_features = x_pruned.shape[1]
        n_channels = n_features // block
    moments = Moments(n_features, original.out_channels)
    for begin in range(0, n_images, batch_size):
        ids = np.arange(begin, min(begin + batch_size, n_images))
        if original.is_conv:
            images, rows, cols = sample_pixels(ids, out_hw, per_image, rng)
            x = extract_patches(x_pruned, geometry, images, rows, cols)
            x0 = extract_patches(x_original, geometry, images, rows, cols)
        else:
            x, x0 = x_pruned[ids], x_original[ids]
        moments.add(x, x0 @ weight.T + bias)
    return moments.problem(np.repeat(np.arange(n_channels), block), n_channels)
