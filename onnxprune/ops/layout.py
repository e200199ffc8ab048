"""Ops that move channels between tensors without computing on them: Concat, Split, Slice, Pad,
Resize, Squeeze/Unsqueeze, spatial reductions, Transpose, Flatten and the Reshapes that flatten or keep
the channel axis."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.constants import constant_values
from onnxprune.ops.base import Coupling, Edit, OpRule, Shapes, rank_of, set_constant_input


class Concat(OpRule):
    """On the channel axis the output's channels are the inputs' channels in order; on any other
    axis channel c of every input is channel c of the output."""

    data_inputs = "all"
    all_tracked = True

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        rank = rank_of(node.outputs[0], shapes)
        if rank is None or any(m is None for m in maps):
            return "an input's channels or the output rank are unknown"
        axis = node.attrs.get("axis", 1) % rank
        if axis == 1:
            return Coupling([np.concatenate(maps)])
        if any(m.size != maps[0].size for m in maps):
            return "inputs with different channel counts"
        return Coupling([maps[0]], unify=[(maps[0], m) for m in maps[1:]])


class Split(OpRule):
    """Split on the channel axis cuts the id vector (and its sizes follow a removal); on another
    axis every output keeps it. ``Coupling.entry`` is the split axis when it is the channel axis."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        rank = rank_of(node.inputs[0], shapes)
        if rank is None:
            return "input rank unknown"
        if node.attrs.get("axis", 0) % rank != 1:
            return Coupling([maps[0]] * len(node.outputs))
        sizes = [shapes.get(t.name, (None, None))[1] for t in node.outputs]
        if any(not isinstance(s, (int, np.integer)) for s in sizes) or sum(sizes) != maps[0].size:
            return "split sizes on the channel axis are unknown"
        bounds = np.cumsum([0] + list(sizes))
        return Coupling([maps[0][a:b] for a, b in zip(bounds[:-1], bounds[1:])], entry=1)

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        if edit.keep(node.inputs[0]) is None or coupling.entry != 1:
            return  # nothing removed, or a split of another axis: every output has all the channels
        sizes = np.array([int(keep.sum()) if (keep := edit.keep(t)) is not None else edit.channels_of(t.name)
                          for t in node.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if edit.opset >= 13:
            set_constant_input(node, 1, sizes)
        else:
            node.attrs["split"] = [int(size) for size in sizes]


class Slice(OpRule):
    """A unit-step Slice of the channel axis keeps a contiguous run of ids; its bounds move with a removal."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        rank = rank_of(node.inputs[0], shapes)
        arguments = slice_arguments(node)
        if arguments is None or rank is None:
            return "Slice without constant starts/ends (or an opset < 10 Slice)"
        starts, ends, axes, steps = arguments
        on_channels = [i for i, a in enumerate(axes) if int(a) % rank == 1]
        if not on_channels:
            return Coupling([maps[0]], entry=-1)
        i = on_channels[0]
        if int(steps[i]) != 1:
            return f"Slice of the channel axis with step {int(steps[i])}"
        begin, end, _ = slice(int(starts[i]), int(ends[i])).indices(maps[0].size)
        return Coupling([maps[0][begin:end]], entry=i)

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        keep_in, i = edit.keep(node.inputs[0]), coupling.entry
        if keep_in is None or i < 0:
            return
        # The same channels of the shrunken input: entry i of starts/ends, counted in kept channels.
        starts, ends = (np.array(np.asarray(node.inputs[k].values)) for k in (1, 2))
        begin, end, _ = slice(int(starts[i]), int(ends[i])).indices(keep_in.size)
        starts[i] = int(keep_in[:begin].sum())
        ends[i] = starts[i] + int(keep_in[begin:end].sum())
        set_constant_input(node, 1, starts)
        set_constant_input(node, 2, ends)


def slice_arguments(node: gs.Node) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """An opset >= 10 Slice's starts, ends, axes and steps (the last two defaulted when absent), or
    None when one that is given is not a constant."""
    values = [constant_values(t) if t.name else None for t in node.inputs[1:5]]
    if len(node.inputs) < 3 or any(v is None for v in values):
        return None
    starts, ends = values[0], values[1]
    axes = values[2] if len(values) > 2 else np.arange(len(starts))
    steps = values[3] if len(values) > 3 else np.ones(len(starts), dtype=np.int64)
    return starts, ends, axes, steps


class Pad(OpRule):
    """Pad passes channels through when it pads nothing on the channel axis."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        pads = node.attrs.get("pads") if len(node.inputs) < 2 else constant_values(node.inputs[1])
        if pads is None or (len(node.inputs) > 3 and node.inputs[3].name):
            return "pads are not constant (or Pad has an axes input)"
        pads = np.asarray(pads).reshape(-1)
        rank = pads.size // 2
        if rank < 2 or pads[1] != 0 or pads[1 + rank] != 0:
            return "Pad pads the channel axis"
        return Coupling([maps[0]])


class Resize(OpRule):
    """Resize/Upsample by scales (1 on the channel axis) passes channels through. By sizes: sizes
    for the spatial axes only (opset 18's ``axes``) pass them through too; constant sizes of every
    axis name the channel count, which follows a removal (``Coupling.entry`` 1); computed sizes are
    frozen (nothing says their channel entry follows)."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name:
            rank = rank_of(node.inputs[0], shapes)
            axes = node.attrs.get("axes")
            if axes is not None and rank is not None:
                if any(int(a) % rank < 2 for a in axes):
                    return "Resize by sizes of the batch or channel axis"
                return Coupling([maps[0]])
            sizes = constant_values(node.inputs[3])
            if sizes is None:
                return "Resize by computed sizes (their channel entry is not known to follow a removal)"
            if sizes.ndim != 1 or sizes.size < 2 or int(sizes[1]) != maps[0].size:
                return f"Resize by sizes {sizes.tolist()} that change the channel count ({maps[0].size})"
            return Coupling([maps[0]], entry=1)
        scale_input = 2 if node.op == "Resize" else 1
        scales = (node.attrs.get("scales") if len(node.inputs) <= scale_input
                  else constant_values(node.inputs[scale_input]))
        if scales is None or np.asarray(scales).size < 2 or float(np.asarray(scales).reshape(-1)[1]) != 1.0:
            return "scales are not constant, or scale the channel axis"
        return Coupling([maps[0]])

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        keep_in = edit.keep(node.inputs[0])
        if keep_in is not None and coupling.entry == 1:  # constant sizes name the channel count
            sizes = np.array(np.asarray(node.inputs[3].values))
            sizes[1] = int(keep_in.sum())
            set_constant_input(node, 3, sizes)


class Squeeze(OpRule):
    """Squeeze/Unsqueeze of axes after the channel axis keeps channels on axis 1."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        axes = node.attrs.get("axes") if len(node.inputs) < 2 else constant_values(node.inputs[1])
        in_shape, out_shape = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
        if axes is None or in_shape is None or out_shape is None:
            return "axes or shapes unknown"
        rank = max(len(in_shape), len(out_shape))
        if any(int(a) % rank < 2 for a in np.asarray(axes).reshape(-1)):
            return "it moves the channel axis"
        return Coupling([maps[0]])


class ReduceSpatial(OpRule):
    """A reduction over spatial axes only (the dynamo exporter's global average pool) keeps channels."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        axes = (node.attrs.get("axes") if len(node.inputs) < 2 or not node.inputs[1].name
                else constant_values(node.inputs[1]))
        rank = rank_of(node.inputs[0], shapes)
        if axes is None or rank is None:
            return "axes or input rank unknown (a reduction over all axes reaches the channels)"
        if any(int(a) % rank < 2 for a in np.asarray(axes).reshape(-1)):
            return "it reduces the batch or channel axis"
        return Coupling([maps[0]])


class Transpose(OpRule):
    """A Transpose that keeps the batch and channel axes in place (it permutes spatial axes only)
    passes channels through; one that moves the channel axis (NCHW <-> NHWC) is frozen."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        perm = node.attrs.get("perm")
        if perm is None:
            return "no perm: it reverses every axis, the channel axis too"
        if list(perm[:2]) != [0, 1]:
            return f"perm {list(perm)} moves the channel axis"
        return Coupling([maps[0]])


class Flatten(OpRule):
    """(N, C, H, W) -> (N, C*H*W): channel c becomes the block of H*W features c*H*W ... (c+1)*H*W-1."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        in_shape, out_shape = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
        if in_shape is None or out_shape is None:
            return "the shapes around it are not known, so how it moves channels is not either"
        if len(out_shape) != 2 or len(in_shape) < 2:
            what = ("it splits axes (as a channel shuffle or a grouping does; no rule yet)"
                    if len(out_shape) > len(in_shape) else
                    "it merges axes, but not into (N, C*H*W) as a flatten does (as a channel shuffle's end does; "
                    "no rule yet)")
            return f"it reshapes {_shape_text(in_shape)} to {_shape_text(out_shape)}: {what}"
        if node.op == "Flatten" and node.attrs.get("axis", 1) != 1:
            return f"axis {node.attrs.get('axis')} (only axis 1 keeps channels in blocks)"
        tail = in_shape[1:]
        if any(not isinstance(d, (int, np.integer)) for d in tail) or out_shape[1] != int(np.prod(tail)):
            return "it does not flatten the channel axis with the spatial axes"
        block = int(np.prod(tail[1:]))
        return Coupling([np.repeat(maps[0], block)])


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, (int, np.integer)) else "?" for d in shape) + ")"


SPATIAL = 1  # Coupling.entry of a Reshape that keeps the batch and channel axes: its target's channel entry


class FlatteningReshape(Flatten):
    """A Reshape that flattens as Flatten does, or one that keeps the batch and channel axes and
    only merges or splits the axes after them ((N, C, H, W) -> (N, C, H*W) in a detection head, and
    back). Either way its target shape names the channels, so a removal rewrites it."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        in_shape, out_shape = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
        if in_shape is None or out_shape is None or len(in_shape) < 3 or len(out_shape) < 3:
            return super().couple(node, maps, shapes)
        sizes = list(in_shape[1:]) + list(out_shape[1:])
        if (tuple(in_shape[:2]) != tuple(out_shape[:2]) or not all(isinstance(d, (int, np.integer)) for d in sizes)
                or np.prod(in_shape[2:]) != np.prod(out_shape[2:])):
            return super().couple(node, maps, shapes)
        target = constant_values(node.inputs[1])
        if target is None:
            return "it keeps the channel axis, but its target shape is computed, not a constant to rewrite"
        return Coupling([maps[0]], entry=SPATIAL)

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        keep = edit.keep(node.inputs[0])
        if keep is None:
            return
        if coupling.entry == SPATIAL:
            target = np.array(constant_values(node.inputs[1]), dtype=np.int64)
            if target[1] > 0:  # 0 copies the input's count and -1 infers it: both follow by themselves
                target[1] = int(keep.sum())
            set_constant_input(node, 1, target)
            return
        # (N, C*H*W) with C reduced: keep the batch dim, let the rest follow.
        set_constant_input(node, 1, np.array([0, -1], dtype=np.int64))
        node.attrs.pop("allowzero", None)  # 0 must mean "copy the batch dim"


class ShapeOf(OpRule):
    """Shape(x) is a tensor of sizes, not of channels. x's channels may still go when nothing reads
    the channel entry of those sizes: ``x.view(x.size(0), -1)`` exports as Shape -> Gather(0) ->
    Concat -> Reshape, which reads the batch entry only (the flattening Reshape is then rewritten
    to (0, -1)). A reader of the channel entry, or one this rule cannot see through, freezes them."""

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        rank = rank_of(node.inputs[0], shapes)
        if rank is None:
            return "input rank unknown"
        entries = list(range(rank))[slice(node.attrs.get("start", 0), node.attrs.get("end", rank))]  # opset 15
        if 1 in entries:
            channel = entries.index(1)
            for reader in node.outputs[0].outputs:
                read = _shape_entries_read(reader, len(entries))
                if read is None or channel in read:
                    return f"the channel count it gives is read by {reader.op} '{reader.name}'"
        return Coupling([None] * len(node.outputs))


def _shape_entries_read(reader: gs.Node, n: int) -> set[int] | None:
    """The entries of an n-vector of sizes that a Gather or a unit-step Slice with constant
    arguments reads (None: another op, or arguments that are not constant)."""
    if reader.op == "Gather" and reader.attrs.get("axis", 0) == 0:
        indices = constant_values(reader.inputs[1])
        return None if indices is None else {int(i) % n for i in np.asarray(indices).reshape(-1)}
    if reader.op == "Slice" and (arguments := slice_arguments(reader)) is not None:
        starts, ends, axes, steps = arguments
        if axes.size != 1 or int(axes[0]) != 0 or int(steps[0]) != 1:
            return None
        return set(range(n)[slice(int(starts[0]), int(ends[0]))])
    return None
