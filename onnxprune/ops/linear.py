"""Linear ops: Conv, Gemm and MatMul with a constant weight are the layers GES selects and refits.

Each entry owns its weight layout (the stored axis order against the canonical (out, in, ...)
one), its kernel geometry, how often each weight is used per sample (its MACs), how its weight
is shrunk and how new weights are installed. A grouped Conv (1 < group, more than one input
channel per group) is a layer too: group k of its outputs reads group k of its inputs only (both
split into equal contiguous blocks, as ONNX defines it), so it is refit per group and loses the
same count of input and output channels in every group. A depthwise Conv is not a layer: it is
coupled as a channel map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.constants import constant_values
from onnxprune.ops.base import Coupling, Edit, OpRule, Shapes, constant_params, is_fixed, slice_per_channel


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right

    @classmethod
    def of(cls, node: gs.Node, in_hw: tuple[int, int]) -> "ConvGeometry":
        kernel = tuple(np.asarray(node.inputs[1].values).shape[2:])
        strides = tuple(node.attrs.get("strides", (1, 1)))
        dilations = tuple(node.attrs.get("dilations", (1, 1)))
        pads = tuple(node.attrs.get("pads", (0, 0, 0, 0)))
        auto_pad = node.attrs.get("auto_pad", "NOTSET")
        if isinstance(auto_pad, bytes):
            auto_pad = auto_pad.decode()
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads_hw = []
            for size, k, s, d in zip(in_hw, kernel, strides, dilations):
                out = -(-size // s)
                total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
                small, big = total // 2, total - total // 2
                pads_hw.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
            pads = (pads_hw[0][0], pads_hw[1][0], pads_hw[0][1], pads_hw[1][1])
        elif auto_pad == "VALID":
            pads = (0, 0, 0, 0)
        return cls(kernel, strides, dilations, pads)

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(
            (size + self.pads[i] + self.pads[i + 2] - (k - 1) * d - 1) // s + 1
            for i, (size, k, s, d) in enumerate(zip(in_hw, self.kernel, self.strides, self.dilations))
        )


class Linear(OpRule):
    """y = W x + b over channels, W a constant input 1 and b an optional constant input 2."""

    def layer_reason(self, node: gs.Node, shapes: Shapes) -> str | None:
        """Why the node is not a layer (None: it is one)."""
        weight = node.inputs[1]
        if not isinstance(weight, gs.Constant):
            return f"{node.op} '{node.name}' has a weight that is not a constant initializer"
        if len(weight.outputs) > 1:
            return f"{node.op} '{node.name}' shares its weight '{weight.name}' with other nodes"
        if len(node.inputs) > 2 and node.inputs[2].name != "" and not isinstance(node.inputs[2], gs.Constant):
            return f"{node.op} '{node.name}' has a bias that is not a constant"
        return self.shape_reason(node, shapes)

    def shape_reason(self, node: gs.Node, shapes: Shapes) -> str | None:
        raise NotImplementedError

    def refuse(self, node: gs.Node, shapes: Shapes) -> str | None:
        return self.layer_reason(node, shapes)  # a linear node that is no layer is frozen, with why

    def out_axis(self, node: gs.Node) -> int:
        """The stored weight's output axis (the input axis is the other of the first two)."""
        return 0

    def canonical_weight(self, node: gs.Node) -> np.ndarray:
        """(out, in/group, kh, kw) for a Conv, (out, in) for a Gemm/MatMul."""
        values = np.asarray(node.inputs[1].values)
        return values if self.out_axis(node) == 0 else values.T

    def kernel_size(self, node: gs.Node) -> int:
        """Input features per input channel: kh*kw for a Conv, 1 for a Gemm."""
        return 1

    def groups(self, node: gs.Node) -> int:
        """Blocks of the weight: output group k reads input group k only (1: every output reads every input)."""
        return 1

    def geometry(self, node: gs.Node, in_hw: tuple[int, int]) -> ConvGeometry | None:
        """Where each output pixel reads its input (None: one sample is one row, no patches)."""
        return None

    def uses_per_weight(self, node: gs.Node, shapes: Shapes) -> int | None:
        """Multiply-accumulates per weight for one sample (None: the output size is not known)."""
        return 1

    def macs(self, node: gs.Node, shapes: Shapes) -> int:
        """Multiply-accumulates for a single sample (0 when the weight is not a constant or the size unknown)."""
        if len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
            return 0
        uses = self.uses_per_weight(node, shapes)
        return 0 if uses is None else int(np.asarray(node.inputs[1].values).size) * uses

    def shrink_layer(self, node: gs.Node, keep_in: np.ndarray | None, keep_out: np.ndarray | None) -> None:
        """Drop weight columns (input channels) and rows (output channels, with their bias entries)."""
        weight = np.asarray(node.inputs[1].values)
        out_axis = self.out_axis(node)
        if keep_in is not None:
            weight = slice_per_channel(weight, keep_in, 1 - out_axis)
        if keep_out is not None:
            weight = slice_per_channel(weight, keep_out, out_axis)
            if len(node.inputs) > 2 and node.inputs[2].name != "":
                bias = np.asarray(node.inputs[2].values)
                if bias.size == keep_out.size:
                    node.inputs[2].values = slice_per_channel(bias.reshape(-1), keep_out, 0).reshape(
                        tuple(int(keep_out.sum()) if d == keep_out.size else d for d in bias.shape))
                elif bias.size != 1:
                    raise ValueError(f"'{node.name}': bias of shape {bias.shape} cannot be pruned per channel")
        node.inputs[1].values = weight

    def install(self, node: gs.Node, weight: np.ndarray, bias: np.ndarray,
                absorb_bias: Callable[[np.ndarray], bool]) -> None:
        """Install a canonical weight and a bias. A layer without a bias input gets one (the
        regression's intercept needs a home) unless ``absorb_bias`` folds it into the next node."""
        weight_tensor = node.inputs[1]
        dtype = np.asarray(weight_tensor.values).dtype
        stored = weight if self.out_axis(node) == 0 else weight.T
        weight_tensor.values = np.ascontiguousarray(stored.astype(dtype))
        bias_values = np.ascontiguousarray(bias.astype(dtype))
        if len(node.inputs) > 2 and node.inputs[2].name != "" and len(node.inputs[2].outputs) == 1:
            node.inputs[2].values = bias_values
        elif not absorb_bias(bias):
            new_bias = gs.Constant(f"{node.name}_onnxprune_bias", bias_values)
            if len(node.inputs) > 2:
                node.inputs[2] = new_bias
            else:
                node.inputs.append(new_bias)


