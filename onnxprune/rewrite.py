"""Apply pruning decisions to the graph: remove channels, install reconstructed weights.

All edits go through onnx-graphsurgeon constants; channel counts of intermediate tensors are
left unset here and inferred again when the model is exported.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.analysis import InputChannels, Layer, following_batchnorm
from onnxprune.graph.rules import per_channel_params


def remove_channels(group: InputChannels, keep: np.ndarray) -> None:
    """Remove the channels not in ``keep`` from the producer and every node on the path.

    The consumer's weight is not touched here: :func:`set_weights` installs its refit weights.
    """
    if group.producer is None:
        raise ValueError(f"'{group.consumer.name}': cannot remove channels without a producer")
    _remove_output_channels(group.producer, keep)
    for node in group.path:
        for tensor in per_channel_params(node):
            tensor.values = slice_per_channel(np.asarray(tensor.values), keep)
    if group.flatten is not None and group.flatten.op == "Reshape":
        shape = group.flatten.inputs[1]
        # (N, C*H*W) with C reduced: keep the batch dim, let the rest follow.
        shape_values = np.array([0, -1], dtype=np.int64)
        if isinstance(shape, gs.Constant) and len(shape.outputs) == 1:
            shape.values = shape_values
        else:
            group.flatten.inputs[1] = gs.Constant(f"{group.flatten.name}_onnxprune_shape", shape_values)


def slice_per_channel(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Slice a parameter holding one value per channel, whatever its broadcast shape ((C,), (C,1,1), ...)."""
    new_shape = tuple(int(keep.sum()) if dim == keep.size else dim for dim in values.shape)
    return np.ascontiguousarray(values.reshape(-1)[keep].reshape(new_shape))


def _remove_output_channels(layer: Layer, keep: np.ndarray) -> None:
    node = layer.node
    weight = np.asarray(layer.weight_tensor.values)
    if node.op == "Conv" or (node.op == "Gemm" and node.attrs.get("transB", 0)):
        layer.weight_tensor.values = np.ascontiguousarray(weight[keep])
    else:  # Gemm without transB, MatMul: (in, out)
        layer.weight_tensor.values = np.ascontiguousarray(weight[:, keep])
    if len(node.inputs) > 2 and node.inputs[2].name != "":
        bias = np.asarray(node.inputs[2].values)
        if bias.size == keep.size:
            node.inputs[2].values = slice_per_channel(bias, keep)
        elif bias.size != 1:
            raise ValueError(f"'{node.name}': bias of shape {bias.shape} cannot be pruned per channel")


def set_weights(layer: Layer, weight: np.ndarray, bias: np.ndarray) -> None:
    """Install a canonical weight ((out, in, kh, kw) or (out, in)) and a bias on the layer.

    A layer without a bias input gets one (the regression's intercept needs a home); a MatMul
    becomes the equivalent Gemm, which has a bias slot, under the same node name.
    """
    node = layer.node
    dtype = np.asarray(layer.weight_tensor.values).dtype
    if node.op == "MatMul":
        node.op = "Gemm"
        node.attrs = {"transB": 1}
    if node.op == "Gemm" and not node.attrs.get("transB", 0):
        layer.weight_tensor.values = np.ascontiguousarray(weight.T.astype(dtype))
    else:
        layer.weight_tensor.values = np.ascontiguousarray(weight.astype(dtype))
    bias_values = np.ascontiguousarray(bias.astype(dtype))
    if len(node.inputs) > 2 and node.inputs[2].name != "" and len(node.inputs[2].outputs) == 1:
        node.inputs[2].values = bias_values
    elif (norm_mean := _following_norm_mean(node, bias.size)) is not None:
        # BN(y + b) = BN'(y) with running mean - b: the intercept costs no new parameter.
        norm_mean.values = np.ascontiguousarray((norm_mean.values - bias).astype(norm_mean.values.dtype))
    else:
        new_bias = gs.Constant(f"{node.name}_onnxprune_bias", bias_values)
        if len(node.inputs) > 2:
            node.inputs[2] = new_bias
        else:
            node.inputs.append(new_bias)


def _following_norm_mean(node: gs.Node, n_channels: int) -> gs.Constant | None:
    """The running-mean constant of a BatchNormalization that alone consumes the node's output."""
    bn = following_batchnorm(node)
    if bn is None:
        return None
    mean = bn.inputs[3]
    if not isinstance(mean, gs.Constant) or len(mean.outputs) != 1 or mean.values.size != n_channels:
        return None
    return mean
