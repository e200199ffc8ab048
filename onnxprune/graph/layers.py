"""Layers: the linear nodes (Conv with group 1, Gemm/MatMul with a constant 2-D weight) whose
input channels the GES regression selects and whose weights it reconstructs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.io import constant_values


@dataclass(eq=False)
class Layer:
    """A Conv or Gemm/MatMul node with a constant weight, seen as y = W x + b over channels."""

    node: gs.Node

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def weight_tensor(self) -> gs.Constant:
        return self.node.inputs[1]

    @property
    def weight(self) -> np.ndarray:
        """Canonical weight: (out, in, kh, kw) for a Conv, (out, in) for a Gemm/MatMul."""
        values = np.asarray(self.weight_tensor.values)
        if self.node.op == "Conv":
            return values
        if self.node.op == "MatMul" or not self.node.attrs.get("transB", 0):
            return values.T
        return values

    @property
    def bias(self) -> np.ndarray:
        inputs = self.node.inputs
        if len(inputs) > 2 and inputs[2].name != "":
            values = np.asarray(inputs[2].values, dtype=np.float64)
            return np.broadcast_to(values.reshape(-1), (self.out_channels,)).copy()
        return np.zeros(self.out_channels)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def is_conv(self) -> bool:
        return self.node.op == "Conv"


def as_layer(node: gs.Node, shapes: dict[str, tuple]) -> tuple[Layer | None, str | None]:
    """A Layer for a supported linear node, or the reason it is not one."""
    if node.op not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
        return None, None
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant):
        return None, f"{node.op} '{node.name}' has a weight that is not a constant initializer"
    if len(weight.outputs) > 1:
        return None, f"{node.op} '{node.name}' shares its weight '{weight.name}' with other nodes"
    if len(node.inputs) > 2 and node.inputs[2].name != "" and not isinstance(node.inputs[2], gs.Constant):
        return None, f"{node.op} '{node.name}' has a bias that is not a constant"
    if node.op == "Conv":
        if node.attrs.get("group", 1) != 1:
            return None, f"Conv '{node.name}' is grouped (group={node.attrs['group']})"
        if weight.values.ndim != 4:
            return None, f"Conv '{node.name}' is not 2-D (weight rank {weight.values.ndim})"
        return Layer(node), None
    if weight.values.ndim != 2:
        return None, f"{node.op} '{node.name}' has a weight of rank {weight.values.ndim}, not 2"
    if node.op == "Gemm" and (node.attrs.get("transA", 0) or node.attrs.get("alpha", 1.0) != 1.0
                              or node.attrs.get("beta", 1.0) != 1.0):
        return None, f"Gemm '{node.name}' uses transA/alpha/beta"
    in_shape = shapes.get(node.inputs[0].name)
    if in_shape is None or len(in_shape) != 2:
        return None, f"{node.op} '{node.name}' has an input that is not known to be 2-D"
    return Layer(node), None


def find_layers(graph: gs.Graph, shapes: dict[str, tuple]) -> tuple[list[Layer], dict[str, str]]:
    """All layers in topological order, and the linear nodes that are not layers, with reasons."""
    layers, skipped = [], {}
    for node in graph.nodes:
        layer, reason = as_layer(node, shapes)
        if layer is not None:
            layers.append(layer)
        elif reason:
            skipped[node.name] = reason
    return layers, skipped


def following_batchnorm(node: gs.Node) -> gs.Node | None:
    """The BatchNormalization that alone consumes the node's output, if there is one."""
    consumers = node.outputs[0].outputs
    return consumers[0] if len(consumers) == 1 and consumers[0].op == "BatchNormalization" else None


def output_gain(layer: Layer) -> np.ndarray | None:
    """|gamma / sqrt(var + eps)| of a BatchNormalization right after the layer: how much an error on
    each output channel is amplified downstream. None when no such BatchNormalization follows."""
    bn = following_batchnorm(layer.node)
    if bn is None:
        return None
    scale, var = constant_values(bn.inputs[1]), constant_values(bn.inputs[4])
    if scale is None or var is None or scale.size != layer.out_channels or var.size != layer.out_channels:
        return None
    return np.abs(scale.astype(np.float64)) / np.sqrt(var.astype(np.float64) + bn.attrs.get("epsilon", 1e-5))
