"""Parameters and multiply-accumulates of a graph, counted the same way before and after pruning."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.constants import constant_node_value


def count_params(graph: gs.Graph) -> int:
    """Elements of all floating-point constants the graph holds, each once: initializers and the
    values of Constant nodes (paddle2onnx and the dynamo exporter keep weights there), counted as
    the model is given, before to_graph turns them into initializers."""
    values = [t.values for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    values += [v for node in graph.nodes if (v := constant_node_value(node)) is not None]
    return sum(int(np.asarray(v).size) for v in values if np.issubdtype(np.asarray(v).dtype, np.floating))
