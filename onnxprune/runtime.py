"""onnxruntime sessions, made one way for every stage (calibration, verification, measurement),
and run one way: in batches of the size the model declares, when it fixes one."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import ModelError
from onnxprune.graph.io import as_file, fits_in_one_message


def make_session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A CPU session of the model: from its bytes, or, past protobuf's 2 GB limit, from a
    temporary file with external data (onnxruntime has read the weights when it returns)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # our graphs carry no stale shapes, warnings would only be noise
    options.intra_op_num_threads = threads
    if fits_in_one_message(model):
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with as_file(model) as path:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def declared_batch(shapes: Iterable[Sequence | None]) -> int | None:
    """The batch size that a model's inputs (their shapes, first dim the batch) fix, or None when free.

    A model exported at batch 1 often hard-codes that batch further down (a Reshape to (1, 1000)),
    so it can only be run with exactly that many rows, whatever its other inputs accept.
    """
    fixed = {int(s[0]) for s in shapes if s and isinstance(s[0], (int, np.integer)) and s[0] > 0}
    if len(fixed) > 1:  # calibration rows are split alike for every input: no split fits both
        raise ModelError(f"the model's inputs fix different batch sizes ({', '.join(map(str, sorted(fixed)))}); "
                         f"onnxprune feeds every input the same samples, so they must agree or be dynamic")
    return fixed.pop() if fixed else None


def session_batch(session: ort.InferenceSession) -> int | None:
    """The batch size a session's inputs fix (None when free)."""
    return declared_batch(i.shape for i in session.get_inputs())


def run_batches(session: ort.InferenceSession, outputs: list[str] | None, n: int,
                read: Callable[[int, int], Mapping[str, np.ndarray]], batch_size: int, fixed: int | None = None,
                whole: Collection[str] = ()) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Run rows 0..n in batches of ``batch_size`` rows: (first row, outputs) per batch.

    ``read(begin, end)`` is the feed of those rows. With a ``fixed`` batch, each batch is computed
    in runs of exactly ``fixed`` rows, the last one padded by repeating its last row and the padding
    cut from the outputs. The caller gets the same batches either way, so statistics streamed over
    them do not depend on the model's batch. Inputs and outputs named in ``whole`` are not per
    sample (shapes): never padded or cut, the first run's outputs stand for all.
    """
    for begin in range(0, n, batch_size):
        end = min(begin + batch_size, n)
        if fixed is None:  # one run per batch, as many rows as it has
            yield begin, session.run(outputs, dict(read(begin, end)))
            continue
        runs = []
        for start in range(begin, end, fixed):
            count = min(fixed, end - start)
            feed = {name: value if name in whole or count == fixed else _pad(value, fixed)
                    for name, value in read(start, start + count).items()}
            runs.append(session.run(outputs, feed))
        names = outputs or [o.name for o in session.get_outputs()]
        yield begin, [values[0] if name in whole else np.concatenate(values)[:end - begin]
                      for name, values in zip(names, zip(*runs))]


def run_arrays(session: ort.InferenceSession, outputs: list[str] | None, feeds: Mapping[str, np.ndarray],
               batch_size: int, fixed: int | None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """:func:`run_batches` over arrays held whole, ``{input name: (N, ...)}``."""
    n = len(next(iter(feeds.values())))
    return run_batches(session, outputs, n, lambda begin, end: {k: v[begin:end] for k, v in feeds.items()},
                       batch_size, fixed)


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` repeated from its last one up to ``size`` rows."""
    return np.take(rows, np.minimum(np.arange(size), len(rows) - 1), axis=0)
