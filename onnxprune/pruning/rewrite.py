"""Apply pruning decisions to the graph: remove channels, install reconstructed weights.

All edits go through onnx-graphsurgeon constants; channel counts of intermediate tensors are
left unset here and inferred again when the model is exported.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.layers import Layer, following_batchnorm
from onnxprune.graph.channels import ChannelGraph


def remove_classes(channels: ChannelGraph, graph: gs.Graph, removed: np.ndarray) -> dict[str, np.ndarray]:
    """Remove every channel of the given classes from every tensor that carries one.

    Producers lose weight rows (and bias entries), consumers lose weight columns (their refit
    weights come later, from :func:`set_weights`), per-channel constants lose entries, and the ops
    that name channel counts (depthwise group, Split sizes, Slice bounds, a flattening Reshape's
    target) are updated. Returns the keep mask of each tensor that lost channels; ``channels.maps``
    is updated to match.
    """
    keep_of = {}
    for name, ids in channels.maps.items():
        keep = ~np.isin(channels.root_of[ids], removed)
        if not keep.all():
            keep_of[name] = keep
    layers = {layer.name: layer for layer in channels.layers}
    for node in graph.nodes:
        if node.name in layers:
            _remove_layer_channels(layers[node.name], keep_of.get(node.inputs[0].name),
                                   keep_of.get(node.outputs[0].name))
        elif node.name in channels.couplings:
            _rewrite_coupled(node, channels, keep_of, graph.opset)
    for name, keep in keep_of.items():
        channels.maps[name] = channels.maps[name][keep]
    return keep_of


def slice_per_channel(values: np.ndarray, keep: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(values, np.flatnonzero(keep), axis=axis))


def _remove_layer_channels(layer: Layer, keep_in: np.ndarray | None, keep_out: np.ndarray | None) -> None:
    node = layer.node
    weight = np.asarray(layer.weight_tensor.values)
    # Stored layouts: Conv (out, in, ...), Gemm with transB (out, in), Gemm/MatMul otherwise (in, out).
    out_axis = 0 if node.op == "Conv" or (node.op == "Gemm" and node.attrs.get("transB", 0)) else 1
    if keep_in is not None:
        weight = slice_per_channel(weight, keep_in, 1 - out_axis)
    if keep_out is not None:
        weight = slice_per_channel(weight, keep_out, out_axis)
        if len(node.inputs) > 2 and node.inputs[2].name != "":
            bias = np.asarray(node.inputs[2].values)
            if bias.size == keep_out.size:
                node.inputs[2].values = slice_per_channel(bias.reshape(-1), keep_out, 0).reshape(
                    tuple(int(keep_out.sum()) if d == keep_out.size else d for d in bias.shape))
            elif bias.size != 1:
                raise ValueError(f"'{node.name}': bias of shape {bias.shape} cannot be pruned per channel")
    layer.weight_tensor.values = weight


def _rewrite_coupled(node: gs.Node, channels: ChannelGraph, keep_of: dict[str, np.ndarray], opset: int) -> None:
    coupling = channels.couplings[node.name]
    keep_in = keep_of.get(node.inputs[0].name) if node.inputs else None
    keep_out = keep_of.get(node.outputs[0].name)
    if keep_out is not None:
        for constant, axis in coupling.params:
            constant.values = slice_per_channel(np.asarray(constant.values), keep_out, axis)
        if coupling.role == "depthwise":
            node.attrs["group"] = int(keep_out.sum())
    if keep_in is None:
        return
    if coupling.role == "flatten":
        # (N, C*H*W) with C reduced: keep the batch dim, let the rest follow.
        _set_constant_input(node, 1, np.array([0, -1], dtype=np.int64))
        node.attrs.pop("allowzero", None)  # 0 must mean "copy the batch dim"
    elif coupling.role == "split":
        sizes = np.array([int(keep_of[t.name].sum()) if t.name in keep_of else channels.maps[t.name].size
                          for t in node.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if opset >= 13:
            _set_constant_input(node, 1, sizes)
        else:
            node.attrs["split"] = [int(size) for size in sizes]
    elif coupling.role == "slice":
        _shrink_slice(node, keep_in, coupling.slice_entry)


def _shrink_slice(node: gs.Node, keep_in: np.ndarray, i: int) -> None:
    """Move a channel-axis Slice's bounds (entry ``i`` of starts/ends) to the same channels of the
    shrunken input."""
    starts, ends = (np.array(np.asarray(node.inputs[k].values)) for k in (1, 2))
    begin, end, _ = slice(int(starts[i]), int(ends[i])).indices(keep_in.size)
    starts[i] = int(keep_in[:begin].sum())
    ends[i] = starts[i] + int(keep_in[begin:end].sum())
    _set_constant_input(node, 1, starts)
    _set_constant_input(node, 2, ends)


def _set_constant_input(node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give the node its own constant at ``index`` (a shared one is left alone for its other readers)."""
    current = node.inputs[index] if index < len(node.inputs) else None
    if isinstance(current, gs.Constant) and len(current.outputs) == 1:
        current.values = values
        return
    constant = gs.Constant(f"{node.name}_onnxprune_in{index}", values)
    if current is None:
        while len(node.inputs) < index:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(constant)
    else:
        node.inputs[index] = constant


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
