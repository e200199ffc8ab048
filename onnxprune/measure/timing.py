"""The baseline of --verbose's time breakdown: one plain onnxruntime forward pass over the calibration set.

The segmented execution runs every node once per network, so the forward passes of a whole run
should cost about two plain passes; everything else is statistics, solving and bookkeeping. The
figure of merit (issue 6) is (total - solver) / one forward pass, with a target of at most 5; the
breakdown itself is printed by the CLI (onnxprune/cli/summary.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnx

from onnxprune.runtime import make_session, run_arrays, session_batch


def forward_pass_seconds(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], batch_size: int) -> float:
    """Seconds of one onnxruntime pass of the whole model over all samples, in the walk's batches.

    The session is built before the clock starts, so the baseline is the pure pass (the walk's
    forward time includes building one session per segment): the ratio errs against us.
    """
    session = make_session(model)
    outputs = [o.name for o in session.get_outputs()]
    start = time.perf_counter()
    for _ in run_arrays(session, outputs, feeds, batch_size, session_batch(session)):
        pass
    return time.perf_counter() - start

