"""What every op entry is: how it couples channel ids (analysis) and how it is shrunk (rewrite).

A channel of a tensor is an index on axis 1 (NCHW, or the feature axis of a 2-D tensor). The
analysis (``graph/channels.py``) gives every tracked tensor a vector of channel ids; an entry's
:meth:`OpRule.couple` takes a node and the id vectors of its inputs and says what its outputs
carry, which ids it makes equal (a residual Add) and which constants hold one value per channel.
When channels are removed, :meth:`OpRule.shrink` edits the node to match: it gets the keep mask
of every tensor that lost channels. An entry that cannot map a node exactly returns the reason
as a string from ``couple``, and the channels the node touches are frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.constants import constant_values

Shapes = dict[str, tuple]


@dataclass
class Coupling:
    """What one node does to channels.

    outputs : the id vector of each output (None for an output without channels).
    unify : pairs of id vectors of equal length whose ids are the same channels.
    params : (constant, axis) for each constant that holds one value per channel on that axis.
    entry : an op's own note for its shrink (Slice: which entry of starts/ends is the channel axis).
    fresh : output index -> channel count, for a producer whose outputs are new channels (not its
        inputs'): the analysis gives that output fresh ids (and sets ``outputs`` to them).
    freeze : (ids, reason) for channels the node reads but cannot drop (a producer nothing refits):
        they are kept, and the reason is what the report says of them.
    """

    outputs: list[np.ndarray | None]
    unify: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    params: list[tuple[gs.Constant, int]] = field(default_factory=list)
    entry: int = 0
    fresh: dict[int, int] = field(default_factory=dict)
    freeze: list[tuple[np.ndarray, str]] = field(default_factory=list)
    blocks: int = 1  # output 0 is this many equal blocks that must lose the same count (a grouped Conv's groups)


@dataclass(frozen=True)
class Edit:
    """What a shrink needs to know of the removal: the keep mask of each tensor that lost channels,
    the channel count of any tracked tensor before the removal, and the graph's opset."""

    keep_of: dict[str, np.ndarray]
    channels_of: Callable[[str], int]
    opset: int

    def keep(self, tensor: gs.Tensor) -> np.ndarray | None:
        return self.keep_of.get(tensor.name)


class OpRule:
    """The facts of one op (or op family). Subclasses override what differs.

    data_inputs : "first" when input 0 alone carries channels (the others are parameters or
        shapes), "all" when every non-constant input does (element-wise ops, Concat).
    all_tracked : whether every data input must have tracked channels (Concat) or the first will do.
    untracked_ok : whether ``couple`` is asked even when the first input's channels are not tracked
        (a producer of new channels; its ``maps[0]`` is then None).
    """

    data_inputs = "first"
    all_tracked = False
    untracked_ok = False

    def refuse(self, node: gs.Node, shapes: Shapes) -> str | None:
        """A reason to freeze the node before its inputs' channels are looked at (None: go on)."""
        return None

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        raise NotImplementedError

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        """Remove the channels that went: by default, the per-channel constants follow the output."""
        keep_out = edit.keep(node.outputs[0])
        if keep_out is not None:
            for constant, axis in coupling.params:
                constant.values = slice_per_channel(np.asarray(constant.values), keep_out, axis)

    def macs(self, node: gs.Node, shapes: Shapes) -> int:
        """Multiply-accumulates for a single sample (0: the op has none worth counting)."""
        return 0

    def param_macs(self, node: gs.Node, constant: gs.Constant, shapes: Shapes) -> float:
        """MACs per sample that each value of one of the node's per-channel constants costs (0 for
        scales and biases; a producer's weight costs its uses per sample)."""
        return 0.0

    def producer_rows(self, node: gs.Node) -> np.ndarray | None:
        """For a producer of new channels (``Coupling.fresh``): its weight as (output channel, -1),
        what filter-norm selectors score (None: it has none)."""
        return None

    def output_gain(self, node: gs.Node, n_channels: int) -> np.ndarray | None:
        """When this node alone reads a layer's output: how much an error on each of its channels
        is amplified (None: not known, taken as uniform)."""
        return None

    def absorb_bias(self, node: gs.Node, bias: np.ndarray) -> bool:
        """When this node alone reads a layer's output: fold y + bias into this node's own
        constants, so the layer needs no bias input (False: it cannot)."""
        return False


def channel_axis(values: np.ndarray, rank: int) -> int | None:
    """Where a constant broadcast against a rank-``rank`` tensor puts the channel axis (None: it does not reach it)."""
    axis = values.ndim - (rank - 1)
    return axis if 0 <= axis < values.ndim else None


def constant_params(node: gs.Node, inputs: range | tuple, n_channels: int, rank: int, *, plain_vectors: bool = False):
    """Check constant inputs: scalars, or one value per channel along the channel axis.

    ``plain_vectors``: the constants are (C,) vectors (normalisations) rather than tensors that
    broadcast against the data. Returns the (constant, axis) pairs to slice, or the reason the
    node cannot be pruned through.
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
        axis = 0 if plain_vectors else channel_axis(values, rank)
        others = [d for i, d in enumerate(values.shape) if i != axis]
        if axis is None or values.shape[axis] != n_channels or any(d != 1 for d in others):
            return f"constant '{tensor.name}' of shape {values.shape} is not one value per channel ({n_channels})"
        if not isinstance(tensor, gs.Constant) or len(tensor.outputs) > 1:
            return f"per-channel constant '{tensor.name}' is shared with other nodes"
        params.append((tensor, axis))
    return params


def rank_of(tensor: gs.Tensor, shapes: Shapes, default: int | None = None) -> int | None:
    shape = shapes.get(tensor.name)
    return len(shape) if shape is not None else default


def is_fixed(dims) -> bool:
    return all(isinstance(d, (int, np.integer)) for d in dims)


def slice_per_channel(values: np.ndarray, keep: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(values, np.flatnonzero(keep), axis=axis))


def set_constant_input(node: gs.Node, index: int, values: np.ndarray) -> None:
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


def sole_consumer(node: gs.Node) -> gs.Node | None:
    """The node that alone reads the node's first output, if there is one."""
    consumers = node.outputs[0].outputs
    return consumers[0] if len(consumers) == 1 else None
