"""Branchy ONNX models built from pieces: residual, bottleneck, inverted residual (depthwise),
dense (Concat), fire (SqueezeNet), squeeze-excitation (Mul), Split/Slice, grouped and shuffled
convolutions, Pad and Resize. Same conventions as builders.py: one input "input" (batch, 3, 16, 16),
one output "logits" (batch, 10), named nodes, seeded weights.

Each piece takes (tensor, channels) and returns (tensor, channels); ``build`` strings them
together and adds a GlobalAveragePool -> Flatten -> Gemm head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from builders import INPUT, OUTPUT, _Builder

SIZE = 16


class Net(_Builder):
    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.count = 0
        self.size = SIZE  # spatial size of the current tensor (pieces with stride 2 halve it)

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv_bn(self, x: str, c_in: int, c_out: int, *, k: int = 3, stride: int = 1, group: int = 1,
                act: str | None = "Relu") -> str:
        name = self.name("conv")
        fan_in = c_in // group * k * k
        w = (self.rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        x = self.node("Conv", name, [x, self.const(f"{name}.weight", w)], kernel_shape=[k, k], pads=[k // 2] * 4,
                      strides=[stride, stride], group=group)
        x = self.bn(f"{name}_bn", x, c_out)
        if act == "Relu6":
            return self.node("Clip", f"{name}_act", [x, self.const(f"{name}.lo", np.float32(0)),
                                                      self.const(f"{name}.hi", np.float32(6))])
        return self.node(act, f"{name}_act", [x]) if act else x

    def add(self, a: str, b: str) -> str:
        return self.node("Add", self.name("add"), [a, b])


# --- pieces: (net, x, channels, **params) -> (x, channels) -----------------------------------------

def plain(net: Net, x: str, c: int, c_out: int = 8) -> tuple[str, int]:
    return net.conv_bn(x, c, c_out), c_out


def residual(net: Net, x: str, c: int, stride: int = 1, c_out: int | None = None) -> tuple[str, int]:
    """ResNet BasicBlock: two 3x3 convs, identity or 1x1-conv shortcut, Add then Relu."""
    c_out = c_out or c
    y = net.conv_bn(net.conv_bn(x, c, c_out, stride=stride), c_out, c_out, act=None)
    shortcut = x if stride == 1 and c_out == c else net.conv_bn(x, c, c_out, k=1, stride=stride, act=None)
    return net.node("Relu", net.name("relu"), [net.add(y, shortcut)]), c_out


def bottleneck(net: Net, x: str, c: int, mid: int = 4, c_out: int | None = None, stride: int = 1) -> tuple[str, int]:
    """ResNet-50 bottleneck: 1x1 reduce, 3x3, 1x1 expand, shortcut, Add then Relu."""
    c_out = c_out or c
    y = net.conv_bn(net.conv_bn(net.conv_bn(x, c, mid, k=1), mid, mid, stride=stride), mid, c_out, k=1, act=None)
    shortcut = x if stride == 1 and c_out == c else net.conv_bn(x, c, c_out, k=1, stride=stride, act=None)
    return net.node("Relu", net.name("relu"), [net.add(y, shortcut)]), c_out


def inverted_residual(net: Net, x: str, c: int, expand: int = 3, c_out: int | None = None,
                      stride: int = 1) -> tuple[str, int]:
    """MobileNetV2: 1x1 expand + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 project, Add if shapes match."""
    c_out, hidden = c_out or c, c * expand
    y = net.conv_bn(x, c, hidden, k=1, act="Relu6")
    y = net.conv_bn(y, hidden, hidden, stride=stride, group=hidden, act="Relu6")
    y = net.conv_bn(y, hidden, c_out, k=1, act=None)
    return (net.add(y, x) if stride == 1 and c_out == c else y), c_out


def dense(net: Net, x: str, c: int, growth: int = 4, layers: int = 2) -> tuple[str, int]:
    """DenseNet block: each layer (1x1 bottleneck, 3x3) sees the Concat of everything before it."""
    for _ in range(layers):
        y = net.conv_bn(net.conv_bn(x, c, 2 * growth, k=1), 2 * growth, growth)
        x = net.node("Concat", net.name("concat"), [x, y], axis=1)
        c += growth
    return x, c


def fire(net: Net, x: str, c: int, squeeze: int = 4, expand: int = 6) -> tuple[str, int]:
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""
    s = net.conv_bn(x, c, squeeze, k=1)
    e1, e3 = net.conv_bn(s, squeeze, expand, k=1), net.conv_bn(s, squeeze, expand)
    return net.node("Concat", net.name("concat"), [e1, e3], axis=1), 2 * expand


def squeeze_excite(net: Net, x: str, c: int, reduce: int = 2) -> tuple[str, int]:
    """Squeeze-and-excitation: x * sigmoid(conv(relu(conv(gap(x))))), a Mul of two tensors."""
    s = net.node("GlobalAveragePool", net.name("gap"), [x])
    s = net.conv_bn(s, c, max(1, c // reduce), k=1)
    s = net.conv_bn(s, max(1, c // reduce), c, k=1, act="Sigmoid")
    return net.node("Mul", net.name("mul"), [x, s]), c


def split_paths(net: Net, x: str, c: int) -> tuple[str, int]:
    """Split the channels in two, a conv on each half, Concat back."""
    first = c // 2
    name = net.name("split")
    net.nodes.append(onnx.helper.make_node("Split", [x, net.const(f"{name}.sizes", np.array([first, c - first]))],
                                           [f"{name}_a", f"{name}_b"], name=name, axis=1))
    a, b = net.conv_bn(f"{name}_a", first, 4), net.conv_bn(f"{name}_b", c - first, 4)
    return net.node("Concat", net.name("concat"), [a, b], axis=1), 8


def slice_half(net: Net, x: str, c: int) -> tuple[str, int]:
    """Keep the second half of the channels with a Slice."""
    name = net.name("slice")
    start = c // 2
    x = net.node("Slice", name, [x, net.const(f"{name}.starts", np.array([start])),
                                 net.const(f"{name}.ends", np.array([c])), net.const(f"{name}.axes", np.array([1]))])
    return net.conv_bn(x, c - start, 8), 8


def grouped(net: Net, x: str, c: int) -> tuple[str, int]:
    """A grouped 3x3 conv (group 2): a layer refit group by group; its input and output channels
    are pruned the same count per group."""
    c_out = 8 if c % 2 == 0 else c
    group = 2 if c % 2 == 0 else 1
    return net.conv_bn(x, c, c_out, group=group), c_out


def shuffle(net: Net, x: str, c: int) -> tuple[str, int]:
    """ShuffleNet channel shuffle (Reshape, Transpose, Reshape): a permutation of the channels,
    pruned through as a Gather (graph/shuffle.py)."""
    groups = 2 if c % 2 == 0 else 1
    name = net.name("shuffle")
    s = net.size
    y = net.node("Reshape", f"{name}_r1", [x, net.const(f"{name}.s1", np.array([0, groups, c // groups, s, s]))])
    y = net.node("Transpose", f"{name}_t", [y], perm=[0, 2, 1, 3, 4])
    y = net.node("Reshape", f"{name}_r2", [y, net.const(f"{name}.s2", np.array([0, c, s, s]))])
    return net.conv_bn(y, c, 8), 8


def pad_resize(net: Net, x: str, c: int) -> tuple[str, int]:
    """Upsample x2 (Resize by scales), conv, max-pool back, then Pad 1 and a 3x3 valid conv."""
    name = net.name("resize")
    y = net.node("Resize", name, [x, "", net.const(f"{name}.scales", np.array([1, 1, 2, 2], dtype=np.float32))],
                 mode="nearest")
    y = net.node("MaxPool", net.name("pool"), [net.conv_bn(y, c, 8)], kernel_shape=[2, 2], strides=[2, 2])
    name = net.name("pad")
    y = net.node("Pad", name, [y, net.const(f"{name}.pads", np.array([0, 0, 1, 1, 0, 0, 1, 1]))])
    name = net.name("conv")
    w = (net.rng.standard_normal((8, 8, 3, 3)) * np.sqrt(2.0 / 72)).astype(np.float32)
    return net.node("Relu", net.name("relu"), [net.node("Conv", name, [y, net.const(f"{name}.weight", w)],
                                                          kernel_shape=[3, 3])]), 8


def transpose_hw(net: Net, x: str, c: int) -> tuple[str, int]:
    """A Transpose of the spatial axes (the channel axis stays): channels pass through it."""
    y = net.node("Transpose", net.name("transpose"), [x], perm=[0, 1, 3, 2])
    return net.conv_bn(y, c, 8), 8


def nhwc_round_trip(net: Net, x: str, c: int) -> tuple[str, int]:
    """NCHW -> NHWC -> NCHW, as tf2onnx writes around ops: the channel axis moves, so it is frozen."""
    y = net.node("Transpose", net.name("to_nhwc"), [x], perm=[0, 2, 3, 1])
    y = net.node("Transpose", net.name("to_nchw"), [y], perm=[0, 3, 1, 2])
    return net.conv_bn(y, c, 8), 8


def conv_transpose(net: Net, x: str, c: int, depthwise: bool = False) -> tuple[str, int]:
    """A DBNet-style upsampler: ConvTranspose (k 2, stride 2, bias) -> BN -> ReLU, a 2x2 max-pool
    back to size, then a conv. Group 1: its output channels are new (pruned by the conv after),
    its input channels are frozen (nothing refits it). Depthwise: channel c to channel c."""
    name = net.name("deconv")
    group, c_out = (c, c) if depthwise else (1, 8)
    w = (net.rng.standard_normal((c, c_out // group, 2, 2)) * np.sqrt(1.0 / c)).astype(np.float32)
    b = (0.1 * net.rng.standard_normal(c_out)).astype(np.float32)
    y = net.node("ConvTranspose", name, [x, net.const(f"{name}.weight", w), net.const(f"{name}.bias", b)],
                 kernel_shape=[2, 2], strides=[2, 2], group=group)
    y = net.node("Relu", net.name("relu"), [net.bn(f"{name}_bn", y, c_out)])
    y = net.node("MaxPool", net.name("pool"), [y], kernel_shape=[2, 2], strides=[2, 2])
    return net.conv_bn(y, c_out, 8), 8


def conv_transpose_dw(net: Net, x: str, c: int) -> tuple[str, int]:
    return conv_transpose(net, x, c, depthwise=True)


def softmax_spatial(net: Net, x: str, c: int, axis: int = 3) -> tuple[str, int]:
    """Softmax over the last (width) axis: each channel alone, so channels pass through it
    (axis=1 normalises across channels and freezes them)."""
    y = net.node("Softmax", net.name("softmax"), [x], axis=axis)
    return net.conv_bn(y, c, 8), 8


def channel_gather(net: Net, x: str, c: int) -> tuple[str, int]:
    """A Gather of channels by constant indices (out of order, one twice, some left out) before a
    conv: its output channels are its own, its input's are kept."""
    indices = np.array([c - 1, 0, 2, 2, c // 2][: max(1, min(5, c))], dtype=np.int64)
    name = net.name("gather")
    y = net.node("Gather", name, [x, net.const(f"{name}.indices", indices)], axis=1)
    return net.conv_bn(y, int(indices.size), 8), 8


PIECES = {
    "plain": plain, "residual": residual, "bottleneck": bottleneck, "inverted_residual": inverted_residual,
    "dense": dense, "fire": fire, "squeeze_excite": squeeze_excite, "split_paths": split_paths,
    "slice_half": slice_half, "grouped": grouped, "shuffle": shuffle, "pad_resize": pad_resize,
    "transpose_hw": transpose_hw, "nhwc_round_trip": nhwc_round_trip, "conv_transpose": conv_transpose,
    "conv_transpose_dw": conv_transpose_dw, "softmax_spatial": softmax_spatial, "channel_gather": channel_gather,
}


def build(pieces: Sequence[str | tuple[str, dict]], *, stem: int = 8, seed: int = 0, name: str = "net") -> onnx.ModelProto:
    """Stem conv (3 -> stem), the pieces in order, GlobalAveragePool -> Flatten -> Gemm (10)."""
    net = Net(seed)
    x, c = net.conv_bn(INPUT, 3, stem), stem
    for piece in pieces:
        kind, params = (piece, {}) if isinstance(piece, str) else piece
        x, c = PIECES[kind](net, x, c, **params)
        net.size = -(-net.size // params.get("stride", 1))
    x = net.node("Flatten", "flatten", [net.node("GlobalAveragePool", "head_gap", [x])], axis=1)
    net.gemm("fc", x, c, 10, output=OUTPUT)
    return net.model(name, (3, SIZE, SIZE), 10)


# Small versions of public architectures (the list), in the pieces above.
def mobilenet_v2_like(seed: int = 0) -> onnx.ModelProto:
    return build(["inverted_residual", ("inverted_residual", {"c_out": 12, "stride": 2}), "inverted_residual",
                  "inverted_residual"], seed=seed, name="mobilenet_v2_like")


def densenet_like(seed: int = 0) -> onnx.ModelProto:
    return build([("dense", {"layers": 3}), ("plain", {"c_out": 10}), ("dense", {"layers": 2})], seed=seed,
                 name="densenet_like")


def squeezenet_like(seed: int = 0) -> onnx.ModelProto:
    return build(["fire", "fire", ("fire", {"squeeze": 6, "expand": 8})], seed=seed, name="squeezenet_like")


def resnet50_like(seed: int = 0) -> onnx.ModelProto:
    return build([("bottleneck", {"c_out": 16}), ("bottleneck", {"c_out": 16}),
                  ("bottleneck", {"c_out": 24, "stride": 2, "mid": 6}), ("bottleneck", {"c_out": 24, "mid": 6})],
                 seed=seed, name="resnet50_like")


ARCHITECTURES = {"mobilenet_v2": mobilenet_v2_like, "densenet": densenet_like, "squeezenet": squeezenet_like,
                 "resnet50": resnet50_like}
