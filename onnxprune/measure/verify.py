"""The last gate before a model is handed back: checker, onnxruntime, same interface."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.calib.data import input_specs
from onnxprune.runtime import make_session, run_arrays, session_batch
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.io import check_any_size


def verify_model(pruned: onnx.ModelProto, original: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Raise if the pruned model fails the checker, does not run, or changed its interface."""
    try:
        check_any_size(pruned)
    except Exception as exc:
        raise OnnxPruneError(f"internal error: the pruned model fails onnx.checker ({exc}); please report it") from None
    # The interface is what a caller feeds: initializers listed as inputs too (IR < 4) are not part of it.
    names = [[s.name for s in input_specs(m)] + ["->"] + [v.name for v in m.graph.output] for m in (original, pruned)]
    if names[0] != names[1]:
        raise OnnxPruneError(f"internal error: graph interface changed from {names[0]} to {names[1]}")
    n = len(next(iter(feeds.values())))
    sessions = [make_session(m) for m in (original, pruned)]
    outputs = [next(run_arrays(s, None, feeds, n, session_batch(s)))[1] for s in sessions]
    for before, after, info in zip(outputs[0], outputs[1], original.graph.output):
        if before.shape != after.shape or not np.all(np.isfinite(after)):
            raise OnnxPruneError(f"internal error: output '{info.name}' has shape {after.shape} "
                                 f"(was {before.shape}) or non-finite values")
