"""The measurements a user asks for around a prune (--eval, --check, --bench, --verbose's yardstick).

They are separate from :func:`onnxprune.prune` so that pruning does one job: a caller scores the
original model first (:meth:`Measurements.score_original`, which fails at once on unusable
labelled data, before any pruning work), prunes, then adds the measurements to the report
(:meth:`Measurements.add_to`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import onnx

from onnxprune.calib.images import Preprocessing
from onnxprune.errors import ConfigError
from onnxprune.measure.evaluate import (BENCH_BATCHES, EvalData, EvalSource, benchmark, check_labels, load_eval_data,
                                        output_difference, top1)
from onnxprune.measure.memory import peak_memory_mb
from onnxprune.measure.timing import forward_pass_seconds
from onnxprune.report import Accuracy, Report


class Measurements:
    """What to measure, and the original model's side of it.

    Parameters
    ----------
    eval : labelled data to report top-1 before and after on (``Report.accuracy``): an .npz with
        x and y, a folder with one sub-folder of images per class, an (x, y) pair or an EvalData.
    check : report the outputs' max and mean absolute difference on calibration samples (``Report.check``).
    bench : report onnxruntime latency before and after (``Report.latency``) at batch 1 and 64;
        an int N instead of True benchmarks batch 1 and N.
    profile : also time one plain onnxruntime pass of the original model over the calibration
        set (``Report.timings["forward_once"]``, not part of ``seconds``), the yardstick of the
        --verbose time breakdown.
    preprocessing : how an image folder given as ``eval`` becomes inputs.
    """

    def __init__(self, *, eval: EvalSource | None = None, check: bool = False, bench: bool | int = False,
                 profile: bool = False, preprocessing: Preprocessing | None = None) -> None:
        self.eval, self.check, self.profile, self.preprocessing = eval, check, profile, preprocessing
        self.batches = _bench_batches(bench)
        self.data: EvalData | None = None
        self.top1_before: float | None = None
        self.seconds = 0.0

    def score_original(self, model: onnx.ModelProto, say: Callable[[str], None] = lambda line: None) -> None:
        """Read the labelled data and score the original model on it (nothing to do without ``eval``)."""
        if self.eval is None:
            return
        start = time.perf_counter()
        self.data = load_eval_data(self.eval, model, preprocessing=self.preprocessing)
        check_labels(model, self.data)
        say(f"top-1 of the original model on {len(self.data):,} samples of {self.data.source}")
        self.top1_before = top1(model, self.data)
        self.seconds += time.perf_counter() - start

    def add_to(self, report: Report, original: onnx.ModelProto, pruned: onnx.ModelProto,
               feeds: Mapping[str, np.ndarray], *, batch_size: int = 128,
               say: Callable[[str], None] = lambda line: None) -> Report:
        """The report with the measurements asked for; its wall time grows by the time they take here."""
        start, measured = time.perf_counter(), {}
        if self.eval is not None and self.data is None:
            self.score_original(original, say)
        if self.data is not None:
            say("top-1 of the pruned model")
            measured["accuracy"] = Accuracy(len(self.data), self.top1_before, top1(pruned, self.data), self.data.source)
        if self.check:
            say("output difference on calibration samples")
            measured["check"] = output_difference(original, pruned, feeds)
        if self.batches:
            say(f"latency at batch {', '.join(map(str, self.batches))}")
            measured["latency"] = benchmark(original, pruned, feeds, batches=self.batches)
        if measured:  # the timings say how much the measurements took (scoring the original included)
            here = time.perf_counter() - start
            report = replace(report, **measured, seconds=round(report.seconds + here, 3),
                             timings={**report.timings, "measure": round(self.seconds + here, 3)})
        if self.profile:  # after the wall time was taken: the baseline is not part of the run
            once = forward_pass_seconds(original, feeds, batch_size)
            report = replace(report, timings={**report.timings, "forward_once": round(once, 3)})
        # Read last: the high-water mark then covers the measurements and the profile pass too.
        return replace(report, peak_memory_mb=peak_memory_mb())


def _bench_batches(bench: bool | int) -> tuple[int, ...]:
    if bench is False or bench is None:
        return ()
    if bench is True:
        return BENCH_BATCHES
    if not isinstance(bench, (int, np.integer)) or bench < 1:
        raise ConfigError(f"bench must be True, False or a batch size >= 1, got {bench!r}")
    return (1, int(bench)) if bench > 1 else (1,)
