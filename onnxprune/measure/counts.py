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
