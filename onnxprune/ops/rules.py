"""What each op does to channels: the rule registry the channel analysis walks.

A channel of a tensor is an index on axis 1 (NCHW, or the feature axis of a 2-D tensor). The
analysis gives every tracked tensor a vector of channel ids (see ``channels.py``); a rule takes a
node and the id vectors of its inputs and says what its outputs carry, which ids it makes equal
(a residual Add), which constants hold one value per channel (sliced with the channels), and how
the rewrite must treat the node. A rule that cannot map the node exactly returns the reason as a
string, and the channels it touches are frozen. Any op not in RULES freezes its channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.io import constant_values


@dataclass
class Coupling:
    """What one node does to channels.

    role : how the rewrite treats the node: "pass" (nothing to edit beyond ``params``),
        "depthwise" (also its group attribute), "split", "slice", "flatten" (a Reshape's target).
    outputs : the id vector of each output (None for an output without channels).
    unify : pairs of id vectors of equal length whose ids are the same channels.
    params : (constant, axis) for each constant that holds one value per channel on that axis.
    """

    role: str
    outputs: list[np.ndarray | None]
    unify: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    params: list[tuple[gs.Constant, int]] = field(default_factory=list)
    slice_entry: int = 0  # for role "slice": which entry of starts/ends is the channel axis


Shapes = dict[str, tuple]
Rule = Callable[[gs.Node, list, Shapes], "Coupling | str"]

_ACTIVATIONS = (
    "Relu LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Gelu Mish Softplus Softsign "
    "ThresholdedRelu Clip Abs Neg Erf Identity Dropout Sqrt Exp Log Reciprocal Floor Ceil Round Sign Cast"
).split()
_POOLS = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool".split()
# Per-channel parameter inputs of the channelwise ops that have them.
_PER_CHANNEL_INPUTS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "PRelu": (1,)}
_NORMALISATIONS = ("BatchNormalization", "InstanceNormalization")
_ELEMENTWISE = "Add Sub Mul Div Sum Max Min Mean Pow".split()


def channel_axis(values: np.ndarray, rank: int) -> int | None:
    """Where a constant broadcast against a rank-``rank`` tensor puts the channel axis (None: it does not reach it)."""
    axis = values.ndim - (rank - 1)
    return axis if 0 <= axis < values.ndim else None


def _constant_params(node: gs.Node, inputs: range | tuple, n_channels: int, rank: int):
    """Check constant inputs: scalars, or one value per channel along the channel axis.

    Returns the (constant, axis) pairs to slice, or the reason the node cannot be pruned through.
    """
    params = []
    for index in inputs:
        if index >= len(node.inputs) or node.inputs[index].name == "":
            continue
        tensor = node.inputs[index]
        values = constant_values(tensor)
        if values is None:
            return f"input {index} ('{tensor.name}') is not a constant"
        if values.size == 1:
            continue
        # Normalisations hold plain (C,) vectors; the others broadcast against the data.
        axis = 0 if node.op in _NORMALISATIONS else channel_axis(values, rank)
        others = [d for i, d in enumerate(values.shape) if i != axis]
        if axis is None or values.shape[axis] != n_channels or any(d != 1 for d in others):
            return f"constant '{tensor.name}' of shape {values.shape} is not one value per channel ({n_channels})"
        if not isinstance(tensor, gs.Constant) or len(tensor.outputs) > 1:
            return f"per-channel constant '{tensor.name}' is shared with other nodes"
        params.append((tensor, axis))
    return params


def _rank(tensor: gs.Tensor, shapes: Shapes, default: int | None = None) -> int | None:
    shape = shapes.get(tensor.name)
    return len(shape) if shape is not None else default


def channelwise(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """Channel c in, channel c out: activations, pools, normalisations."""
    ids = maps[0]
    if node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].outputs:
        return "MaxPool's Indices output is used"
    per_channel = _PER_CHANNEL_INPUTS.get(node.op, ())
    for index, tensor in enumerate(node.inputs[1:], start=1):
        values = constant_values(tensor) if tensor.name else np.zeros(1)
        if index not in per_channel and (values is None or values.size != 1):
            return f"input {index} ('{tensor.name}') is not a scalar constant"
    params = _constant_params(node, per_channel, ids.size, _rank(node.inputs[0], shapes, 4))
    if isinstance(params, str):
        return params
    return Coupling("pass", [ids] + [None] * (len(node.outputs) - 1), params=params)


def elementwise(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """Add/Mul/... over tensors with the same channels ties them; constants must be per-channel or scalar."""
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
    params = _constant_params(node, constants, n_channels, rank)
    if isinstance(params, str):
        return params
    return Coupling("pass", [carried[0]], unify=[(carried[0], other) for other in carried[1:]], params=params)


def depthwise_conv(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """A depthwise Conv (group = channels, one filter each) passes channel c to channel c."""
    ids = maps[0]
    weight = constant_values(node.inputs[1])
    if node.attrs.get("group", 1) != ids.size or weight is None or weight.shape[:2] != (ids.size, 1):
        group = node.attrs.get("group", 1)
        return f"grouped Conv (group={group}, weight {None if weight is None else weight.shape}) is not depthwise"
    params = _constant_params(node, (2,), ids.size, 2)
    if isinstance(params, str):
        return params
    if not isinstance(node.inputs[1], gs.Constant) or len(node.inputs[1].outputs) > 1:
        return f"weight '{node.inputs[1].name}' is not a constant of its own"
    return Coupling("depthwise", [ids], params=[(node.inputs[1], 0)] + params)


def concat(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """On the channel axis the output's channels are the inputs' channels in order; on any other
    axis channel c of every input is channel c of the output."""
    rank = _rank(node.outputs[0], shapes)
    if rank is None or any(m is None for m in maps):
        return "an input's channels or the output rank are unknown"
    axis = node.attrs.get("axis", 1) % rank
    if axis == 1:
        return Coupling("pass", [np.concatenate(maps)])
    if any(m.size != maps[0].size for m in maps):
        return "inputs with different channel counts"
    return Coupling("pass", [maps[0]], unify=[(maps[0], m) for m in maps[1:]])


def split(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """Split on the channel axis cuts the id vector; on another axis every output keeps it."""
    rank = _rank(node.inputs[0], shapes)
    if rank is None:
        return "input rank unknown"
    if node.attrs.get("axis", 0) % rank != 1:
        return Coupling("pass", [maps[0]] * len(node.outputs))
    sizes = [shapes.get(t.name, (None, None))[1] for t in node.outputs]
    if any(not isinstance(s, (int, np.integer)) for s in sizes) or sum(sizes) != maps[0].size:
        return "split sizes on the channel axis are unknown"
    bounds = np.cumsum([0] + list(sizes))
    return Coupling("split", [maps[0][a:b] for a, b in zip(bounds[:-1], bounds[1:])])


def slice_(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """A unit-step Slice of the channel axis keeps a contiguous run of ids."""
    rank = _rank(node.inputs[0], shapes)
    values = [constant_values(t) if i < len(node.inputs) and node.inputs[i].name else None
              for i, t in zip(range(1, 5), node.inputs[1:5])] if len(node.inputs) > 1 else []
    if len(node.inputs) < 3 or rank is None or any(v is None for v in values):
        return "Slice without constant starts/ends (or an opset < 10 Slice)"
    starts, ends = values[0], values[1]
    axes = values[2] if len(values) > 2 else np.arange(len(starts))
    steps = values[3] if len(values) > 3 else np.ones(len(starts), dtype=np.int64)
    on_channels = [i for i, a in enumerate(axes) if int(a) % rank == 1]
    if not on_channels:
        return Coupling("pass", [maps[0]])
    i = on_channels[0]
    if int(steps[i]) != 1:
        return f"Slice of the channel axis with step {int(steps[i])}"
    begin, end, _ = slice(int(starts[i]), int(ends[i])).indices(maps[0].size)
    return Coupling("slice", [maps[0][begin:end]], slice_entry=i)


def pad(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """Pad passes channels through when it pads nothing on the channel axis."""
    pads = node.attrs.get("pads") if len(node.inputs) < 2 else constant_values(node.inputs[1])
    if pads is None or (len(node.inputs) > 3 and node.inputs[3].name):
        return "pads are not constant (or Pad has an axes input)"
    pads = np.asarray(pads).reshape(-1)
    rank = pads.size // 2
    if rank < 2 or pads[1] != 0 or pads[1 + rank] != 0:
        return "Pad pads the channel axis"
    return Coupling("pass", [maps[0]])


def resize(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """Resize/Upsample by scales (1 on the channel axis) passes channels through; by sizes it names
    the channel count and is frozen."""
    if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name:
        return "Resize by explicit sizes (they would name the channel count)"
    scale_input = 2 if node.op == "Resize" else 1
    scales = node.attrs.get("scales") if len(node.inputs) <= scale_input else constant_values(node.inputs[scale_input])
    if scales is None or np.asarray(scales).size < 2 or float(np.asarray(scales).reshape(-1)[1]) != 1.0:
        return "scales are not constant, or scale the channel axis"
    return Coupling("pass", [maps[0]])


def squeeze(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """Squeeze/Unsqueeze of axes after the channel axis keeps channels on axis 1."""
    axes = node.attrs.get("axes") if len(node.inputs) < 2 else constant_values(node.inputs[1])
    in_shape, out_shape = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
    if axes is None or in_shape is None or out_shape is None:
        return "axes or shapes unknown"
    rank = max(len(in_shape), len(out_shape))
    if any(int(a) % rank < 2 for a in np.asarray(axes).reshape(-1)):
        return "it moves the channel axis"
    return Coupling("pass", [maps[0]])


def reduce_spatial(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """A reduction over spatial axes only (the dynamo exporter's global average pool) keeps channels."""
    axes = node.attrs.get("axes") if len(node.inputs) < 2 or not node.inputs[1].name else constant_values(node.inputs[1])
    rank = _rank(node.inputs[0], shapes)
    if axes is None or rank is None:
        return "axes or input rank unknown (a reduction over all axes reaches the channels)"
    if any(int(a) % rank < 2 for a in np.asarray(axes).reshape(-1)):
        return "it reduces the batch or channel axis"
    return Coupling("pass", [maps[0]])


def flatten(node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
    """(N, C, H, W) -> (N, C*H*W): channel c becomes the block of H*W features c*H*W ... (c+1)*H*W-1."""
    in_shape, out_shape = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
    if in_shape is None or out_shape is None or len(out_shape) != 2 or len(in_shape) < 2:
        return "it does not map a known N x C x ... shape to 2-D"
    if node.op == "Flatten" and node.attrs.get("axis", 1) != 1:
        return f"axis {node.attrs.get('axis')} (only axis 1 keeps channels in blocks)"
    tail = in_shape[1:]
    if any(not isinstance(d, (int, np.integer)) for d in tail) or out_shape[1] != int(np.prod(tail)):
        return "it does not flatten the channel axis with the spatial axes"
    block = int(np.prod(tail[1:]))
    return Coupling("flatten" if node.op == "Reshape" else "pass", [np.repeat(maps[0], block)])


RULES: dict[str, Rule] = {
    **{op: channelwise for op in _ACTIVATIONS + _POOLS + list(_PER_CHANNEL_INPUTS)},
    **{op: elementwise for op in _ELEMENTWISE},
    "Conv": depthwise_conv,  # group-1 Convs with constant weights are layers, handled before the rules
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Pad": pad,
    "Resize": resize,
    "Upsample": resize,
    "Squeeze": squeeze,
    **{op: reduce_spatial for op in "ReduceMean ReduceMax ReduceMin ReduceSum ReduceL2 ReduceL1".split()},
    "Unsqueeze": squeeze,
    "Flatten": flatten,
    "Reshape": flatten,
}
# Ops whose data input is input 0 alone; the others read every input as data (elementwise, Concat).
DATA_INPUT_ZERO = set(RULES) - set(_ELEMENTWISE) - {"Concat"}
