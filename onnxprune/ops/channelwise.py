"""Ops that map channel c to channel c: activations, pools, normalisations, PRelu."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.constants import constant_values
from onnxprune.ops.base import Coupling, OpRule, Shapes, constant_params, rank_of

ACTIVATIONS = (
    "Relu LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Gelu Mish Softplus Softsign "
    "ThresholdedRelu Clip Abs Neg Erf Identity Dropout Sqrt Exp Log Reciprocal Floor Ceil Round Sign Cast"
).split()
POOLS = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool".split()


class Channelwise(OpRule):
    """Channel c in, channel c out. Inputs after the first are scalars, except ``per_channel``
    ones, which hold one value per channel and are sliced with the channels."""

    per_channel: tuple[int, ...] = ()
    plain_vectors = False  # the per-channel inputs are (C,) vectors, not broadcast against the data

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        ids = maps[0]
        if node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].outputs:
            return "MaxPool's Indices output is used"
        for index, tensor in enumerate(node.inputs[1:], start=1):
            values = constant_values(tensor) if tensor.name else np.zeros(1)
            if index not in self.per_channel and (values is None or values.size != 1):
                return f"input {index} ('{tensor.name}') is not a scalar constant"
        params = constant_params(node, self.per_channel, ids.size, rank_of(node.inputs[0], shapes, 4),
                                 plain_vectors=self.plain_vectors)
        if isinstance(params, str):
            return params
        return Coupling([ids] + [None] * (len(node.outputs) - 1), params=params)


class PRelu(Channelwise):
    per_channel = (1,)


class InstanceNormalization(Channelwise):
    per_channel = (1, 2)
    plain_vectors = True


class BatchNormalization(Channelwise):
    """y = gamma (x - mean) / sqrt(var + eps) + beta, per channel."""

    per_channel = (1, 2, 3, 4)
    plain_vectors = True

    def output_gain(self, node: gs.Node, n_channels: int) -> np.ndarray | None:
        """|gamma / sqrt(var + eps)|: an error on channel c of the layer before reaches the output this much larger."""
        scale, var = constant_values(node.inputs[1]), constant_values(node.inputs[4])
        if scale is None or var is None or scale.size != n_channels or var.size != n_channels:
            return None
        return np.abs(scale.astype(np.float64)) / np.sqrt(var.astype(np.float64) + node.attrs.get("epsilon", 1e-5))

    def absorb_bias(self, node: gs.Node, bias: np.ndarray) -> bool:
        """BN(y + b) = BN'(y) with running mean - b: the intercept costs no new parameter."""
        mean = node.inputs[3]
        if not isinstance(mean, gs.Constant) or len(mean.outputs) != 1 or mean.values.size != bias.size:
            return False
        mean.values = np.ascontiguousarray((mean.values - bias).astype(mean.values.dtype))
        return True


class Softmax(Channelwise):
    """Softmax/LogSoftmax over an axis other than the channel axis (a spatial one) treats each
    channel alone. The check holds at every opset: before 13 the op flattens the axes from
    ``axis`` on, which reaches the channels only when axis <= 1."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        rank = rank_of(node.inputs[0], shapes)
        if "axis" not in node.attrs:
            return "no axis attribute: its default (1 before opset 13, -1 after) may be the channel axis"
        if rank is None:
            return "input rank unknown"
        if node.attrs["axis"] % rank < 2:
            return f"axis {node.attrs['axis']} of a rank-{rank} input normalises across channels"
        return super().couple(node, maps, shapes)


class AcrossChannels(OpRule):
    """An op whose every output channel depends on its neighbours (LRN sums the squares of ``size``
    adjacent channels): removing one changes the others, so the channels it reads are frozen, with
    that reason rather than "no rule"."""

    def refuse(self, node: gs.Node, shapes: Shapes) -> str | None:
        return f"it normalises each channel by its {node.attrs.get('size', 'n')} neighbouring channels"
