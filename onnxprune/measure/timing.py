"""Where a pruning run's time went, against one plain forward pass over the calibration set (--verbose).

The segmented execution runs every node once per network, so the forward passes of a whole run
should cost about two plain passes; everything else is statistics, solving and bookkeeping. The
figure of merit (issue 6) is (total - solver) / one forward pass, with a target of at most 5.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnx

from onnxprune.runtime import make_session, run_arrays, session_batch

# (timings key, label), in the order of a run; the forward passes and the statistics include the
# activation store's disk I/O, which is shown on its own line as well.
PHASES = (
    ("forward_original", "onnxruntime forward, original network"),
    ("forward_pruned", "onnxruntime forward, pruned network"),
    ("statistics", "statistics accumulation"),
    ("lookahead", "look-ahead pass (original network)"),
    ("solve", "GES solve"),
    ("refit", "refit"),
    ("rewrite", "graph rewrite"),
    ("export", "export"),
    ("verify", "verify"),
)
SOLVER = ("solve", "refit")
TARGET = 5.0


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


def breakdown(timings: Mapping[str, float], seconds: float, activations: Mapping[str, float | None]) -> str:
    """The time per phase, the activation store's traffic and the ratios against one forward pass.

    ``seconds`` is the report's wall time; the time of --eval/--check/--bench (``measure``) is
    taken out, so the total is the pruning alone.
    """
    total = seconds - timings.get("measure", 0.0)
    rows = [(label, timings[key]) for key, label in PHASES if key in timings]
    rows.append(("other (loading, analysis, report)", total - sum(t for _, t in rows)))
    width = max(len(label) for label, _ in rows)
    lines = ["time breakdown:"] + [f"  {label:<{width}} {secs:8.1f}s" for label, secs in rows]
    lines.append(f"  {'total':<{width}} {total:8.1f}s")
    if activations:
        limit = activations.get("memory_limit_mb")
        lines.append(f"activation store: {activations['peak_in_memory_mb']:,.0f} MB in memory at most "
                     f"(budget {'none' if limit is None else f'{limit:,.0f} MB'}), "
                     f"{activations['written_mb']:,.0f} MB written to disk and {activations['read_mb']:,.0f} MB "
                     f"read back in {activations['io_seconds']:.1f}s (counted in the phases above)")
    once = timings.get("forward_once")
    if once is not None:
        line = f"one onnxruntime forward pass over the calibration set: {once:.3f}s"
        if once > 0:  # a tiny model's pass can round to 0
            solver = sum(timings.get(key, 0.0) for key in SOLVER)
            ratio = (total - solver) / once
            line += (f"; total / pass = {total / once:.1f}, (total - solver) / pass = {ratio:.1f} "
                     f"(target <= {TARGET:g}: {'met' if ratio <= TARGET else 'not met'}), "
                     f"(total - solver - statistics) / pass = {(total - solver - timings.get('statistics', 0.0)) / once:.1f}")
        lines.append(line)
    return "\n".join(lines)