class Conv(Linear):
    """A group-1 Conv is a layer; a depthwise one (group = channels) maps channel c to channel c."""

    def shape_reason(self, node: gs.Node, shapes: Shapes) -> str | None:
        weight = np.asarray(node.inputs[1].values)
        if weight.ndim != 4:
            return f"Conv '{node.name}' is not 2-D (weight rank {weight.ndim})"
        group = self.groups(node)
        if group != 1 and weight.shape[1] == 1:
            return f"Conv '{node.name}' is depthwise (group={group})"  # a channel map (couple), not a layer
        if group != 1 and weight.shape[0] % group:
            return f"Conv '{node.name}' has {weight.shape[0]} outputs, not a multiple of group={group}"
        return None

    def refuse(self, node: gs.Node, shapes: Shapes) -> str | None:
        return None if self.groups(node) > 1 else super().refuse(node, shapes)

    def kernel_size(self, node: gs.Node) -> int:
        return int(np.prod(np.asarray(node.inputs[1].values).shape[2:]))

    def groups(self, node: gs.Node) -> int:
        return int(node.attrs.get("group", 1))

    def shrink_layer(self, node: gs.Node, keep_in: np.ndarray | None, keep_out: np.ndarray | None) -> None:
        """A grouped Conv's weight (out, in/group, kh, kw) loses, in each group's rows, that group's
        removed input channels; every group must lose as many (``ChannelGraph.feasible``)."""
        group = self.groups(node)
        if group > 1 and keep_in is not None:
            weight = np.asarray(node.inputs[1].values)
            blocks = keep_in.reshape(group, -1)
            kept = blocks.sum(axis=1)
            if blocks.shape[1] != weight.shape[1] or (kept != kept[0]).any():
                raise ValueError(f"'{node.name}': input channels {kept.tolist()} kept per group of {group}, "
                                 f"not the same count in every group")
            rows = weight.reshape((group, -1) + weight.shape[1:])
            node.inputs[1].values = np.ascontiguousarray(np.concatenate(
                [block[:, mask] for block, mask in zip(rows, blocks)]).reshape(
                (weight.shape[0], int(kept[0])) + weight.shape[2:]))
            keep_in = None
        super().shrink_layer(node, keep_in, keep_out)

    def geometry(self, node: gs.Node, in_hw: tuple[int, int]) -> ConvGeometry:
        return ConvGeometry.of(node, in_hw)

    def uses_per_weight(self, node: gs.Node, shapes: Shapes) -> int | None:
        # A Conv weight holds out x in/group x kh x kw: one MAC per weight per output pixel.
        shape = shapes.get(node.outputs[0].name)
        return None if shape is None or not is_fixed(shape[2:]) else int(np.prod(shape[2:]))

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        """A depthwise Conv (group = channels, one filter each) passes channel c to channel c.

        A grouped Conv that is not a layer (one input channel per group and several filters each,
        or not 2-D) is a producer nothing refits: its output channels are new, pruned by the units
        that read them with the same count from every group (``Coupling.blocks``), and its input
        channels are frozen."""
        ids = maps[0]
        weight = constant_values(node.inputs[1])
        group = node.attrs.get("group", 1)
        if group != ids.size or weight is None or weight.shape[:2] != (ids.size, 1):
            what = f"grouped Conv (group={group}, weight {None if weight is None else weight.shape}) is not depthwise"
            if (weight is None or not isinstance(node.inputs[1], gs.Constant) or len(node.inputs[1].outputs) > 1
                    or weight.shape[0] % group or weight.shape[1] * group != ids.size):
                return what
            params = constant_params(node, (2,), weight.shape[0], 2)
            if isinstance(params, str):
                return params
            return Coupling([None] * len(node.outputs), params=[(node.inputs[1], 0)] + params,
                            fresh={0: int(weight.shape[0])}, blocks=group,
                            freeze=[(ids, f"{what}: it reads them and is not refit")])
        params = constant_params(node, (2,), ids.size, 2)
        if isinstance(params, str):
            return params
        if not isinstance(node.inputs[1], gs.Constant) or len(node.inputs[1].outputs) > 1:
            return f"weight '{node.inputs[1].name}' is not a constant of its own"
        return Coupling([ids], params=[(node.inputs[1], 0)] + params)

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        super().shrink(node, coupling, edit)  # output channels: weight rows, bias
        if (keep_out := edit.keep(node.outputs[0])) is not None and not coupling.fresh:
            node.attrs["group"] = int(keep_out.sum())  # depthwise: one group per channel

    def param_macs(self, node: gs.Node, constant: gs.Constant, shapes: Shapes) -> float:
        # A grouped producer's weight costs its output pixels (a depthwise one, as before, nothing).
        weight = np.asarray(node.inputs[1].values)
        if constant is not node.inputs[1] or weight.shape[1] == 1:
            return 0.0
        return float(self.uses_per_weight(node, shapes) or 0)

    def producer_rows(self, node: gs.Node) -> np.ndarray | None:
        weight = np.asarray(node.inputs[1].values)
        return weight.reshape(weight.shape[0], -1)


