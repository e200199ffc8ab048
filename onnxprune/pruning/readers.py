"""Readers of shared channels choose their own (``--reader-channels own``; UPSCALE, ICML 2023).

A residual stream's channels are read by every block of its stage: tied, removing one removes it
from every writer, every reader and the identity path at once, and the identity path carries the
damage to every later block (docs/method.md, "Where ResNet-18 loses its accuracy"). Instead each
layer that reads channels other layers also read gets a Gather on the channel axis in front of
it (``ops/gather.py``): the layer's input columns become a unit of their own, decided and refit by
its own regression, and the shared tensor keeps every channel. A Gather that still takes every
channel in order at the end is removed again, so only the readers that dropped something pay for
the copy.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.channels import ChannelGraph, analyse_channels
from onnxprune.ops.gather import PICKED, SELECTION_SUFFIX
from onnxprune.pruning.rewrite import remove_classes


def give_readers_own_channels(original: gs.Graph, pruned: gs.Graph, channels: ChannelGraph,
                              shapes: dict[str, tuple], exclude: frozenset[str],
                              max_features: int | None = None) -> tuple[ChannelGraph, list[str]]:
    """The same selections in front of the same readers of both graphs; the pruned graph's channels
    analysed again, and the Gathers' names."""
    readers = readers_of_shared_channels(channels)
    insert_selections(original, shapes, readers)
    selections = insert_selections(pruned, shapes, readers)
    return analyse_channels(pruned, shapes, exclude, max_features), selections


def settle_selections(pruned: gs.Graph, channels: ChannelGraph, selections: list[str]) -> str:
    """After the walk: the shared channels no reader took leave their writers, the Gathers that take
    everything go; what was done, in one line."""
    unread = unread_classes(channels, pruned)
    if unread.size:
        remove_classes(channels, pruned, unread)
    left = remove_full_selections(pruned, selections, channels)
    return (f"{left} of {len(selections)} readers of shared channels take a subset through a Gather; "
            f"{unread.size} shared channels that no reader took removed")


def readers_of_shared_channels(channels: ChannelGraph) -> list[str]:
    """The layers that read a unit other layers read too, and can take a selection in front of them:
    not grouped (a grouped Conv's groups must lose equal counts of the shared channels) and reading
    each channel once (not a flattened (N, C*H*W) input, where a channel is many features)."""
    names = []
    for unit in channels.units():
        if len(unit.consumers) < 2:
            continue
        for layer in unit.consumers:
            ids = channels.maps.get(layer.node.inputs[0].name)
            if layer.groups == 1 and ids is not None and np.unique(ids).size == ids.size:
                names.append(layer.name)
    return names


def insert_selections(graph: gs.Graph, shapes: dict[str, tuple], layer_names: list[str]) -> list[str]:
    """Put a Gather(axis=1, indices=0..C-1) in front of each named layer of ``graph`` (the same
    names give the same edit on the original and the pruned copy); ``shapes`` learns the new
    tensors. Returns the Gathers' names."""
    nodes = {node.name: node for node in graph.nodes}
    added = []
    for name in layer_names:
        node = nodes[name]
        source = node.inputs[0]
        shape = shapes[source.name]
        gather_name = f"{name}{SELECTION_SUFFIX}"
        indices = gs.Constant(f"{gather_name}/indices", np.arange(int(shape[1]), dtype=np.int64))
        selected = gs.Variable(f"{gather_name}/output", dtype=source.dtype)
        graph.nodes.append(gs.Node("Gather", name=gather_name, attrs={"axis": 1}, inputs=[source, indices],
                                   outputs=[selected]))
        node.inputs[0] = selected
        shapes[selected.name] = shape
        added.append(gather_name)
    graph.toposort()
    return added


def unread_classes(channels: ChannelGraph, graph: gs.Graph) -> np.ndarray:
    """Shared channels that no reader took: classes kept only because Gathers pick from them, that
    no Gather's indices name any more and that nothing else reads (no layer, graph output, graph
    input, op without a rule or producer of new channels). Removing them from their writers
    changes no output, so it is exact: the union of what the readers kept is what stays."""
    candidates = {c for c, reason in channels.frozen.items() if reason.endswith(PICKED)}
    if not candidates:
        return np.zeros(0, dtype=np.int64)
    layers = {layer.name for layer in channels.layers}
    interface = {t.name for t in graph.inputs + graph.outputs}
    tensors = graph.tensors()
    blocked: set[int] = set()
    for name, ids in channels.maps.items():
        classes = channels.root_of[ids]
        present = candidates.intersection(int(c) for c in np.unique(classes))
        if not present or name not in tensors:
            continue
        if name in interface:
            blocked |= present
            continue
        for reader in tensors[name].outputs:
            coupling = channels.couplings.get(reader.name)
            if reader.op == "Gather" and coupling is not None and coupling.fresh:
                taken = classes[np.asarray(reader.inputs[1].values) % classes.size]
                blocked |= present.intersection(int(c) for c in taken)
            elif (reader.name in layers or coupling is None or coupling.fresh
                  or any(t.name not in channels.maps for t in reader.outputs)):
                blocked |= present
            # otherwise the reader passes the channels on to tensors of its own, checked in turn
    return np.array(sorted(candidates - blocked), dtype=np.int64)


def remove_full_selections(graph: gs.Graph, gather_names: list[str], channels: ChannelGraph) -> int:
    """Bypass each named Gather that still takes every channel of its input in order; the number left."""
    wanted = set(gather_names)
    left = 0
    for node in [n for n in graph.nodes if n.name in wanted]:
        indices = np.asarray(node.inputs[1].values)
        source, selected = node.inputs[0], node.outputs[0]
        n_source = channels.maps[source.name].size if source.name in channels.maps else None
        if n_source is None or not np.array_equal(indices, np.arange(n_source)):
            left += 1
            continue
        for reader in list(selected.outputs):
            for i, tensor in enumerate(reader.inputs):
                if tensor is selected:
                    reader.inputs[i] = source
        node.outputs.clear()
    graph.cleanup(remove_unused_graph_inputs=False)
    return left
