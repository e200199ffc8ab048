"""What ops compute from constants alone: the values behind Constant nodes, and the folding of the
nodes that only re-type or rearrange a constant (Identity, Cast, CastLike, Reshape, Squeeze,
Unsqueeze, Transpose). ``graph/io`` uses them to turn exporters' weight chains into initializers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

# Ops after which onnx-graphsurgeon's general constant folding is worth running at load time.
FOLDABLE_HINTS = {"Shape", "Expand", "CastLike", "ConstantOfShape", "Cast"}
# Ops whose output does not depend on the batch (shapes): the runner treats them as unbatched.
SHAPE_OPS = frozenset({"Shape", "Size"})


def constant_node_value(node: gs.Node) -> np.ndarray | None:
    """The tensor a Constant node holds, whichever of its attributes holds it (None for another op,
    or if sparse or absent)."""
    if node.op != "Constant":
        return None
    attrs = node.attrs
    if isinstance(attrs.get("value"), gs.Constant):
        return np.asarray(attrs["value"].values)
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if name in attrs:
            return np.asarray(attrs[name], dtype=dtype)
    return None


def constant_proto_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node of a protobuf graph holds in its ``value`` attribute (None otherwise)."""
    if node.op_type != "Constant":
        return None
    return next((a.t for a in node.attribute if a.name == "value"), None)


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The array behind a Constant tensor (or a Constant node's output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        return constant_node_value(tensor.inputs[0])
    return None


def constant_result(node: gs.Node) -> np.ndarray | None:
    """The output of a Constant node, or of an Identity/Cast/CastLike/Reshape/Squeeze/Unsqueeze/
    Transpose whose inputs are all constants; None for any other node."""
    if node.op == "Constant":
        return constant_node_value(node)
    if node.op not in FOLDS or not node.inputs or not all(isinstance(t, gs.Constant) or not t.name
                                                                  for t in node.inputs):
        return None
    x, rest = np.asarray(node.inputs[0].values), [np.asarray(t.values) if t.name else None for t in node.inputs[1:]]
    try:
        return FOLDS[node.op](x, rest, node.attrs)
    except (ValueError, TypeError, KeyError, IndexError):  # malformed or exotic: left to onnxruntime as it is
        return None


def _reshape_target(x: np.ndarray, shape: np.ndarray, allowzero: int) -> list[int]:
    """ONNX Reshape's target: 0 copies the input's dim (unless allowzero), -1 is inferred by numpy."""
    return [x.shape[i] if d == 0 and not allowzero else int(d) for i, d in enumerate(shape.tolist())]


def _axes(rest: list, attrs: dict) -> list[int] | None:
    """Squeeze/Unsqueeze axes: an input from opset 13 on, an attribute before."""
    axes = rest[0] if rest and rest[0] is not None else attrs.get("axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _unsqueeze(x: np.ndarray, axes: list[int]) -> np.ndarray:
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = np.expand_dims(x, axis)
    return x


FOLDS = {  # op -> its output from constant inputs (x, the other inputs, the attributes)
    "Identity": lambda x, rest, attrs: np.array(x),  # a copy: each reader gets its own
    "Cast": lambda x, rest, attrs: x.astype(helper.tensor_dtype_to_np_dtype(attrs["to"])),
    "CastLike": lambda x, rest, attrs: x.astype(rest[0].dtype),
    "Reshape": lambda x, rest, attrs: x.reshape(_reshape_target(x, rest[0], attrs.get("allowzero", 0))),
    "Squeeze": lambda x, rest, attrs: np.squeeze(x, axis=None if (a := _axes(rest, attrs)) is None else tuple(a)),
    "Unsqueeze": lambda x, rest, attrs: _unsqueeze(x, _axes(rest, attrs)),
    "Transpose": lambda x, rest, attrs: np.transpose(x, attrs.get("perm")),
}