class Gemm(Linear):
    """Y = X W^T + b with transB, X W + b without; transA, alpha and beta are not supported."""

    def shape_reason(self, node: gs.Node, shapes: Shapes) -> str | None:
        if node.inputs[1].values.ndim != 2:
            return f"{node.op} '{node.name}' has a weight of rank {node.inputs[1].values.ndim}, not 2"
        if node.op == "Gemm" and (node.attrs.get("transA", 0) or node.attrs.get("alpha", 1.0) != 1.0
                                  or node.attrs.get("beta", 1.0) != 1.0):
            return f"Gemm '{node.name}' uses transA/alpha/beta"
        in_shape = shapes.get(node.inputs[0].name)
        if in_shape is None or len(in_shape) != 2:
            return f"{node.op} '{node.name}' has an input that is not known to be 2-D"
        return None

    def out_axis(self, node: gs.Node) -> int:
        return 0 if node.attrs.get("transB", 0) else 1


class MatMul(Gemm):
    """Y = X W with W stored (in, out); with a bias it becomes the equivalent Gemm."""

    def out_axis(self, node: gs.Node) -> int:
        return 1

    def uses_per_weight(self, node: gs.Node, shapes: Shapes) -> int | None:
        # On an N-D input (N, ..., features) each weight is used once per position of the middle axes.
        shape = shapes.get(node.outputs[0].name)
        if shape is None or len(shape) <= 2:
            return 1
        return int(np.prod(shape[1:-1])) if is_fixed(shape[1:-1]) else None

    def install(self, node: gs.Node, weight: np.ndarray, bias: np.ndarray,
                absorb_bias: Callable[[np.ndarray], bool]) -> None:
        # MatMul has no bias slot: the same node becomes a Gemm (transB, weight stored (out, in)).
        node.op = "Gemm"
        node.attrs = {"transB": 1}
        LINEAR["Gemm"].install(node, weight, bias, absorb_bias)


