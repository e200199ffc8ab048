"""Turn a layer's input activations into its regression statistics, batch by batch.

X comes from the network being pruned (so the regression corrects the errors of layers already
pruned); Y is the layer's output in the original network, computed here from the original
layer's weights and the original network's input at the same pixels, which costs one matrix
product on the sampled rows instead of a full convolution.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.calib.runner import segment_model
from onnxprune.runtime import declared_batch, make_session, run_arrays
from onnxprune.calib.store import StoredTensor
from onnxprune.calib.stats import Moments, extract_patches, sample_pixels
from onnxprune.ops import Layer
from onnxprune.solve.problem import LayerProblem


class LayerRecorder:
    """Accumulates the statistics of (pruned-network input) -> (original layer output).

    ``channel_of_feature`` names the channel (in whatever numbering the caller's solve uses) of
    each input feature: C_in*kh*kw of them for a Conv, the input width for a Gemm. ``out_rows``
    selects the original layer's outputs that still exist.
    """

    def __init__(self, original: Layer, channel_of_feature: np.ndarray, n_channels: int, *, n_images: int,
                 rows_per_layer: int, rng: np.random.Generator, out_rows: np.ndarray | None = None) -> None:
        weight = original.weight.reshape(original.out_channels, -1)
        bias = original.bias
        if out_rows is not None:
            weight, bias = weight[out_rows], bias[out_rows]
        self.weight, self.bias = weight.astype(np.float32), bias.astype(np.float32)
        self.layer = original
        self.per_image = max(1, math.ceil(rows_per_layer / max(n_images, 1)))
        self.channel_of_feature, self.n_channels = np.asarray(channel_of_feature), n_channels
        self.rng = rng
        self.moments = Moments(len(self.channel_of_feature), len(self.weight))

    def add(self, x_pruned: np.ndarray, x_original: np.ndarray) -> None:
        """One batch of the layer's input in both networks (same images, same order)."""
        geometry = self.layer.geometry(x_pruned.shape[2:])
        if geometry is not None:
            images, rows, cols = sample_pixels(np.arange(len(x_pruned)), geometry.out_hw(x_pruned.shape[2:]),
                                               self.per_image, self.rng)
            x = extract_patches(x_pruned, geometry, images, rows, cols)
            x0 = extract_patches(x_original, geometry, images, rows, cols)
        else:
            x, x0 = x_pruned, x_original
        self.moments.add(x, x0 @ self.weight.T + self.bias)

    def problem(self) -> LayerProblem:
        return self.moments.problem(self.channel_of_feature, self.n_channels)


def layer_statistics(recorder: LayerRecorder, x_pruned: StoredTensor, x_original: StoredTensor,
                     batch_size: int) -> LayerProblem:
    """Feed the stored activations of both networks to a recorder, one batch of each at a time."""
    for batch_pruned, batch_original in zip(x_pruned.batches(batch_size), x_original.batches(batch_size)):
        recorder.add(batch_pruned, batch_original)
    return recorder.problem()


def original_statistics(graph: gs.Graph, feeds: dict[str, np.ndarray],
                        requests: dict[str, tuple[str, LayerRecorder]], batch_size: int) -> dict[str, LayerProblem]:
    """Statistics of layers further down the original network, in one streamed forward pass.

    ``requests`` maps a layer name to (the tensor it reads, its recorder); the result maps the
    layer name to its problem. Only one batch of activations is held at a time.
    """
    tensors = sorted({tensor for tensor, _ in requests.values()})
    inputs = [t.name for t in graph.inputs]
    session = make_session(segment_model(graph, {n.name for n in graph.nodes}, inputs, tensors,
                                         {name: feeds[name].dtype for name in inputs}))
    # The segment's inputs declare no shapes: the batch the model fixes is read from the graph's.
    fixed = declared_batch(t.shape for t in graph.inputs)
    for _, values in run_arrays(session, tensors, feeds, batch_size, fixed):
        batch = dict(zip(tensors, values))
        for tensor, recorder in requests.values():
            recorder.add(batch[tensor], batch[tensor])
    return {name: recorder.problem() for name, (_, recorder) in requests.items()}
