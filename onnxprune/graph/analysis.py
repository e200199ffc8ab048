"""Find the prunable layers and, for each, where its input channels come from.

A *layer* is a Conv (group 1) or a Gemm/MatMul with a constant 2-D weight: a linear map the GES
regression can reconstruct. For each layer we walk its data input back through channelwise ops
(rules.CHANNELWISE) and at most one Flatten, to the layer that produced those channels. If the
walk reaches such a producer along a single-consumer path, the channels are prunable: removing
input channel c of the consumer removes output channel c of the producer and of everything on the
path. Otherwise the channels are frozen and ``frozen`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.io import constant_values
from onnxprune.graph.rules import CHANNELWISE, FLATTENING, channelwise_problem, flatten_problem


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


@dataclass(eq=False)
class InputChannels:
    """The input channels of one layer and everything that must change when some are removed."""

    consumer: Layer
    n_channels: int
    producer: Layer | None = None
    path: list[gs.Node] = field(default_factory=list)  # channelwise nodes, producer side first
    flatten: gs.Node | None = None
    block: int = 1  # consumer features per channel: kh*kw for a Conv, H*W after a Flatten
    frozen: str | None = None

    @property
    def prunable(self) -> bool:
        return self.frozen is None


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


def trace_input_channels(layer: Layer, by_node: dict[str, Layer], shapes: dict[str, tuple],
                         graph_outputs: set[str]) -> InputChannels:
    """Walk the consumer's data input back to the layer that produced its channels."""
    block = int(np.prod(layer.weight.shape[2:])) if layer.is_conv else 1
    group = InputChannels(consumer=layer, n_channels=layer.in_channels, block=block)
    tensor = layer.node.inputs[0]
    while True:
        if tensor.name in graph_outputs:
            group.frozen = f"tensor '{tensor.name}' is a graph output"
            return group
        if len(tensor.outputs) != 1:
            group.frozen = f"tensor '{tensor.name}' feeds {len(tensor.outputs)} nodes (branches are not supported yet)"
            return group
        if not tensor.inputs:
            group.frozen = f"channels come from graph input '{tensor.name}'"
            return group
        node = tensor.inputs[0]
        producer = by_node.get(node.name)
        if producer is not None:
            return _attach_producer(group, producer)
        if node.op in CHANNELWISE:
            problem = channelwise_problem(node, group.n_channels)  # before a Flatten: its C
            if problem:
                group.frozen = f"{node.op} '{node.name}': {problem}"
                return group
            group.path.insert(0, node)
        elif node.op in FLATTENING and group.flatten is None and not layer.is_conv:
            problem = flatten_problem(node, shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name))
            if problem:
                group.frozen = problem
                return group
            in_shape = shapes[node.inputs[0].name]
            group.flatten = node
            group.block = int(np.prod(in_shape[2:]))
            group.n_channels = int(in_shape[1])
        else:
            group.frozen = f"channels pass through {node.op} '{node.name}', which has no channel rule"
            return group
        tensor = node.inputs[0]


def _attach_producer(group: InputChannels, producer: Layer) -> InputChannels:
    group.producer = producer
    if producer.out_channels != group.n_channels:
        group.frozen = (f"'{producer.name}' has {producer.out_channels} output channels but "
                        f"'{group.consumer.name}' sees {group.n_channels}")
    return group


def analyse(graph: gs.Graph, shapes: dict[str, tuple], exclude: frozenset[str] = frozenset()):
    """Layers in topological order with their input-channel groups, and non-layer linear nodes."""
    layers, skipped = find_layers(graph, shapes)
    by_node = {layer.name: layer for layer in layers}
    outputs = {t.name for t in graph.outputs}
    groups = [trace_input_channels(layer, by_node, shapes, outputs) for layer in layers]
    for group in groups:
        excluded = [l.name for l in (group.consumer, group.producer) if l is not None and l.name in exclude]
        if group.prunable and excluded:
            group.frozen = f"'{excluded[0]}' is excluded (--exclude)"
    return groups, skipped


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