LINEAR: dict[str, Linear] = {"Conv": Conv(), "Gemm": Gemm(), "MatMul": MatMul()}


class ConvTranspose(OpRule):
    """y = ConvTranspose(x, W) + b, W stored (in, out/group, kh, kw): a producer nothing refits.

    With group 1 its output channels are new ones (fresh ids): the units that read them prune
    them (weight axis 1 and the bias are sliced, the readers are refit), while its input channels
    stay, frozen, because removing one would change outputs nothing refits. A depthwise one
    (group = channels, weight (C, 1, kh, kw)) maps channel c to channel c, as a depthwise Conv.
    """

    untracked_ok = True  # its outputs are new channels even when its input's are not tracked

    def couple(self, node: gs.Node, maps: list, shapes: Shapes) -> Coupling | str:
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if not isinstance(weight, gs.Constant):
            return "its weight is not a constant initializer"
        if len(weight.outputs) > 1:
            return f"weight '{weight.name}' is shared with other nodes"
        w = np.asarray(weight.values)
        if w.ndim < 3:
            return f"weight of rank {w.ndim}"
        group, ids = node.attrs.get("group", 1), maps[0]
        if group != 1:
            if ids is None or group != ids.size or w.shape[:2] != (ids.size, 1):
                return f"grouped ConvTranspose (group={group}, weight {w.shape}) is not depthwise"
            params = constant_params(node, (2,), ids.size, 2)
            return params if isinstance(params, str) else Coupling([ids], params=[(weight, 0)] + params)
        if ids is not None and ids.size != w.shape[0]:
            return f"it reads {w.shape[0]} channels, its input has {ids.size}"
        params = constant_params(node, (2,), w.shape[1], 2)
        if isinstance(params, str):
            return params
        freeze = [] if ids is None else [(ids, f"ConvTranspose '{node.name}' reads them and is not refit")]
        return Coupling([None] * len(node.outputs), params=[(weight, 1)] + params, fresh={0: int(w.shape[1])},
                        freeze=freeze)

    def shrink(self, node: gs.Node, coupling: Coupling, edit: Edit) -> None:
        super().shrink(node, coupling, edit)  # output channels: weight axis 1 (axis 0 if depthwise), bias
        if node.attrs.get("group", 1) != 1:
            if (keep_out := edit.keep(node.outputs[0])) is not None:
                node.attrs["group"] = int(keep_out.sum())
        elif (keep_in := edit.keep(node.inputs[0])) is not None:  # not reached while its inputs are frozen
            node.inputs[1].values = slice_per_channel(np.asarray(node.inputs[1].values), keep_in, 0)

    def uses_per_weight(self, node: gs.Node, shapes: Shapes) -> int | None:
        # Each weight (in, out/group, kh, kw) is used once per input pixel.
        shape = shapes.get(node.inputs[0].name)
        return None if shape is None or not is_fixed(shape[2:]) else int(np.prod(shape[2:]))

    macs = Linear.macs

    def producer_rows(self, node: gs.Node) -> np.ndarray | None:
        weight = np.asarray(node.inputs[1].values)  # (in, out, kh, kw) with group 1
        return np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)

    def param_macs(self, node: gs.Node, constant: gs.Constant, shapes: Shapes) -> float:
        if constant is not node.inputs[1]:
            return 0.0
        return float(self.uses_per_weight(node, shapes) or 0)


