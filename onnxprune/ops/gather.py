"""Gather on the channel axis with constant indices.

Output channel j is input channel indices[j]. Two ways to follow that:

- *Own channels* (the selections ``pruning/readers.py`` puts in front of a reader, named with
  :data:`SELECTION_SUFFIX`, and any Gather that takes a channel twice): the output's channels get
  fresh ids, so the layers that read them decide them alone: removing output channel j drops
  indices[j], and nothing above changes. The input's channels are kept (frozen, with the reason),
  because the indices name them by position (only a channel that no index takes can leave).
- *Tied* (a model's own Gather that takes each channel at most once: a channel shuffle, see
  graph/shuffle.py, or a subset): output channel j is the same channel as input channel
  indices[j], removed from both sides at once; the indices are renumbered.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.base import Coupling, Edit, OpRule, Shapes, rank_of, set_constant_input
from onnxprune.ops.constants import constant_values


def selected_channels(node: gs.Node, shapes: Shapes) -> np.ndarray | str:
    """The channels a Gather takes (indices made non-negative), or why it is not a channel selection."""
    rank = rank_of(node.inputs[0], shapes)
    if rank is None or rank < 2:
        return "input rank unknown or below 2"
    if node.attrs.get("axis", 0) % rank != 1:
        return "it gathers on an axis other than the channels"
    indices = constant_values(node.inputs[1]) if len(node.inputs) > 1 else None
    if indices is None or indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        return "its indices are not a constant 1-D integer vector"
    channels = shapes.get(node.inputs[0].name, (None, None))[1]
    if not isinstance(channels, (int, np.integer)):
        return "the input's channel count is unknown"
    if indices.size == 0 or indices.min() < -channels or indices.max() >= channels:
        return f"indices out of range for {channels} channels"
    return indices.astype(np.int64) % int(channels)


PICKED = "picks from them by position for its readers"
SELECTION_SUFFIX = "_onnxprune_own_channels"  # the name ending of the Gathers pruning/readers.py inserts


def picked_reason(node_name: str) -> str:
    """Why a Gather's input channels are kept (frozen)."""
    return f"Gather '{node_name}' {PICKED}"


class ChannelGather(OpRule):
    untracked_ok = True  # its outputs are new channels even when its input's are not tracked

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        indices = selected_channels(node, shapes)
        if isinstance(indices, str):
            return indices
        ids = maps[0]
        if ids is not None and not node.name.endswith(SELECTION_SUFFIX) and np.unique(indices).size == indices.size:
            return Coupling([ids[indices]] + [None] * (len(node.outputs) - 1))
        freeze = [] if ids is None else [(ids, picked_reason(node.name))]
        return Coupling([None] * len(node.outputs), fresh={0: int(indices.size)}, freeze=freeze)

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        keep_out, keep_in = edit.keep(node.outputs[0]), edit.keep(node.inputs[0])
        if keep_out is None and keep_in is None:
            return  # neither side of this Gather lost a channel
        indices = np.asarray(node.inputs[1].values)
        if keep_out is not None:
            indices = indices[keep_out]
        if keep_in is not None:
            # Only channels no index takes leave the input (readers.unread_classes).
            indices = indices % keep_in.size
            if not keep_in[indices].all():
                raise ValueError(f"Gather '{node.name}': a channel it takes was removed from its input")
            indices = (np.cumsum(keep_in) - 1)[indices]
        set_constant_input(node, 1, np.ascontiguousarray(indices, dtype=np.int64))
