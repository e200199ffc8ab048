"""Element-wise ops over several tensors (a residual Add, an attention Mul): they tie channels."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.constants import constant_values
from onnxprune.ops.base import Coupling, OpRule, Shapes, constant_params

ELEMENTWISE = "Add Sub Mul Div Sum Max Min Mean Pow".split()


class Elementwise(OpRule):
    """Inputs with the output's channels on axis 1 are tied channel by channel; inputs broadcast
    over the channels are not; constants must be per-channel or scalar."""

    data_inputs = "all"

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        out_shape = shapes.get(node.outputs[0].name)
        if out_shape is None or len(out_shape) < 2 or not isinstance(out_shape[1], (int, np.integer)):
            return "output shape unknown (cannot tell which inputs carry channels)"
        rank, n_channels = len(out_shape), int(out_shape[1])
        carried, constants = [], []
        for index, tensor in enumerate(node.inputs):
            if constant_values(tensor) is not None:
                constants.append(index)
                continue
            shape = shapes.get(tensor.name)
            if shape is None:
                return f"input '{tensor.name}' has an unknown shape"
            axis = len(shape) - (rank - 1)
            if axis < 0 or shape[axis] == 1:
                continue  # broadcast over the channels: not tied to them
            if axis != 1 or maps[index] is None or maps[index].size != n_channels:
                return f"input '{tensor.name}' does not carry the {n_channels} output channels on axis 1"
            carried.append(maps[index])
        if not carried:
            return "no input carries the channels"
        params = constant_params(node, constants, n_channels, rank)
        if isinstance(params, str):
            return params
        return Coupling([carried[0]], unify=[(carried[0], other) for other in carried[1:]], params=params)
