"""Is it still the same model? The pruned model against the original on held-out calibration samples.

No labels are needed: the original's outputs are the reference. For outputs with one axis of
scores, besides the share of changed top-1 decisions, the *estimated top-1 loss*: the mean over
samples of p(original's class) - p(pruned model's class) under the original's own probabilities,
i.e. the accuracy lost if the labels followed the original's predictive distribution. A change
between two classes the original found equally likely costs nearly nothing, a change away from a
confident decision nearly a whole sample: the same disagreement costs a 99 %-accurate LeNet-5
several times what it costs an 85 %-accurate ResNet-18 (docs/fidelity.md). Both models run batch by batch
and only sums are kept, so a large output (a detector's map) costs no memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx

from onnxprune.report import Fidelity, OutputFidelity
from onnxprune.runtime import make_session, run_arrays, session_batch

BATCH_SIZE = 128
CACHE_MB = 256  # the original's held-out outputs kept for the next candidate, at most


def has_scores(shape: tuple[int, ...]) -> bool:
    """An output with exactly one axis of two or more scores per sample besides the batch
    ((N, classes), (N, classes, 1, 1), (N, 1, classes)): its arg-max is a decision."""
    return len(shape) >= 2 and sum(d > 1 for d in shape[1:]) == 1 and max(shape[1:]) >= 2


def measure_fidelity(original: onnx.ModelProto, pruned: onnx.ModelProto, held: Mapping[str, np.ndarray], *,
                     batch_size: int = BATCH_SIZE) -> Fidelity | None:
    """Relative error of every output and top-1 agreement of score outputs on ``held`` (None when empty)."""
    return FidelityMeter(original, held, batch_size=batch_size)(pruned)


class FidelityMeter:
    """The original model's side of the measure, for every candidate a search measures: its session,
    and its outputs on the held-out samples once they are known, when they fit in ``cache_mb``
    (a detector's maps over 1,024 samples may not: then the original runs again beside each one)."""

    def __init__(self, original: onnx.ModelProto, held: Mapping[str, np.ndarray], *, batch_size: int = BATCH_SIZE,
                 cache_mb: float = CACHE_MB) -> None:
        self.held, self.batch_size, self.cache_bytes = held, batch_size, cache_mb * 2**20
        self.samples = len(next(iter(held.values()))) if held else 0
        self.session = make_session(original) if self.samples else None
        self.cached: list[list[np.ndarray]] | None = None  # the original's outputs, batch by batch

    def __call__(self, pruned: onnx.ModelProto) -> Fidelity | None:
        if not self.samples:
            return None
        session = make_session(pruned)
        names = [o.name for o in self.session.get_outputs()]
        error, norm = np.zeros(len(names)), np.zeros(len(names))
        agree: list[int | None] = [0] * len(names)
        drop = np.zeros(len(names))  # the original's probability of its own top-1 minus of the pruned model's
        originals = self.cached if self.cached is not None else self._outputs(self.session)
        cache: list[list[np.ndarray]] | None = [] if self.cached is None else None
        for before, after in zip(originals, self._outputs(session)):
            if cache is not None:
                cache.append(before)
                if sum(a.nbytes for outs in cache for a in outs) > self.cache_bytes:
                    cache = None  # too large to keep: the original runs again next time
            for i, (a, b) in enumerate(zip(before, after)):
                a64, b64 = a.astype(np.float64), b.astype(np.float64)  # float64: sums over millions of values
                error[i] += float(np.square(b64 - a64).sum())
                norm[i] += float(np.square(a64).sum())
                if agree[i] is not None and has_scores(a.shape):
                    scores, other = a64.reshape(len(a), -1), b.reshape(len(b), -1)
                    mine, theirs = scores.argmax(1), other.argmax(1)
                    agree[i] += int(np.count_nonzero(mine == theirs))
                    p = _probabilities(scores)
                    rows = np.arange(len(p))
                    drop[i] += float((p[rows, mine] - p[rows, theirs]).sum())
                else:
                    agree[i] = None
        if cache is not None:
            self.cached = cache
        return _fidelity(self.samples, names, error, norm, agree, drop)

    def _outputs(self, session) -> Iterator[list[np.ndarray]]:
        return (outputs for _, outputs in run_arrays(session, None, self.held, self.batch_size, session_batch(session)))


def _fidelity(samples: int, names: list[str], error: np.ndarray, norm: np.ndarray, agree: list[int | None],
              drop: np.ndarray) -> Fidelity:
    outputs = [OutputFidelity(name, _relative(e, r), None if a is None else a / samples,
                              None if a is None else float(d) / samples)
               for name, e, r, a, d in zip(names, error, norm, agree, drop)]
    scored = [o for o in outputs if o.top1_agreement is not None]
    return Fidelity(samples=samples, outputs=outputs,
                    disagreement=1 - min(o.top1_agreement for o in scored) if scored else None,
                    relative_error=max(o.relative_error for o in outputs),
                    loss_estimate=max(o.loss_estimate for o in scored) if scored else None)


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores as class probabilities: as they are when they already are (non-negative rows summing
    to 1, a softmax inside the model), else their softmax (logits)."""
    if scores.min() >= 0 and np.allclose(scores.sum(1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _relative(error: float, norm: float) -> float:
    if norm > 0:
        return float(np.sqrt(error / norm))
    return 0.0 if error == 0 else float("inf")
