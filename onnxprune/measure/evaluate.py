"""Measure models with onnxruntime: top-1 on labelled data, output difference, latency.

Each measure is a plain function of models and data, so that prune() (--eval, --check, --bench)
and anything that prunes repeatedly (a sweep over settings) use the same code: load the labelled
data once with :func:`load_eval_data`, then call :func:`top1` on each candidate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.calib.data import LOAD_ERRORS, InputSpec, calibration_from_arrays, input_specs
from onnxprune.calib.images import Preprocessing, is_image_folder, load_labelled_images
from onnxprune.runtime import make_session, run_arrays, session_batch
from onnxprune.errors import CalibrationError, ModelError, first_line
from onnxprune.graph.io import load_model
from onnxprune.report import Latency, OutputCheck

BATCH_SIZE = 256
CHECK_SAMPLES = 256  # output differences settle well before this; more only costs time
BENCH_BATCHES = (1, 64)
ModelLike = onnx.ModelProto | str | os.PathLike
_ORT_LOAD_ERRORS = tuple(getattr(ort.capi.onnxruntime_pybind11_state, name)
                         for name in ("Fail", "InvalidGraph", "InvalidArgument", "InvalidProtobuf", "NotImplemented"))


@dataclass(frozen=True)
class EvalData:
    """Labelled inputs validated against a model: ``feeds`` {input name: (N, ...)}, ``labels`` int64 (N,)."""

    feeds: dict[str, np.ndarray]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


EvalSource = EvalData | str | os.PathLike | tuple


def load_eval_data(data: EvalSource, model: ModelLike | list[InputSpec], *,
                   preprocessing: Preprocessing | None = None) -> EvalData:
    """Labelled evaluation data for ``model`` (a model, its path, or its input specs).

    ``data`` is an ``.npz`` holding ``x`` (or one array per graph input name) and integer labels
    ``y``; a folder with one sub-folder of images per class (label = index in the sorted
    sub-folder names, preprocessed by ``preprocessing``); an ``(x, y)`` pair of arrays; or an
    EvalData, returned as it is.
    """
    if isinstance(data, EvalData):
        return data
    specs = model if isinstance(model, list) else input_specs(_as_model(model))
    if isinstance(data, tuple) and len(data) == 2:
        return _validated(data[0], data[1], specs, "evaluation arrays")
    if not isinstance(data, (str, os.PathLike)):
        raise CalibrationError(f"evaluation data must be a path or an (x, y) pair, got {type(data).__name__}")
    path = Path(data)
    if is_image_folder(path):
        feeds, labels = load_labelled_images(path, specs, preprocessing)
        return EvalData(feeds, labels, str(path))
    if path.is_file() and path.suffix.lower() == ".npz":
        return _read_npz(path, specs)
    if not path.exists():
        raise CalibrationError(f"evaluation data '{path}' does not exist")
    raise CalibrationError(f"evaluation data '{path}' is neither an .npz with x and y nor a folder with one "
                           f"sub-folder of images per class")


def evaluate(model: ModelLike, data: EvalSource, *, preprocessing: Preprocessing | None = None,
             batch_size: int = BATCH_SIZE) -> float:
    """Top-1 accuracy (a fraction) of ``model`` on labelled ``data`` (see :func:`load_eval_data`)."""
    model = _as_model(model)
    return top1(model, load_eval_data(data, model, preprocessing=preprocessing), batch_size=batch_size)


def top1(model: ModelLike, data: EvalData, *, batch_size: int = BATCH_SIZE) -> float:
    """Fraction of samples whose largest entry of the model's first output is the label."""
    session = _session(model)
    correct = 0
    for begin, outputs in _batched_outputs(session, data.feeds, batch_size):
        logits = outputs[0]
        if begin == 0:
            _check_classes(logits.shape, data, session.get_outputs()[0].name)
        labels = data.labels[begin:begin + len(logits)]
        correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
    return correct / len(data)


def output_difference(original: ModelLike, pruned: ModelLike, feeds: Mapping[str, np.ndarray], *,
                      max_samples: int = CHECK_SAMPLES, batch_size: int = BATCH_SIZE) -> OutputCheck:
    """Max and mean absolute difference of all outputs on the first ``max_samples`` samples of ``feeds``."""
    feeds = {name: arr[:max_samples] for name, arr in feeds.items()}
    sessions = [_session(m) for m in (original, pruned)]
    largest, total, count, agree, classified = 0.0, 0.0, 0, 0, True
    batches = zip(*(_batched_outputs(s, feeds, batch_size) for s in sessions))
    for (_, before), (_, after) in batches:
        for a, b in zip(before, after):
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))  # float64: a mean over millions of values
            largest, total, count = max(largest, float(diff.max(initial=0.0))), total + float(diff.sum()), count + diff.size
        classified = classified and before[0].ndim == 2
        if classified:
            agree += int(np.count_nonzero(before[0].argmax(axis=1) == after[0].argmax(axis=1)))
    samples = len(next(iter(feeds.values())))
    return OutputCheck(samples=samples, max_abs_diff=largest, mean_abs_diff=total / max(count, 1),
                       argmax_agreement=agree / samples if classified else None)


