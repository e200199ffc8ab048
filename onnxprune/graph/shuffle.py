"""Channel shuffles as Gathers, so that channels can be followed through them.

ShuffleNet (v1 and v2) interleaves the channels of g groups with Reshape (N, C, H, W) -> (N, g,
C/g, H, W), Transpose (0, 2, 1, 3, 4) and Reshape back to (N, C, H, W). Each of those reshapes
on its own splits or merges the channel axis, which no channel rule can follow; the three
together are a fixed permutation of the channels, out[j] = in[(j % g) * (C / g) + j // g]: a
Gather on axis 1 with constant indices, which ``ops/gather.py`` ties channel by channel and
renumbers as channels leave. The rewrite is exact for any batch and spatial size.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.base import Shapes, sole_consumer


def shuffle_indices(groups: int, channels: int) -> np.ndarray:
    """Where each output channel of a shuffle of ``groups`` groups comes from."""
    j = np.arange(channels)
    return (j % groups) * (channels // groups) + j // groups


def shuffles_as_gathers(graph: gs.Graph, shapes: Shapes) -> int:
    """Replace every channel shuffle of the graph by the equivalent Gather; how many."""
    outputs = {t.name for t in graph.outputs}
    replaced = 0
    for node in list(graph.nodes):
        found = _shuffle_at(node, shapes, outputs)
        if found is None:
            continue
        groups, channels, last = found
        gather = gs.Node("Gather", f"{last.name}_channel_shuffle", attrs={"axis": 1},
                         inputs=[node.inputs[0], gs.Constant(f"{last.name}_channel_shuffle_indices",
                                                             shuffle_indices(groups, channels))],
                         outputs=[last.outputs[0]])
        last.outputs.clear()
        graph.nodes.append(gather)
        replaced += 1
    if replaced:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return replaced


def _shuffle_at(first: gs.Node, shapes: Shapes, outputs: set[str]) -> tuple[int, int, gs.Node] | None:
    """(groups, channels, the closing Reshape) when ``first`` opens a channel shuffle, else None."""
    if first.op != "Reshape" or not first.inputs or not first.outputs:
        return None
    transpose = sole_consumer(first)
    if transpose is None or transpose.op != "Transpose" or list(transpose.attrs.get("perm", [])) != [0, 2, 1, 3, 4]:
        return None
    last = sole_consumer(transpose)
    if last is None or last.op != "Reshape":
        return None
    if first.outputs[0].name in outputs or transpose.outputs[0].name in outputs:
        return None
    before, split = shapes.get(first.inputs[0].name), shapes.get(first.outputs[0].name)
    after = shapes.get(last.outputs[0].name)
    if before is None or split is None or after is None or len(before) != 4 or len(split) != 5:
        return None
    if not all(isinstance(d, (int, np.integer)) for d in (before[1], split[1], split[2])):
        return None
    groups, per_group = int(split[1]), int(split[2])
    if groups * per_group != before[1] or tuple(after) != tuple(before) or tuple(split[3:]) != tuple(before[2:]):
        return None
    return groups, int(before[1]), last
