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

    A grouped layer (``Layer.groups`` = g > 1) is g regressions: output group k reads only input
    group k (the k-th of g equal contiguous blocks of the input channels, in the pruned network as
    in the original), so :meth:`problems` gives one problem per group, over that group's features
    and surviving outputs. The sampled pixels are the same for every group.
    """

    def __init__(self, original: Layer, channel_of_feature: np.ndarray, n_channels: int, *, n_images: int,
                 rows_per_layer: int, rng: np.random.Generator, out_rows: np.ndarray | None = None) -> None:
        groups = original.groups
        weight = original.weight.reshape(original.out_channels, -1)
        bias = original.bias
        rows = np.ones(len(weight), dtype=bool) if out_rows is None else np.asarray(out_rows)
        channel_of_feature = np.asarray(channel_of_feature)
        if channel_of_feature.size % groups:
            raise ValueError(f"'{original.name}': {channel_of_feature.size} input features do not split into "
                             f"{groups} groups")
        per_group = channel_of_feature.size // groups
        self.groups = []  # (weight, bias, channel_of_feature, moments) of each group
        for k, (w, b, keep) in enumerate(zip(np.split(weight, groups), np.split(bias, groups), np.split(rows, groups))):
            w, b = (w, b) if out_rows is None else (w[keep], b[keep])
            features = channel_of_feature[k * per_group:(k + 1) * per_group]
            self.groups.append((w.astype(np.float32), b.astype(np.float32), features,
                                Moments(len(features), len(w))))
        self.layer = original
        self.per_image = max(1, math.ceil(rows_per_layer / max(n_images, 1)))
        self.n_channels = n_channels
        self.rng = rng

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
        # Channel-major features: group k's are the k-th contiguous block, in either network (an
        # ungrouped layer is the one block of all of them).
        step, step0 = x.shape[1] // len(self.groups), x0.shape[1] // len(self.groups)
        for k, (weight, bias, _, moments) in enumerate(self.groups):
            moments.add(x[:, k * step:(k + 1) * step], x0[:, k * step0:(k + 1) * step0] @ weight.T + bias)

    def problems(self) -> list[LayerProblem]:
        """The layer's regression, one per group (one for an ungrouped layer)."""
        return [moments.problem(features, self.n_channels) for _, _, features, moments in self.groups]


def layer_statistics(recorder: LayerRecorder, x_pruned: StoredTensor, x_original: StoredTensor,
                     batch_size: int) -> list[LayerProblem]:
    """Feed the stored activations of both networks to a recorder, one batch of each at a time;
    the layer's problems (one per group)."""
    for batch_pruned, batch_original in zip(x_pruned.batches(batch_size), x_original.batches(batch_size)):
        recorder.add(batch_pruned, batch_original)
    return recorder.problems()


def original_statistics(graph: gs.Graph, feeds: dict[str, np.ndarray],
                        requests: dict[str, tuple[str, LayerRecorder]], batch_size: int) -> dict[str, list[LayerProblem]]:
    """Statistics of layers further down the original network, in one streamed forward pass.

    ``requests`` maps a layer name to (the tensor it reads, its recorder); the result maps the
    layer name to its problems (one per group). Only one batch of activations is held at a time.
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
    return {name: recorder.problems() for name, (_, recorder) in requests.items()}