def benchmark(original: ModelLike, pruned: ModelLike, feeds: Mapping[str, np.ndarray], *,
              batches: tuple[int, ...] = BENCH_BATCHES, threads: int = 1, warmup: int = 2,
              repeats: tuple[int, int] = (5, 30), seconds: float = 3.0) -> list[Latency]:
    """Median latency of one run per batch size, original and pruned, on samples of ``feeds``.

    The two models run alternately (one timed run each per round) so that a change in the
    machine's load affects both alike; each gets ``warmup`` untimed runs first, then rounds
    continue until ``repeats[1]`` rounds, or ``seconds`` have passed and at least ``repeats[0]``.
    One intra-op thread by default: latencies on a shared machine are steadier that way, and it
    measures the work the model does rather than how well it parallelises.
    """
    sessions = [_session(m, threads) for m in (original, pruned)]
    fixed = session_batch(sessions[0])
    results = []
    for batch in ([fixed] if fixed else batches):
        # Real samples, repeated up to the batch size: some kernels' speed depends on the values.
        feed = {name: np.take(arr, np.arange(batch) % len(arr), axis=0) for name, arr in feeds.items()}
        times: list[list[float]] = [[], []]
        for session in sessions:
            for _ in range(warmup):
                session.run(None, feed)
        start = time.perf_counter()
        while len(times[0]) < repeats[1] and (len(times[0]) < repeats[0] or time.perf_counter() - start < seconds):
            for session, spent in zip(sessions, times):
                tick = time.perf_counter()
                session.run(None, feed)
                spent.append(time.perf_counter() - tick)
        before, after = (1000 * float(np.median(t)) for t in times)
        results.append(Latency(batch=batch, ms_before=round(before, 4), ms_after=round(after, 4),
                               threads=threads, repeats=len(times[0])))
    return results


def latency_removed(original: ModelLike, pruned: ModelLike, feeds: Mapping[str, np.ndarray]) -> float:
    """The fraction of the original's batch-1 latency (or its fixed batch's) the pruned model
    removes, from :func:`benchmark`'s interleaved medians on this machine: 1 - 1/speed-up."""
    (latency,) = benchmark(original, pruned, feeds, batches=(1,))
    return 1.0 - latency.ms_after / latency.ms_before


def _batched_outputs(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray],
                     batch_size: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(first row, outputs) per batch, run at the batch the model fixes if it fixes one."""
    return run_arrays(session, None, feeds, batch_size, session_batch(session))


def check_labels(model: onnx.ModelProto, data: EvalData) -> None:
    """Check the labels against the model's declared first output, before anything runs (where it is
    declared; :func:`top1` checks against the output it computes either way)."""
    output = model.graph.output[0]
    if output.type.tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.dim_value > 0 else None for d in output.type.tensor_type.shape.dim)
        _check_classes(shape, data, output.name)


def _check_classes(shape: tuple[int | None, ...], data: EvalData, output: str) -> None:
    if len(shape) != 2:
        raise ModelError(f"top-1 needs the model's first output to be (N, classes); '{output}' is "
                         f"{len(shape)}-D with shape {tuple('?' if d is None else d for d in shape)}")
    if shape[1] is not None and data.labels.max() >= shape[1]:
        raise CalibrationError(f"{data.source}: label {int(data.labels.max())} is out of range for the model's "
                               f"{shape[1]} classes (labels must be 0..{shape[1] - 1})")


def _validated(x, y, specs: list[InputSpec], where: str) -> EvalData:
    feeds = calibration_from_arrays(x, specs, where=where)
    n = len(next(iter(feeds.values())))
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise CalibrationError(f"{where}: labels y must be integers, got {y.dtype}")
    if y.ndim != 1:
        raise CalibrationError(f"{where}: labels y must have shape (N,), got {y.shape}")
    if len(y) != n:
        raise CalibrationError(f"{where}: x has {n} samples but y has {len(y)} labels")
    if y.min() < 0:
        raise CalibrationError(f"{where}: label {int(y.min())} is negative; labels must be 0..classes-1")
    return EvalData(feeds, y.astype(np.int64), where)


def _read_npz(path: Path, specs: list[InputSpec]) -> EvalData:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an archive of x and y")
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except LOAD_ERRORS as exc:
        raise CalibrationError(f"cannot read '{path}' as .npz: {first_line(exc)}") from None
    have = ", ".join(map(repr, arrays)) or "nothing"
    if "y" not in arrays:
        raise CalibrationError(f"{path.name}: no labels 'y' (has {have}); save x and y with np.savez")
    if "x" in arrays and len(specs) == 1:
        x = arrays["x"]
    elif all(spec.name in arrays for spec in specs):
        x = {spec.name: arrays[spec.name] for spec in specs}
    else:
        raise CalibrationError(f"{path.name}: no inputs 'x' (has {have}); save x and y with np.savez")
    return _validated(x, arrays["y"], specs, path.name)


def _session(model: ModelLike, threads: int = 0) -> ort.InferenceSession:
    try:
        return make_session(_as_model(model), threads)
    except _ORT_LOAD_ERRORS as exc:  # a ModelProto given from Python has not been through load_model's checks
        raise ModelError(f"onnxruntime cannot load the model: {first_line(exc)}") from None


def _as_model(model: ModelLike) -> onnx.ModelProto:
    return load_model(model) if isinstance(model, (str, os.PathLike)) else model
