"""Is it still the same model? The pruned model against the original on held-out calibration samples.

No labels are needed: the original's outputs are the reference. Both models run batch by batch
and only sums are kept, so a large output (a detector's map) costs no memory.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxprune.report import Fidelity, OutputFidelity
from onnxprune.runtime import make_session, run_arrays, session_batch

BATCH_SIZE = 128


def has_scores(shape: tuple[int, ...]) -> bool:
    """An output with exactly one axis of two or more scores per sample besides the batch
    ((N, classes), (N, classes, 1, 1), (N, 1, classes)): its arg-max is a decision."""
    return len(shape) >= 2 and sum(d > 1 for d in shape[1:]) == 1 and max(shape[1:]) >= 2


def measure_fidelity(original: onnx.ModelProto, pruned: onnx.ModelProto, held: Mapping[str, np.ndarray], *,
                     batch_size: int = BATCH_SIZE) -> Fidelity | None:
    """Relative error of every output and top-1 agreement of score outputs on ``held`` (None when empty)."""
    samples = len(next(iter(held.values()))) if held else 0
    if samples == 0:
        return None
    sessions = [make_session(m) for m in (original, pruned)]
    names = [o.name for o in sessions[0].get_outputs()]
    error, norm = np.zeros(len(names)), np.zeros(len(names))
    agree: list[int | None] = [0] * len(names)
    batches = zip(*(run_arrays(s, None, held, batch_size, session_batch(s)) for s in sessions))
    for (_, before), (_, after) in batches:
        for i, (a, b) in enumerate(zip(before, after)):
            a64, b64 = a.astype(np.float64), b.astype(np.float64)  # float64: sums over millions of values
            error[i] += float(np.square(b64 - a64).sum())
            norm[i] += float(np.square(a64).sum())
            if agree[i] is not None and has_scores(a.shape):
                flat = (len(a), -1)
                agree[i] += int(np.count_nonzero(a.reshape(flat).argmax(1) == b.reshape(flat).argmax(1)))
            else:
                agree[i] = None
    outputs = [OutputFidelity(name, _relative(e, r), None if a is None else a / samples)
               for name, e, r, a in zip(names, error, norm, agree)]
    agreements = [o.top1_agreement for o in outputs if o.top1_agreement is not None]
    return Fidelity(samples=samples, outputs=outputs,
                    disagreement=1 - min(agreements) if agreements else None,
                    relative_error=max(o.relative_error for o in outputs))


def _relative(error: float, norm: float) -> float:
    if norm > 0:
        return float(np.sqrt(error / norm))
    return 0.0 if error == 0 else float("inf")
