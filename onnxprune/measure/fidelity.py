"""Is it still the same model? The pruned model against the original on held-out calibration samples.

No labels are needed: the original's outputs are the reference. For outputs with one axis of
scores, besides the share of changed top-1 decisions, the *estimated top-1 loss*: the mean over
samples of p(original's class) - p(pruned model's class) under the original's own probabilities,
i.e. the accuracy lost if the labels followed the original's predictive distribution. A change
between two classes the original found equally likely costs nearly nothing, a change away from a
confident decision nearly a whole sample: the same disagreement costs a 99 %-accurate LeNet-5
several times what it costs an 85 %-accurate ResNet-18 (docs/fidelity.md). Both models run batch by batch
and only sums are kept, so a large output (a detector's map) costs no memory. Outputs that hold
score maps (a detector's class scores, a text map) also get the overlap of their thresholded
positives (:class:`MapAgreement`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx

from onnxprune.report import Fidelity, OutputFidelity
from onnxprune.runtime import make_session, run_arrays, session_batch

BATCH_SIZE = 128
CACHE_MB = 256  # the original's held-out outputs kept for the next candidate, at most
# Thresholds at which a score map's positives are compared: a detector's usual confidence
# threshold (YOLO's 0.25; DBNet binarises at 0.3) and the plain 0.5 of a segmentation map.
MAP_THRESHOLDS = (0.25, 0.5)


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
        maps = [MapAgreement() for _ in names]
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
                    maps[i].add(a, b)
        if cache is not None:
            self.cached = cache
        return _fidelity(self.samples, names, error, norm, agree, drop, [m.agreement() for m in maps])

    def _outputs(self, session) -> Iterator[list[np.ndarray]]:
        return (outputs for _, outputs in run_arrays(session, None, self.held, self.batch_size, session_batch(session)))


class MapAgreement:
    """How well the pruned model's score maps keep the original's positives: a detector's class
    scores, a segmentation or text map. The relative error cannot say: a detector's output puts
    box coordinates in pixels beside scores below 1, and the coordinates dominate its norm.

    The output's feature axis is its smallest non-batch axis longer than 1 (YOLOv8's (N, 84, 8400):
    4 box rows and 80 class rows; YOLOv5's (N, 25200, 85): 85 features). A slice along it whose
    values lie in [0, 1] on every held-out sample holds scores. At each of MAP_THRESHOLDS the
    positives of the original and the pruned model over all score slices are compared by their
    Dice overlap 2|both| / (|original| + |pruned|); the agreement is the lowest over the
    thresholds at which the original has positives. Only counts are kept, batch by batch.
    """

    def __init__(self) -> None:
        self.low = self.high = None  # per slice: the original's smallest and largest value
        self.counts = None  # (thresholds, slices, 3): positives of the original, the pruned model, both

    def add(self, original: np.ndarray, pruned: np.ndarray) -> None:
        a, b = _slices(original), _slices(pruned)
        if a is None or b is None or a.shape != b.shape:
            return
        if self.counts is None:
            self.low, self.high = np.full(a.shape[1], np.inf), np.full(a.shape[1], -np.inf)
            self.counts = np.zeros((len(MAP_THRESHOLDS), a.shape[1], 3), dtype=np.int64)
        elif self.counts.shape[1] != a.shape[1]:
            self.counts = None  # the output's shape changes between batches: no agreement
            return
        self.low = np.minimum(self.low, a.min(axis=(0, 2)))
        self.high = np.maximum(self.high, a.max(axis=(0, 2)))
        for k, threshold in enumerate(MAP_THRESHOLDS):
            mine, theirs = a > threshold, b > threshold
            self.counts[k, :, 0] += mine.sum(axis=(0, 2))
            self.counts[k, :, 1] += theirs.sum(axis=(0, 2))
            self.counts[k, :, 2] += (mine & theirs).sum(axis=(0, 2))

    def agreement(self) -> float | None:
        """The Dice overlap of the positives (None: no score slice, or no positive at any threshold)."""
        if self.counts is None:
            return None
        scores = (self.low >= 0) & (self.high <= 1)
        totals = self.counts[:, scores].sum(axis=1)  # (thresholds, 3)
        overlaps = [2 * both / (mine + theirs) for mine, theirs, both in totals if mine > 0]
        return float(min(overlaps)) if overlaps else None


def _slices(values: np.ndarray) -> np.ndarray | None:
    """(batch, slices along the feature axis, the rest), or None for an output without such an axis."""
    if values.ndim < 2 or values.size == 0:
        return None
    long = [axis for axis in range(1, values.ndim) if values.shape[axis] > 1]
    if not long:
        return None
    axis = min(long, key=lambda a: (values.shape[a], a))
    return np.moveaxis(values, axis, 1).reshape(values.shape[0], values.shape[axis], -1)


def _fidelity(samples: int, names: list[str], error: np.ndarray, norm: np.ndarray, agree: list[int | None],
              drop: np.ndarray, maps: list[float | None]) -> Fidelity:
    outputs = [OutputFidelity(name, _relative(e, r), None if a is None else a / samples,
                              None if a is None else float(d) / samples, m)
               for name, e, r, a, d, m in zip(names, error, norm, agree, drop, maps)]
    scored = [o for o in outputs if o.top1_agreement is not None]
    mapped = [o.map_agreement for o in outputs if o.map_agreement is not None]
    return Fidelity(samples=samples, outputs=outputs,
                    disagreement=1 - min(o.top1_agreement for o in scored) if scored else None,
                    relative_error=max(o.relative_error for o in outputs),
                    loss_estimate=max(o.loss_estimate for o in scored) if scored else None,
                    map_agreement=min(mapped) if mapped else None)


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
