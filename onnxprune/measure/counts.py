"""Parameters and multiply-accumulates of a graph, counted the same way before and after pruning."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def count_params(graph: gs.Graph) -> int:
    """Elements of all floating-point constants: weights, biases and normalisation vectors."""
    return sum(
        int(t.values.size) for t in graph.tensors().values()
        if isinstance(t, gs.Constant) and np.issubdtype(np.asarray(t.values).dtype, np.floating)
    )


def node_macs(node: gs.Node, out_shapes: dict[str, tuple]) -> int:
    """Multiply-accumulates of one Conv/Gemm/MatMul for a single sample (0 for other ops)."""
    if node.op not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
        return 0
    weight_size = int(np.asarray(node.inputs[1].values).size)
    if node.op != "Conv":
        return weight_size
    shape = out_shapes.get(node.outputs[0].name)
    if shape is None or any(not isinstance(d, (int, np.integer)) for d in shape[2:]):
        return 0
    # A Conv weight holds out x in/group x kh x kw: one MAC per weight per output pixel.
    return weight_size * int(np.prod(shape[2:]))