@dataclass(eq=False)
class Layer:
    """A Conv or Gemm/MatMul node with a constant weight, seen as y = W x + b over channels."""

    node: gs.Node

    @property
    def rule(self) -> Linear:
        return LINEAR[self.node.op]

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def weight_tensor(self) -> gs.Constant:
        return self.node.inputs[1]

    @property
    def weight(self) -> np.ndarray:
        """Canonical weight: (out, in/group, kh, kw) for a Conv, (out, in) for a Gemm/MatMul."""
        return self.rule.canonical_weight(self.node)

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
        """Input channels (features of a Gemm) the layer reads, all groups together."""
        return self.weight.shape[1] * self.groups

    @property
    def kernel_size(self) -> int:
        return self.rule.kernel_size(self.node)

    @property
    def features(self) -> int:
        """The width of the layer's regression (one group's): its input channels times its kernel taps."""
        return self.weight.shape[1] * self.kernel_size

    def too_wide(self, max_features: int) -> str | None:
        """Why the layer cannot be solved or refit within ``max_features`` (None: it can). The
        statistics hold a features x features float64 Gram and its factorisations: VGG's first Gemm
        on 7 x 7 x 512 = 25,088 features needs 5 GB for each and hours of solving on a few cores."""
        if self.features <= max_features:
            return None
        gram_gb = self.features**2 * 8 / 1e9
        return (f"'{self.name}' regresses on {self.features:,} input features, more than --max-features "
                f"{max_features:,} (its Gram alone would take {gram_gb:.1f} GB): kept as it is")

    @property
    def groups(self) -> int:
        """g: outputs and inputs are g equal contiguous blocks, output block k reading input block k
        only; the canonical weight is (out, in/g, ...), one block's columns per row."""
        return self.rule.groups(self.node)

    def geometry(self, in_hw: tuple[int, int]) -> ConvGeometry | None:
        return self.rule.geometry(self.node, in_hw)


def as_layer(node: gs.Node, shapes: Shapes) -> tuple[Layer | None, str | None]:
    """A Layer for a supported linear node, or the reason it is not one ((None, None): not a linear op)."""
    rule = LINEAR.get(node.op)
    if rule is None or len(node.inputs) < 2:
        return None, None
    reason = rule.layer_reason(node, shapes)
    return (None, reason) if reason else (Layer(node), None)
